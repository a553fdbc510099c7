# Reports whether the Python running this file can build subinterp.
#
# Prints one line: "OK <major.minor.micro> <tag> <executable>" when it is a
# CPython >= 3.12 with its C headers and a shared libpython, otherwise
# "NO <version> <reason>". <tag> is "3.12", or "3.13t" for a build with ABI
# flags. Used by cmake/SubinterpPython.cmake and scripts/lib.sh, so that CMake
# and the scripts choose from the same set. Kept free of newer syntax: it runs
# under whatever "python3" a machine has, however old.
import os
import platform
import sys
import sysconfig


def main():
    version = "%d.%d.%d" % sys.version_info[:3]
    if platform.python_implementation() != "CPython":
        return "NO %s not CPython (%s)" % (version, platform.python_implementation())
    if sys.version_info[:2] < (3, 12):
        return "NO %s older than 3.12" % version
    include = sysconfig.get_paths().get("include") or ""
    if not os.path.isfile(os.path.join(include, "Python.h")):
        return "NO %s no Python.h in %s" % (version, include)
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        return "NO %s no shared libpython (built without --enable-shared)" % version
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    ldlibrary = sysconfig.get_config_var("LDLIBRARY") or ""
    if not os.path.isfile(os.path.join(libdir, ldlibrary)):
        return "NO %s shared libpython %s not found in %s" % (version, ldlibrary, libdir)
    tag = "%d.%d%s" % (sys.version_info[0], sys.version_info[1], getattr(sys, "abiflags", ""))
    return "OK %s %s %s" % (version, tag, sys.executable)


print(main())
