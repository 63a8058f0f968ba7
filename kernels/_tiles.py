"""Register-tile matrix products written directly in LLVM IR (Numba intrinsics).

Two jitted-callable primitives compute one 4 x W tile of ``A @ B``::

    mm_tile_store(A, i, B, kb, jb, C, jc, K)
        C[i + r, jc + c] = sum_{k < K} A[i + r, k] * B[kb + k, jb + c]
    mm_tile_rescale_add(A, i, B, kb, jb, C, jc, K, alpha)
        C[i + r, jc + c] = alpha[i + r] * C[i + r, jc + c] + (the same sum)

for ``r < TILE_ROWS`` and ``c < TILE_ROW_BYTES // itemsize`` (two 32-byte vectors: 16
float32 or 8 float64 columns). ``A``, ``B`` and ``C`` are 2-D C-contiguous
arrays of one float dtype; nothing is bounds-checked, so callers guarantee
that the rows and columns exist (pad to whole tiles).

Why IR and not a Numba loop
---------------------------
This is the classic GEMM micro-kernel: per step of ``k`` it loads two vectors
of ``B[kb + k, j:j + W]``, broadcasts four scalars ``A[i + r, k]`` and issues
eight independent vector FMAs into accumulators that stay in registers for
the whole reduction. No horizontal sums are needed, because each lane owns
one output column. Written as scalar Numba code (4 x 16 named accumulators)
the SLP vectoriser gave up and the loop ran at 3-9 GFLOP/s; the dot-product
form that Numba *does* vectorise (reduction index innermost in both operands)
ends every output element with an 8-lane horizontal sum, which cost 30-40% of
the attention score matmul. Measured on this machine (one core, float32,
32 x 512 x 64 score tile, best of 7): dot-product form 34 GFLOP/s, this tile
64 GFLOP/s; for the 32 x 64 x 512 probability-times-V update 67 vs 82
GFLOP/s. 4 x 2 vectors beat 6 x 2, 8 x 1, 3 x 4, 2 x 4 and 4 x 1 there.

The FMA is ``llvm.fma`` on vectors, so results are fused multiply-adds
accumulated in the input dtype (float32 kernels accumulate in float32), in
increasing ``k`` order per output element: deterministic and independent of
threading.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from scalelab.kernels._vecmath import VECTOR_BYTES

__all__ = ["TILE_ROWS", "TILE_ROW_BYTES", "VECTOR_BYTES", "mm_tile_store", "mm_tile_rescale_add"]

#: Rows of A (and C) per tile.
TILE_ROWS = 4
# Two SIMD registers (VECTOR_BYTES each) per tile row.
_VECTORS = 2
#: Bytes of one tile row: a tile is TILE_ROW_BYTES // itemsize columns wide.
TILE_ROW_BYTES = _VECTORS * VECTOR_BYTES


def _tile_codegen(rescale):
    """Build the IR for a TILE_ROWS x (_VECTORS * lanes) tile; ``rescale`` selects the update."""

    def codegen(context, builder, sig, args):
        a_val, i_val, b_val, kb_val, jb_val, c_val, jc_val, k_val = args[:8]
        aty, bty, cty = sig.args[0], sig.args[2], sig.args[5]
        fty = context.get_value_type(aty.dtype)
        isz = context.get_abi_sizeof(fty)
        lanes = VECTOR_BYTES // isz
        vty = ir.VectorType(fty, lanes)
        vptr = vty.as_pointer()
        intp = context.get_value_type(types.intp)
        i32 = ir.IntType(32)
        fma = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vty, [vty, vty, vty]),
            f"llvm.fma.v{lanes}{'f32' if isz == 4 else 'f64'}",
        )
        undef = ir.Constant(vty, ir.Undefined)
        splat_mask = ir.Constant(ir.VectorType(i32, lanes), [0] * lanes)

        def splat(x):
            return builder.shuffle_vector(builder.insert_element(undef, x, ir.Constant(i32, 0)),
                                          undef, splat_mask)

        def const(n):
            return ir.Constant(intp, n)

        def row_stride(arr):  # elements between rows (strides are in bytes)
            return builder.sdiv(cgutils.unpack_tuple(builder, arr.strides, 2)[0], const(isz))

        A = context.make_array(aty)(context, builder, a_val)
        B = context.make_array(bty)(context, builder, b_val)
        C = context.make_array(cty)(context, builder, c_val)
        lda, ldb, ldc = row_stride(A), row_stride(B), row_stride(C)
        i = context.cast(builder, i_val, sig.args[1], types.intp)
        kb = context.cast(builder, kb_val, sig.args[3], types.intp)
        jb = context.cast(builder, jb_val, sig.args[4], types.intp)
        jc = context.cast(builder, jc_val, sig.args[6], types.intp)
        K = context.cast(builder, k_val, sig.args[7], types.intp)

        # Accumulators live in allocas of the entry block; mem2reg keeps them in registers.
        accs = [[cgutils.alloca_once_value(builder, ir.Constant(vty, None)) for _ in range(_VECTORS)]
                for _ in range(TILE_ROWS)]
        a_rows = [builder.gep(A.data, [builder.mul(builder.add(i, const(r)), lda)])
                  for r in range(TILE_ROWS)]
        b_first = builder.gep(B.data, [builder.add(builder.mul(kb, ldb), jb)])
        with cgutils.for_range(builder, K) as loop:
            k = loop.index
            b_row = builder.gep(b_first, [builder.mul(k, ldb)])
            bs = [builder.load(builder.bitcast(builder.gep(b_row, [const(c * lanes)]), vptr), align=isz)
                  for c in range(_VECTORS)]
            for r in range(TILE_ROWS):
                a = splat(builder.load(builder.gep(a_rows[r], [k])))
                for c in range(_VECTORS):
                    builder.store(builder.call(fma, [a, bs[c], builder.load(accs[r][c])]), accs[r][c])

        if rescale:
            alpha = context.make_array(sig.args[8])(context, builder, args[8])
        for r in range(TILE_ROWS):
            row = builder.add(i, const(r))
            c_row = builder.gep(C.data, [builder.add(builder.mul(row, ldc), jc)])
            if rescale:
                scale = splat(builder.load(builder.gep(alpha.data, [row])))
            for c in range(_VECTORS):
                ptr = builder.bitcast(builder.gep(c_row, [const(c * lanes)]), vptr)
                val = builder.load(accs[r][c])
                if rescale:
                    val = builder.call(fma, [scale, builder.load(ptr, align=isz), val])
                builder.store(val, ptr, align=isz)
        return context.get_dummy_value()

    return codegen


def _same_float_c2d(*arrays):
    first = arrays[0]
    return all(
        isinstance(a, types.Array) and a.ndim == 2 and a.layout == "C"
        and a.dtype in (types.float32, types.float64) and a.dtype == first.dtype
        for a in arrays
    )


@intrinsic
def mm_tile_store(typingctx, A, i, B, kb, jb, C, jc, K):
    """C[i+r, jc+c] = sum_{k<K} A[i+r, k] * B[kb+k, jb+c] (see the module docstring)."""
    if not _same_float_c2d(A, B, C):
        return None
    return types.void(A, i, B, kb, jb, C, jc, K), _tile_codegen(False)


@intrinsic
def mm_tile_rescale_add(typingctx, A, i, B, kb, jb, C, jc, K, alpha):
    """C[i+r, jc+c] = alpha[i+r] * C[i+r, jc+c] + sum_{k<K} A[i+r, k] * B[kb+k, jb+c]."""
    if not _same_float_c2d(A, B, C):
        return None
    if not (isinstance(alpha, types.Array) and alpha.ndim == 1 and alpha.dtype == A.dtype):
        return None
    return types.void(A, i, B, kb, jb, C, jc, K, alpha), _tile_codegen(True)
