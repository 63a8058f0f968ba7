"""Vector math for the Numba kernels: fast-math flag sets, branch-free exponentials, bit casts
and a vector reduction in LLVM IR. Every kernel module and the scaling-law fit take these from
here; nothing here imports anything above ``scalelab.kernels``.

=============================  ===============================================================
name                           what it guarantees
=============================  ===============================================================
``FASTMATH_INF_SAFE``          FMA, reciprocal division, approximate functions; no ``nnan``/
                               ``ninf``, so -inf (masked scores, -inf logits) propagates
                               exactly; no ``reassoc``, so every sum runs in source order
``FASTMATH_INF_SAFE_UNFUSED``  as above without ``contract`` (no FMA the source does not
                               spell out); the scaling fit, whose bits otherwise differed
                               between a fresh compile and a cache load
``FASTMATH_EXACT_DIV``         as ``FASTMATH_INF_SAFE`` without ``arcp``: ``x / t`` stays a true division
                               (sampling matches its reference bit for bit)
``VECTOR_BYTES``               bytes per SIMD register the IR is written for, from the CPU
                               features Numba targets (``vector_bytes_for``: 64 AVX-512, 32 AVX2)
``bits_as_f32``/``bits_as_f64``  reinterpret integer bits as a float (a register move)
``exp2_f32_clamped``           float32 ``2**x`` for ``x <= 0``, rel. error 8e-8, exactly 0 at
                               ``x <= -127`` (so -inf -> 0)
``exp2_nonpositive``           ``2**x`` by dtype: float32 through ``exp2_f32_clamped``,
                               float64 through libm
``EXP2_F32_COEFFS``,           ``exp2_nonpositive`` with the float32 clamp and polynomial passed in
``exp2_nonpositive_with``      (``EXP2_F32_COEFFS``); bit for bit ``exp2_f32_clamped``, for loops
                               that need the constants kept in registers (see below)
``exp_f32_split``              float32 ``exp`` as (polynomial, exponent bits), clamped to
                               [-87, 88], a few ulp
``exp_neg_near_zero``          float64 ``exp(-d)`` for ``d`` in [0, 1/16]; exactly 1 at 0
``exp_neg_1ulp``               float64 ``exp(-d)`` for ``d >= 0`` to ~1 ulp; 0 from 708 on
``exp_nonpositive_clamped``    float64 ``exp(x)`` for ``x <= 0``, a few ulp; clamped at -700
``log_1_to_4``                 float64 ``log(s)`` for ``1 <= s < 4``, truncation < 3e-17 (the log-sum-exp)
``horner``                     the polynomial steps the series above share, inlined with the caller's flags
``max_and_bad``                one pass: max ignoring NaN and the count of NaN/+inf
``prefetch_span``              cache hint for a 1-D span, one ``llvm.prefetch`` per 64-byte line;
                               no effect on results
``emit_prefetch``              the one ``llvm.prefetch`` call, for intrinsics' code generation
                               (``prefetch_span`` here, ``_tiles.prefetch_row``)
=============================  ===============================================================

The three float64 exponentials stay separate on purpose: they differ in range,
clamp and the last ulp, and each caller's results (min-p decisions, tie
handling, fitted parameters) are pinned to its own variant bit for bit.
None calls libm, so the loops around them vectorise.

``exp2_nonpositive_with(x, EXP2_F32_COEFFS)`` exists because LLVM treats the
polynomial's compile-time constants as cheap to rematerialise: in every
vectorised loop around ``exp2_f32_clamped`` it re-broadcast all eight of them
from the constant pool on every vector iteration (eight extra loads per eight
results). Passed in as a run-time tuple, they are broadcast into registers once
before the loop; the arithmetic, its order and its flags are unchanged, so the
results are bitwise equal. Measured here, one thread, CPU time, interleaved: a
bare ``2**x`` loop over 2048 float32 0.46 -> 0.37 ns per element. The ``inline="always"``
ones are inlined into the caller at Numba-IR level and compiled with the
caller's fast-math flags.

``max_and_bad(a)`` returns ``(max over the non-NaN values of a, number of NaN
or +inf entries)`` for a 1-D C-contiguous float32/float64 array, in one pass.
The maximum is ``-inf`` for an empty array or one holding only -inf/NaN.

Why IR: Numba compiles ``m = max(m, x)`` (or ``x if x > m else m``) without
the ``nnan`` fast-math flag as one scalar compare-and-select chain, and with
``nnan`` LLVM still declined to vectorise it; measured here on 256,000
float32 logits, the plain loop took 200-300 us, an eight-lane unrolled
version 116 us and NumPy's ``max`` 24 us. This loop keeps four 32-byte
vectors of running maxima (``llvm.maxnum``, which ignores NaN, so NaN never
poisons the maximum) and four vectors of NaN/+inf counts, then reduces the
lanes once. The row is rejected anyway when the count is non-zero, so how
NaN would order does not matter; -inf orders normally.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

__all__ = [
    "FASTMATH_INF_SAFE", "FASTMATH_INF_SAFE_UNFUSED", "FASTMATH_EXACT_DIV", "VECTOR_BYTES", "vector_bytes_for", "bits_as_f32", "bits_as_f64",
    "exp2_f32_clamped", "exp2_nonpositive", "EXP2_F32_COEFFS", "exp2_nonpositive_with", "exp_f32_split", "exp_neg_near_zero", "exp_neg_1ulp",
    "exp_nonpositive_clamped", "horner", "log_1_to_4", "max_and_bad", "prefetch_span", "emit_prefetch",
]

# ------------------------------------------------------------------ fast-math flag sets

#: Contraction (FMA), reciprocal division and approximate functions, but *not*
#: nnan/ninf: -inf marks masked scores and -inf logits and must propagate exactly,
#: and an overflowing trial step of the scaling fit must still read as non-finite.
#: Nor ``reassoc``: with it the bits depended on the Numba cache (the process that
#: compiled a kernel and every process that loaded it from the cache got results
#: one ulp apart), because where and how LLVM splits a sum into vector lanes is
#: its choice. Sums that must vectorise say their order in the source instead
#: (independent accumulators), so the order is the same for every compile.
FASTMATH_INF_SAFE = {"nsz", "arcp", "contract", "afn"}

#: ``FASTMATH_INF_SAFE`` without ``contract``: no multiply-add is fused unless the
#: source says so. Measured on the scaling fit: with ``contract``, a fresh compile and
#: a cache load still fused different multiply-adds (fitted parameters one ulp
#: apart); without it the two agree bit for bit.
FASTMATH_INF_SAFE_UNFUSED = {"nsz", "arcp", "afn"}

#: -inf must survive (no "nnan"/"ninf"); no "arcp" either, so x / t stays a true
#: division and matches the reference bit for bit; "contract" lets Horner use FMA.
FASTMATH_EXACT_DIV = {"nsz", "contract", "afn"}


def vector_bytes_for(features) -> int:
    """Widest float SIMD register, in bytes, that a set of LLVM target features has.

    ``avx512f``: 64 (16 float32 lanes); ``avx``/``avx2``: 32 (8 lanes); anything
    else: 16, the SSE2 baseline of x86-64 and the width of AArch64 NEON. The IR
    is correct at any width (LLVM splits a wider vector type into the registers
    the target has), so this only chooses speed.
    """
    features = set(features)
    if "avx512f" in features:
        return 64
    if "avx" in features or "avx2" in features:
        return 32
    return 16


def _target_features() -> set[str]:
    """The LLVM features Numba compiles for: ``NUMBA_CPU_FEATURES`` if set, else the host's.

    ``NUMBA_CPU_NAME`` without features (e.g. ``generic`` for a portable cache)
    promises no extension, so no wide vector either.
    """
    from numba.core import config  # noqa: PLC0415 - read when the module loads, after env set-up

    if config.CPU_FEATURES is not None:
        return {f[1:] for f in config.CPU_FEATURES.split(",") if f.startswith("+")}
    if config.CPU_NAME is not None:
        return set()
    import llvmlite.binding as llvm  # noqa: PLC0415

    return {name for name, on in llvm.get_host_cpu_features().items() if on}


#: Bytes per SIMD register the IR here and in ``_tiles`` is written for, chosen
#: from the CPU features Numba targets (32 with AVX2, 64 with AVX-512F).
VECTOR_BYTES = vector_bytes_for(_target_features())

# ------------------------------------------------------------------ bit casts


@intrinsic
def bits_as_f32(typingctx, bits):
    """Reinterpret the low 32 bits of an integer as the float32 with the same bits (inlined; vectorises)."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        low = args[0]
        if bits.bitwidth > 32:  # numba widens int32 arithmetic; only the low 32 bits matter
            low = builder.trunc(low, ir.IntType(32))
        return builder.bitcast(low, ir.FloatType())

    return types.float32(bits), codegen


@intrinsic
def bits_as_f64(typingctx, bits):
    """Reinterpret an int64 bit pattern as a float64 (a register move; lets ``2**k`` vectorize)."""
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return sig, codegen


# ------------------------------------------------------------------ exponentials


@njit(inline="always")
def horner(x, coeffs):
    """``coeffs[0] * x**n + ... + coeffs[n]`` as ``p = p * x + c`` from the highest degree down.

    Inlined into the caller, so it compiles with the caller's fast-math flags
    (with ``contract`` each step is one FMA); the loop over a constant tuple is
    fully unrolled, the same instructions as writing the steps out.
    """
    p = coeffs[0]
    for i in range(1, len(coeffs)):
        p = p * x + coeffs[i]
    return p


def _taylor_exp(n: int) -> tuple[float, ...]:
    """Coefficients ``1/n!, ..., 1/2!, 1/1!, 1/0!`` of the degree-``n`` Taylor polynomial of exp."""
    return tuple(1.0 / math.factorial(j) for j in range(n, -1, -1))


_EXP_TAYLOR_9 = _taylor_exp(9)
_EXP_TAYLOR_12 = _taylor_exp(12)
_EXP_TAYLOR_13 = _taylor_exp(13)
#: Odd series of atanh: 2 atanh(z) = 2 z (1 + z^2/3 + z^4/5 + ... + z^20/21).
_ATANH_SERIES_21 = tuple(1.0 / k for k in range(21, 0, -2))
_LN2 = 0.6931471805599453
_SQRT2 = 1.4142135623730951

# Least-squares fit of 2**f on [0, 1] at 4000 Chebyshev nodes (degree 6);
# max relative error 8e-8 when evaluated in float32 (below float32 epsilon).
_P0 = np.float32(1.0000000025868885)
_P1 = np.float32(0.6931469286930287)
_P2 = np.float32(0.24023050204499932)
_P3 = np.float32(0.05548042632576678)
_P4 = np.float32(0.00968458045235143)
_P5 = np.float32(0.0012387821478736273)
_P6 = np.float32(0.0002187750477084649)
_EXP2_MIN = np.float32(-127.0)
_I127 = np.int32(127)
_I23 = np.int32(23)


#: The float32 ``2**x`` clamp and polynomial, lowest degree first, as one tuple
#: for :func:`exp2_nonpositive_with` (a run-time argument keeps them in registers).
EXP2_F32_COEFFS = (_EXP2_MIN, _P0, _P1, _P2, _P3, _P4, _P5, _P6)


@njit(fastmath=FASTMATH_INF_SAFE, inline="always")
def _exp2_f32_clamped_with(x, k):
    """``2**x`` for float32 ``x <= 0`` with the constants ``k = EXP2_F32_COEFFS`` (clamp, then ``P0..P6``)."""
    x = max(x, k[0])
    n = np.floor(x)
    f = x - n  # [0, 1)
    p = ((((((k[7] * f + k[6]) * f + k[5]) * f + k[4]) * f + k[3]) * f + k[2]) * f + k[1])
    return p * bits_as_f32((np.int32(n) + _I127) << _I23)  # n = -127 gives +0.0


@njit(fastmath=FASTMATH_INF_SAFE, cache=True)
def exp2_f32_clamped(x):
    """2**x for float32 x <= 0; exactly 0 for x <= -127 (so -inf -> 0).

    The constants are compile-time here; loops that want them held in
    registers pass ``EXP2_F32_COEFFS`` to :func:`exp2_nonpositive_with` instead.
    """
    return _exp2_f32_clamped_with(x, EXP2_F32_COEFFS)


def exp2_nonpositive_with(x, k):  # dispatched by type in the overload below
    raise NotImplementedError


@overload(exp2_nonpositive_with, jit_options={"fastmath": FASTMATH_INF_SAFE})
def _exp2_nonpositive_with_overload(x, k):
    """``2**x`` for ``x <= 0`` like :func:`exp2_nonpositive`; float32 takes its constants from ``k``."""
    if x == types.float32:
        return lambda x, k: _exp2_f32_clamped_with(x, k)
    if x == types.float64:
        return lambda x, k: math.exp2(x)
    return None


def exp2_nonpositive(x):  # dispatched by type in the overload below
    raise NotImplementedError


@overload(exp2_nonpositive, jit_options={"fastmath": FASTMATH_INF_SAFE})
def _exp2_nonpositive_overload(x):
    if x == types.float32:
        return lambda x: exp2_f32_clamped(x)
    if x == types.float64:
        return lambda x: math.exp2(x)
    return None


@njit(cache=True, fastmath=FASTMATH_INF_SAFE, inline="always")
def exp_f32_split(x):
    """``exp(x)`` for float32 as ``(poly, bits)``: ``exp(x) = poly * (bits as float32)``.

    Cody-Waite range reduction and a degree-6 polynomial (Cephes ``expf``
    coefficients); |rel. error| a few float32 ulp. ``x`` is clamped to
    [-87, 88], where ``2**n`` stays a normal float. The caller stores ``bits`` in
    an int32 buffer and multiplies by its float32 view in a second loop, so
    both loops vectorise (a bit cast inside the first loop would not).
    """
    x = min(max(x, np.float32(-87.0)), np.float32(88.0))
    fn = np.floor(x * np.float32(1.44269504088896341) + np.float32(0.5))
    r = x - fn * np.float32(0.693359375) + fn * np.float32(2.12194440e-4)
    p = np.float32(1.9875691500e-4)
    p = p * r + np.float32(1.3981999507e-3)
    p = p * r + np.float32(8.3334519073e-3)
    p = p * r + np.float32(4.1665795894e-2)
    p = p * r + np.float32(1.6666665459e-1)
    p = p * r + np.float32(5.0000001201e-1)
    return p * r * r + r + np.float32(1.0), (np.int32(fn) + np.int32(127)) << np.int32(23)


@njit(cache=True, fastmath=FASTMATH_EXACT_DIV, inline="always")
def exp_neg_near_zero(delta):
    """exp(-delta) for delta in [0, 1/16]: degree-9 Taylor (error < 3e-19 relative).

    Exactly 1 at delta = 0, so tokens tied at the maximum get mass exactly 1
    and exact ties resolve like the reference.
    """
    return horner(-delta, _EXP_TAYLOR_9)


@njit(cache=True, fastmath=FASTMATH_EXACT_DIV, inline="always")
def exp_neg_1ulp(d):
    """exp(-d) for d >= 0 to ~1 ulp (0 below 1e-307); used for the min-p test only."""
    z = -d if d < 708.0 else -708.0
    nf = math.floor(z * 1.4426950408889634 + 0.5)
    r = z - nf * 0.6931471803691238 - nf * 1.9082149292705877e-10
    p = horner(r, _EXP_TAYLOR_12)
    return 0.0 if d >= 708.0 else p * (2.0 ** nf)


_LOG2E_F64 = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01  # ln 2 split so that k * _LN2_HI is exact (Cody & Waite 1980)
_LN2_LO = 1.90821492927058770002e-10


@njit(inline="always", fastmath=FASTMATH_INF_SAFE, error_model="numpy")
def exp_nonpositive_clamped(x):
    """``exp(x)`` for ``x <= 0`` without a libm call, so that the loop calling it vectorizes.

    Range reduction ``x = k ln2 + r`` with ``|r| <= ln2 / 2``, a degree-13 Taylor
    polynomial for ``exp(r)`` (truncation below 2e-17), and ``2**k`` built from its bit
    pattern. Inputs below -700 are clamped (``exp(-700) ~ 1e-304`` is zero beside the
    log-sum-exp's leading term of 1). Relative error is a few ulp of ``|x|``.
    """
    x = x if x > -700.0 else -700.0
    k = math.floor(x * _LOG2E_F64 + 0.5)
    r = x - k * _LN2_HI - k * _LN2_LO
    p = horner(r, _EXP_TAYLOR_13)
    return p * bits_as_f64((np.int64(k) + 1023) << 52)


@njit(inline="always", fastmath=FASTMATH_INF_SAFE, error_model="numpy")
def log_1_to_4(s):
    """``log(s)`` for ``1 <= s < 4`` (the log-sum-exp sum of three terms, the largest 1).

    Halve up to twice into ``[1/sqrt2, sqrt2]``, then ``log m = 2 atanh(z)``,
    ``z = (m - 1)/(m + 1)``, ``|z| <= 0.172``: an 11-term odd series (truncation < 3e-17).
    """
    big = s > _SQRT2
    s = s * 0.5 if big else s
    k = 1.0 if big else 0.0
    big = s > _SQRT2
    s = s * 0.5 if big else s
    k = k + 1.0 if big else k
    z = (s - 1.0) / (s + 1.0)
    p = horner(z * z, _ATANH_SERIES_21)
    return k * _LN2 + 2.0 * z * p


# ------------------------------------------------------------------ vector reduction (LLVM IR)

_UNROLL = 4  # independent vector accumulators (hides the 3-4 cycle max latency)


def _codegen(context, builder, sig, args):
    aty = sig.args[0]
    fty = context.get_value_type(aty.dtype)
    isz = context.get_abi_sizeof(fty)
    lanes = VECTOR_BYTES // isz
    vty = ir.VectorType(fty, lanes)
    ity = ir.IntType(isz * 8)  # count lanes in an integer vector of the same width
    vity = ir.VectorType(ity, lanes)
    intp = context.get_value_type(types.intp)
    suffix = f"v{lanes}{'f32' if isz == 4 else 'f64'}"
    vmax = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty, vty]),
                                          f"llvm.maxnum.{suffix}")
    smax = cgutils.get_or_insert_function(builder.module, ir.FunctionType(fty, [fty, fty]),
                                          f"llvm.maxnum.{'f32' if isz == 4 else 'f64'}")
    arr = context.make_array(aty)(context, builder, args[0])
    n = cgutils.unpack_tuple(builder, arr.shape, 1)[0]
    ninf = ir.Constant(fty, float("-inf"))
    pinf = ir.Constant(fty, float("inf"))
    vninf = ir.Constant(vty, [float("-inf")] * lanes)
    vpinf = ir.Constant(vty, [float("inf")] * lanes)
    step = lanes * _UNROLL

    accs = [cgutils.alloca_once_value(builder, vninf) for _ in range(_UNROLL)]
    bads = [cgutils.alloca_once_value(builder, ir.Constant(vity, None)) for _ in range(_UNROLL)]
    nvec = builder.sdiv(n, ir.Constant(intp, step))
    with cgutils.for_range(builder, nvec) as loop:
        base = builder.gep(arr.data, [builder.mul(loop.index, ir.Constant(intp, step))])
        for u in range(_UNROLL):
            ptr = builder.bitcast(builder.gep(base, [ir.Constant(intp, u * lanes)]), vty.as_pointer())
            v = builder.load(ptr, align=isz)
            builder.store(builder.call(vmax, [builder.load(accs[u]), v]), accs[u])
            bad = builder.fcmp_unordered(">=", v, vpinf)  # NaN or +inf
            builder.store(builder.sub(builder.load(bads[u]), builder.sext(bad, vity)), bads[u])

    # lanes -> scalars
    m = ninf
    total = ir.Constant(ity, 0)
    for u in range(_UNROLL):
        va = builder.load(accs[u])
        vb = builder.load(bads[u])
        for x in range(lanes):
            idx = ir.Constant(ir.IntType(32), x)
            m = builder.call(smax, [m, builder.extract_element(va, idx)])
            total = builder.add(total, builder.extract_element(vb, idx))
    m_slot = cgutils.alloca_once_value(builder, m)
    bad_slot = cgutils.alloca_once_value(builder, builder.sext(total, intp) if isz == 4 else total)
    # scalar tail
    start = builder.mul(nvec, ir.Constant(intp, step))
    with cgutils.for_range(builder, builder.sub(n, start)) as loop:
        x = builder.load(builder.gep(arr.data, [builder.add(start, loop.index)]))
        builder.store(builder.call(smax, [builder.load(m_slot), x]), m_slot)
        bad = builder.fcmp_unordered(">=", x, pinf)
        builder.store(builder.add(builder.load(bad_slot), builder.zext(bad, intp)), bad_slot)
    return context.make_tuple(builder, sig.return_type, [builder.load(m_slot), builder.load(bad_slot)])


@intrinsic
def max_and_bad(typingctx, a):
    """(max ignoring NaN, count of NaN/+inf) of a 1-D C-contiguous float array."""
    if not (isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C"
            and a.dtype in (types.float32, types.float64)):
        return None
    return types.Tuple((a.dtype, types.intp))(a), _codegen


# ------------------------------------------------------------------ cache hints

#: Bytes per cache line the prefetch hints step by (64 on x86-64 and most AArch64 cores).
CACHE_LINE_BYTES = 64


def emit_prefetch(builder, ptr, write: int) -> None:
    """Emit one ``llvm.prefetch`` of the line holding ``ptr`` (an ``i8*``) in intrinsic codegen.

    ``write`` is 0 (the line will be read) or 1 (written); the hint keeps the
    line in all cache levels (locality 3) of the data cache. Shared by
    :func:`_prefetch` here and ``_tiles.prefetch_row``.
    """
    i32 = ir.IntType(32)
    fn = cgutils.get_or_insert_function(builder.module,
                                        ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer(), i32, i32, i32]),
                                        "llvm.prefetch.p0")
    builder.call(fn, [ptr, ir.Constant(i32, write), ir.Constant(i32, 3), ir.Constant(i32, 1)])


@intrinsic
def _prefetch(typingctx, a, i, write):
    """``llvm.prefetch`` of the line holding ``a[i]`` (1-D array; ``write`` a literal 0 or 1; keep in all levels)."""
    if not (isinstance(a, types.Array) and a.ndim == 1 and isinstance(i, types.Integer)
            and isinstance(write, types.IntegerLiteral)):
        return None

    def codegen(context, builder, sig, args):
        arr = context.make_array(sig.args[0])(context, builder, args[0])
        ptr = builder.bitcast(builder.gep(arr.data, [args[1]]), ir.IntType(8).as_pointer())
        emit_prefetch(builder, ptr, write.literal_value)
        return context.get_dummy_value()

    return types.none(a, i, write), codegen


@njit(inline="always")
def prefetch_span(a, write):
    """Ask the cache to fetch every line of the 1-D array ``a`` (``write=1`` if it will be stored to).

    A hint only (no fault, no effect on any value): for loops that walk rows
    with a stride the hardware prefetcher does not follow across pages.
    """
    step = max(1, CACHE_LINE_BYTES // a.itemsize)
    for i in range(0, a.size, step):
        _prefetch(a, i, write)
    if a.size:
        _prefetch(a, a.size - 1, write)
