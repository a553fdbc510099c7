// SUBINTERP_API marks the declarations that make up the library's interface.
//
// The core is built as a shared library (libsubinterp.so) with hidden
// visibility: only what carries this macro is exported, so the internals of
// src/core can change without touching a host's ABI, and two builds can never
// bind to each other's internals. A host that links the static core
// (SUBINTERP_SHARED=OFF) gets SUBINTERP_STATIC defined and exports nothing.
#pragma once

#if defined(SUBINTERP_STATIC)
#define SUBINTERP_API
#elif defined(__GNUC__) || defined(__clang__)
#define SUBINTERP_API __attribute__((visibility("default")))
#else
#define SUBINTERP_API
#endif
