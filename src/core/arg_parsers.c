// CPython 3.12 keeps the keyword tuple of each Argument Clinic parser of an
// extension module (`_PyArg_Parser.kwtuple`: `pickle.dumps(obj,
// protocol=4)`, `print` pickled, `json.dumps(..., indent=2)`, ...) in a
// process-wide static, made on first use with keywords by whichever
// interpreter gets there first. When that is an isolated interpreter, the
// tuple lives in that interpreter's allocator, and the main interpreter's
// finalization frees it into its own tuple free list (`_PyArg_Fini`), which
// aborts the process ("free(): invalid pointer", "double free or
// corruption") a moment later. Any package can be first on any parser
// (dask's `tokenize` pickles builtins on import), so warming up chosen
// parsers cannot cover them all.
//
// The fix: before the parsers are cleared, every owned keyword tuple is made
// immortal, so that clearing it frees nothing. The tuples stay allocated
// for the rest of the process (a few hundred bytes), which is what CPython
// 3.13 does with its own. CPython 3.13 is not affected: nothing to do there.
//
// C, not C++: CPython's internal headers (the layout of _PyRuntime) compile
// only as C.
#define Py_BUILD_CORE 1
#include <Python.h>

#if PY_VERSION_HEX < 0x030D0000
#include "internal/pycore_runtime.h"
#endif

// Declared in internal.hpp.
void subinterp_keep_parser_keywords(void) {
#if PY_VERSION_HEX < 0x030D0000
  struct _getargs_runtime_state* state = &_PyRuntime.getargs;
  // The lock that parser_init() takes; a bounded wait, since this runs at
  // exit and a stuck thread must not hold the exit up.
  const int locked = state->mutex != NULL &&
                      PyThread_acquire_lock_timed(state->mutex, 1000000, 0) == PY_LOCK_ACQUIRED;
  for (struct _PyArg_Parser* parser = state->static_parsers; parser != NULL; parser = parser->next) {
    // initialized == 1: the parser made the tuple and _PyArg_Fini() clears
    // it; -1: a static tuple of CPython's own, immortal already.
    if (parser->initialized == 1 && parser->kwtuple != NULL) {
      parser->kwtuple->ob_refcnt = _Py_IMMORTAL_REFCNT;
    }
  }
  if (locked) PyThread_release_lock(state->mutex);
#endif
}
