"""Vector reductions written directly in LLVM IR (Numba intrinsics).

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

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["max_and_bad"]

_UNROLL = 4  # independent vector accumulators (hides the 3-4 cycle max latency)


def _codegen(context, builder, sig, args):
    aty = sig.args[0]
    fty = context.get_value_type(aty.dtype)
    isz = context.get_abi_sizeof(fty)
    lanes = 32 // isz
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
