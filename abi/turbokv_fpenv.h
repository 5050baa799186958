/* SPDX-License-Identifier: MIT */
/*
 * turbokv_fpenv.h - the floating-point environment the format's rules
 * (turbokv_scalar.h) assume of C code on the host's CPU: round to nearest
 * even, subnormals kept (neither flushed to zero as results nor read as
 * zero as inputs), NaNs propagated rather than replaced by the default
 * NaN, half precision in IEEE form, and no exception trapping.
 *
 * A host may run in another one: code built with -ffast-math sets the
 * x86 flush-to-zero and denormals-are-zero modes at startup; an engine may
 * call fesetround or feenableexcept. Under them the same rows would be
 * stored as other bytes (turbo rows holding subnormals or values near
 * FLT_MIN) and the tables computed from the rotation seed would differ.
 * So code that stores rows, attends or computes tables on the host's CPU
 * enters this environment for the call and gives the host's back after:
 *
 *     tkv_fpenv fp = tkv_fpenv_enter();
 *     ... the call's work (threads it starts inherit the environment) ...
 *     tkv_fpenv_leave(fp);
 *
 * Entering costs a register read where the host's environment is already
 * this one (the usual case), a read and a write otherwise. The work must be
 * out of line (a call into another function or translation unit): C
 * compilers may move floating-point operations across these inline
 * register accesses otherwise.
 *
 * x86-64 (and i386 with SSE): MXCSR. aarch64: FPCR. Elsewhere the rounding
 * mode only, through <fenv.h>.
 */
#ifndef TURBOKV_FPENV_H
#define TURBOKV_FPENV_H

#if defined(__x86_64__) || (defined(__i386__) && defined(__SSE__))
#include <xmmintrin.h>

typedef struct {
    unsigned int saved, wanted;
} tkv_fpenv;

/* MXCSR: flush-to-zero (bit 15), denormals-are-zero (bit 6) and the
 * rounding control (bits 13-14) cleared, every exception masked (bits
 * 7-12); the status flags (bits 0-5) left as they are. */
#define TKV_FPENV_MXCSR_CLEAR 0xe040u
#define TKV_FPENV_MXCSR_SET 0x1f80u

static inline tkv_fpenv tkv_fpenv_enter(void)
{
    tkv_fpenv e;
    e.saved = _mm_getcsr();
    e.wanted = (e.saved & ~TKV_FPENV_MXCSR_CLEAR) | TKV_FPENV_MXCSR_SET;
    if (e.wanted != e.saved)
        _mm_setcsr(e.wanted);
    return e;
}

static inline void tkv_fpenv_leave(tkv_fpenv e)
{
    if (e.wanted != e.saved)
        _mm_setcsr(e.saved);
}

#elif defined(__aarch64__) && defined(__GNUC__)

typedef struct {
    unsigned long saved, wanted;
} tkv_fpenv;

/* FPCR: alternative half precision (bit 26), default NaN (25), flush to
 * zero (24), the rounding mode (22-23), half-precision flush to zero (19)
 * and the exception trap enables (8-12, 15) cleared. */
#define TKV_FPENV_FPCR_CLEAR                                                                                \
    ((1ul << 26) | (1ul << 25) | (1ul << 24) | (3ul << 22) | (1ul << 19) | (1ul << 15) | (0x1ful << 8))

static inline tkv_fpenv tkv_fpenv_enter(void)
{
    tkv_fpenv e;
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(e.saved));
    e.wanted = e.saved & ~TKV_FPENV_FPCR_CLEAR;
    if (e.wanted != e.saved)
        __asm__ __volatile__("msr fpcr, %0" : : "r"(e.wanted));
    return e;
}

static inline void tkv_fpenv_leave(tkv_fpenv e)
{
    if (e.wanted != e.saved)
        __asm__ __volatile__("msr fpcr, %0" : : "r"(e.saved));
}

#else
#include <fenv.h>

typedef struct {
    int saved;
} tkv_fpenv;

static inline tkv_fpenv tkv_fpenv_enter(void)
{
    tkv_fpenv e;
    e.saved = fegetround();
    if (e.saved != FE_TONEAREST)
        fesetround(FE_TONEAREST);
    return e;
}

static inline void tkv_fpenv_leave(tkv_fpenv e)
{
    if (e.saved != FE_TONEAREST)
        fesetround(e.saved);
}
#endif

#endif /* TURBOKV_FPENV_H */
