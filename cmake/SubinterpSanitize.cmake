# SUBINTERP_SANITIZE: "" (off), "address" (ASan + UBSan) or "thread" (TSan).
#
# Instruments everything this project compiles. CPython itself is not
# instrumented, so a test that runs the python executable must load the
# sanitizer runtime first: SUBINTERP_SANITIZER_PRELOAD lists the runtime
# libraries for LD_PRELOAD, and SUBINTERP_SANITIZER_ENV the environment
# (NAME=value entries) that such a test needs, LD_PRELOAD included.
# Programs we link (the C++ tests) carry the runtime themselves and get
# SUBINTERP_SANITIZER_EXE_ENV.

set(SUBINTERP_SANITIZE "" CACHE STRING "Sanitizer build: empty, address (ASan+UBSan) or thread (TSan)")
set_property(CACHE SUBINTERP_SANITIZE PROPERTY STRINGS "" address thread)

set(SUBINTERP_SANITIZE_FLAGS)        # for compiling and linking
set(SUBINTERP_SANITIZE_LINK_FLAGS)   # for linking only
set(SUBINTERP_SANITIZER_PRELOAD)
set(SUBINTERP_SANITIZER_ENV)
set(SUBINTERP_SANITIZER_EXE_ENV)

if(SUBINTERP_SANITIZE STREQUAL "")
  return()
endif()

set(_lsan_supp "${CMAKE_CURRENT_LIST_DIR}/lsan.supp")
set(_tsan_supp "${CMAKE_CURRENT_LIST_DIR}/tsan.supp")
if(SUBINTERP_SANITIZE STREQUAL "address")
  set(SUBINTERP_SANITIZE_FLAGS -fsanitize=address,undefined -fno-sanitize-recover=all
                               -fno-omit-frame-pointer)
  set(_gcc_runtimes libasan.so libubsan.so)
  set(_clang_runtimes asan)
  # CPython is not instrumented and frees some memory only at exit, or
  # never: leak checking is for the C++ tests, where its reports can be read.
  #
  # detect_stack_use_after_return=1 puts the locals of our functions on ASan's
  # fake stack instead of the thread's stack. Besides finding uses after
  # return, that keeps the thread's stack free of ASan's poison: a thread that
  # CPython ends at exit (pthread_exit) unwinds with _Unwind_ForcedUnwind,
  # which ASan does not intercept, so the frames it skips stay poisoned, and
  # the __asan_handle_no_return of the next landing pad then reports a false
  # stack-buffer-overflow on its own local (sigaltstack's stack_t, "WRITE of
  # size 24"; google/sanitizers#1399).
  #
  # allocator_may_return_null=1: CPython turns a failed malloc into
  # MemoryError (b"x" * 10**13), which ASan would otherwise abort on.
  set(_asan_common "abort_on_error=0:strict_init_order=1:detect_stack_use_after_return=1:allocator_may_return_null=1")
  set(SUBINTERP_SANITIZER_ENV
      "ASAN_OPTIONS=${_asan_common}:detect_leaks=0"
      "UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1")
  set(SUBINTERP_SANITIZER_EXE_ENV
      "ASAN_OPTIONS=${_asan_common}:detect_leaks=1"
      "LSAN_OPTIONS=suppressions=${_lsan_supp}:print_suppressions=0"
      "UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1")
elseif(SUBINTERP_SANITIZE STREQUAL "thread")
  set(SUBINTERP_SANITIZE_FLAGS -fsanitize=thread -fno-omit-frame-pointer)
  set(_gcc_runtimes libtsan.so)
  set(_clang_runtimes tsan)
  set(SUBINTERP_SANITIZER_ENV
      "TSAN_OPTIONS=halt_on_error=0:second_deadlock_stack=1:allocator_may_return_null=1:suppressions=${_tsan_supp}")
  set(SUBINTERP_SANITIZER_EXE_ENV ${SUBINTERP_SANITIZER_ENV})
else()
  message(FATAL_ERROR "SUBINTERP_SANITIZE must be empty, 'address' or 'thread', not '${SUBINTERP_SANITIZE}'")
endif()

if(CMAKE_CXX_COMPILER_ID MATCHES "Clang")
  # The extension module is loaded into an uninstrumented python: it must use
  # the shared runtime, which clang links only when asked.
  list(APPEND SUBINTERP_SANITIZE_FLAGS -shared-libsan)
  execute_process(COMMAND "${CMAKE_CXX_COMPILER}" -print-runtime-dir
                  OUTPUT_VARIABLE _rtdir OUTPUT_STRIP_TRAILING_WHITESPACE)
  # ...and which is not on the loader's path.
  list(APPEND SUBINTERP_SANITIZE_LINK_FLAGS "-Wl,-rpath,${_rtdir}")
  foreach(_rt IN LISTS _clang_runtimes)
    list(APPEND SUBINTERP_SANITIZER_PRELOAD
         "${_rtdir}/libclang_rt.${_rt}-${CMAKE_SYSTEM_PROCESSOR}.so")
  endforeach()
elseif(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
  foreach(_rt IN LISTS _gcc_runtimes)
    execute_process(COMMAND "${CMAKE_CXX_COMPILER}" -print-file-name=${_rt}
                    OUTPUT_VARIABLE _path OUTPUT_STRIP_TRAILING_WHITESPACE)
    list(APPEND SUBINTERP_SANITIZER_PRELOAD "${_path}")
  endforeach()
else()
  message(FATAL_ERROR "SUBINTERP_SANITIZE needs GCC or Clang, not ${CMAKE_CXX_COMPILER_ID}")
endif()

set(_resolved)
foreach(_path IN LISTS SUBINTERP_SANITIZER_PRELOAD)
  get_filename_component(_real "${_path}" REALPATH)
  if(NOT IS_ABSOLUTE "${_path}" OR NOT EXISTS "${_real}")
    message(FATAL_ERROR "sanitizer runtime '${_path}' not found: install the compiler's "
                        "sanitizer runtime (libasan8, libubsan1, libtsan2 or libclang-rt-dev)")
  endif()
  list(APPEND _resolved "${_real}")
endforeach()
set(SUBINTERP_SANITIZER_PRELOAD ${_resolved})
list(JOIN SUBINTERP_SANITIZER_PRELOAD ":" _preload)
list(APPEND SUBINTERP_SANITIZER_ENV "LD_PRELOAD=${_preload}")

add_compile_options(${SUBINTERP_SANITIZE_FLAGS})
add_link_options(${SUBINTERP_SANITIZE_FLAGS} ${SUBINTERP_SANITIZE_LINK_FLAGS})
message(STATUS "subinterp: sanitizer '${SUBINTERP_SANITIZE}', python tests preload ${_preload}")
