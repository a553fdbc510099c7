"""Compatibility shims for Debian 12's Celery 5.2 stack on CPython 3.12+.

Test and benchmark set-up only: never part of subinterp. Debian 12 ships
celery 5.2.6, kombu 5.2.4 and billiard 4.1.0, built for Python 3.11; from
3.12 and 3.13 (with /usr/lib/python3/dist-packages on the path) they call
two APIs that those Pythons removed:

- ``importlib.metadata.entry_points().get(group, default)``: the dict
  interface of the result is gone in 3.12 (use ``.select(group=...)``);
- ``logging._acquireLock()`` / ``logging._releaseLock()``: gone in 3.13
  (``with logging._lock``), used by billiard.util.

Put this folder first on PYTHONPATH: Python imports ``sitecustomize`` in
the main interpreter and in every sub-interpreter it starts, so the worker
interpreters of subinterp.celery get the shims too. Current Celery, kombu
and billiard releases need none of this.
"""
import importlib.metadata as _metadata
import logging as _logging


def _entry_points_get(self, group, default=None):
    found = self.select(group=group)
    return found if found else default


if not hasattr(_metadata.EntryPoints, 'get'):
    _metadata.EntryPoints.get = _entry_points_get

if not hasattr(_logging, '_acquireLock'):
    _logging._acquireLock = _logging._lock.acquire
    _logging._releaseLock = _logging._lock.release
