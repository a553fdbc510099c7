# Chooses the CPython that subinterp builds against, then finds it.
#
# With -DPython_EXECUTABLE=... that interpreter is used (and checked). Without
# it, the highest CPython >= 3.12 that has headers and a shared libpython is
# chosen from, in this order: $PYENV_ROOT/versions/*, ~/.pyenv/versions/*,
# /root/.pyenv/versions/*, then python3.N and python3 on PATH. scripts/lib.sh
# searches the same places with the same probe (cmake/python_probe.py).
#
# Defines the targets of FindPython: Python::Module (headers, for the core and
# the extension) and Python::Python (libpython, for programs that embed it),
# and SUBINTERP_PYTHON_TAG ("3.12", "3.13", ...).

set(_subinterp_probe "${CMAKE_CURRENT_LIST_DIR}/python_probe.py")

# Runs the probe with `candidate`; sets <prefix>_OK, _VERSION, _TAG, _EXE and
# _WHY in the caller's scope.
function(_subinterp_probe_python candidate prefix)
  execute_process(
    COMMAND "${candidate}" "${_subinterp_probe}"
    OUTPUT_VARIABLE out
    ERROR_VARIABLE err
    RESULT_VARIABLE rc
    OUTPUT_STRIP_TRAILING_WHITESPACE
    TIMEOUT 30)
  set(${prefix}_OK FALSE PARENT_SCOPE)
  if(NOT rc EQUAL 0)
    string(STRIP "${err}" err)
    set(${prefix}_WHY "could not run it (${rc}): ${err}" PARENT_SCOPE)
    return()
  endif()
  if(out MATCHES "^OK ([0-9.]+) ([^ ]+) (.+)$")
    set(${prefix}_OK TRUE PARENT_SCOPE)
    set(${prefix}_VERSION "${CMAKE_MATCH_1}" PARENT_SCOPE)
    set(${prefix}_TAG "${CMAKE_MATCH_2}" PARENT_SCOPE)
    set(${prefix}_EXE "${CMAKE_MATCH_3}" PARENT_SCOPE)
  elseif(out MATCHES "^NO ([^ ]+) (.*)$")
    set(${prefix}_WHY "Python ${CMAKE_MATCH_1}: ${CMAKE_MATCH_2}" PARENT_SCOPE)
  else()
    set(${prefix}_WHY "unexpected probe output: ${out}" PARENT_SCOPE)
  endif()
endfunction()

function(_subinterp_candidates out_var)
  set(roots)
  if(DEFINED ENV{PYENV_ROOT})
    list(APPEND roots "$ENV{PYENV_ROOT}")
  endif()
  if(DEFINED ENV{HOME})
    list(APPEND roots "$ENV{HOME}/.pyenv")
  endif()
  list(APPEND roots "/root/.pyenv")
  set(found)
  foreach(root IN LISTS roots)
    file(GLOB exes "${root}/versions/*/bin/python3")
    list(SORT exes COMPARE NATURAL ORDER DESCENDING)
    list(APPEND found ${exes})
  endforeach()
  foreach(name python3.19 python3.18 python3.17 python3.16 python3.15 python3.14
               python3.13 python3.12 python3)
    unset(_subinterp_exe)  # NO_CACHE keeps it a normal variable: reset it
    find_program(_subinterp_exe NAMES ${name} NO_CACHE NO_CMAKE_PATH
                 NO_CMAKE_ENVIRONMENT_PATH NO_CMAKE_SYSTEM_PATH)
    if(_subinterp_exe)
      list(APPEND found "${_subinterp_exe}")
    endif()
  endforeach()
  list(REMOVE_DUPLICATES found)
  set(${out_var} ${found} PARENT_SCOPE)
endfunction()

if(Python_EXECUTABLE)
  _subinterp_probe_python("${Python_EXECUTABLE}" _p)
  if(NOT _p_OK)
    message(FATAL_ERROR
      "subinterp needs CPython >= 3.12 with headers and a shared libpython.\n"
      "Python_EXECUTABLE=${Python_EXECUTABLE} does not qualify: ${_p_WHY}")
  endif()
  set(SUBINTERP_PYTHON_TAG "${_p_TAG}")
else()
  _subinterp_candidates(_candidates)
  set(_best_version "0")
  set(_rejected)
  foreach(_candidate IN LISTS _candidates)
    _subinterp_probe_python("${_candidate}" _p)
    if(NOT _p_OK)
      list(APPEND _rejected "  ${_candidate}: ${_p_WHY}")
    elseif(_p_VERSION VERSION_GREATER _best_version)
      set(_best_version "${_p_VERSION}")
      set(_best_exe "${_p_EXE}")
      set(SUBINTERP_PYTHON_TAG "${_p_TAG}")
    endif()
  endforeach()
  if(NOT _best_exe)
    list(JOIN _rejected "\n" _rejected)
    message(FATAL_ERROR
      "subinterp needs CPython >= 3.12 with headers and a shared libpython, "
      "and found none. Looked at:\n${_rejected}\n"
      "Install one (for example with pyenv: "
      "PYTHON_CONFIGURE_OPTS=--enable-shared pyenv install 3.13) or pass "
      "-DPython_EXECUTABLE=/path/to/python3.12.")
  endif()
  set(Python_EXECUTABLE "${_best_exe}" CACHE FILEPATH
      "CPython that subinterp builds against (chosen automatically)")
endif()
message(STATUS "subinterp: building against ${Python_EXECUTABLE} (${SUBINTERP_PYTHON_TAG})")

find_package(Python 3.12 REQUIRED
             COMPONENTS Interpreter Development.Module Development.Embed)
