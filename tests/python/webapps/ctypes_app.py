"""A WSGI app that imports ctypes: CPython 3.12's _ctypes refuses isolated
interpreters, 3.13's loads there."""
import ctypes


def application(environ, start_response):
    body = str(ctypes.sizeof(ctypes.c_int)).encode()
    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])
    return [body]
