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

from scalelab.kernels._vecmath import CACHE_LINE_BYTES, VECTOR_BYTES, emit_prefetch

__all__ = ["TILE_ROWS", "TILE_ROW_BYTES", "VECTOR_BYTES", "dot_tile_nt_for", "dot_tile_nt_1x1", "dot_tile_nt_1x4",
           "dot_tile_nt_2x1", "dot_tile_nt_2x4", "dot_tile_nt_4x1", "mm_row_rescale_add", "mm_row_store",
           "mm_tile_for", "mm_tile_store", "mm_tile_rescale_add", "prefetch_row", "row_max", "row_max_for", "row_sum",
           "row_sum_for"]

#: Rows of A (and C) per tile.
TILE_ROWS = 4
# Two SIMD registers (VECTOR_BYTES each) per tile row.
_VECTORS = 2
#: Bytes of one tile row: a tile is TILE_ROW_BYTES // itemsize columns wide.
TILE_ROW_BYTES = _VECTORS * VECTOR_BYTES


def _tile_codegen(rescale, vector_bytes, rows=TILE_ROWS):
    """Build the IR for a ``rows`` x (_VECTORS * lanes) tile; ``rescale`` selects the update."""

    def codegen(context, builder, sig, args):
        a_val, i_val, b_val, kb_val, jb_val, c_val, jc_val, k_val = args[:8]
        aty, bty, cty = sig.args[0], sig.args[2], sig.args[5]
        fty = context.get_value_type(aty.dtype)
        isz = context.get_abi_sizeof(fty)
        lanes = vector_bytes // isz
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
                for _ in range(rows)]
        a_rows = [builder.gep(A.data, [builder.mul(builder.add(i, const(r)), lda)])
                  for r in range(rows)]
        b_first = builder.gep(B.data, [builder.add(builder.mul(kb, ldb), jb)])
        with cgutils.for_range(builder, K) as loop:
            k = loop.index
            b_row = builder.gep(b_first, [builder.mul(k, ldb)])
            bs = [builder.load(builder.bitcast(builder.gep(b_row, [const(c * lanes)]), vptr), align=isz)
                  for c in range(_VECTORS)]
            for r in range(rows):
                a = splat(builder.load(builder.gep(a_rows[r], [k])))
                for c in range(_VECTORS):
                    builder.store(builder.call(fma, [a, bs[c], builder.load(accs[r][c])]), accs[r][c])

        if rescale:
            alpha = context.make_array(sig.args[8])(context, builder, args[8])
        for r in range(rows):
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


_MM_TILES = {}


def mm_tile_for(rescale, vector_bytes=VECTOR_BYTES, rows=TILE_ROWS):
    """The register-tile intrinsic at a given vector width (``mm_tile_store`` or, with ``rescale``,
    ``mm_tile_rescale_add``); the tile is ``rows`` rows by ``2 * vector_bytes // itemsize`` columns.

    ``vector_bytes`` defaults to the target's register width; other widths are
    correct on any CPU (LLVM splits wider vectors), which is how the tests
    cover every width on one machine. ``rows`` (default ``TILE_ROWS``) is the
    number of rows of A and C; each output element is the same chain of FMAs
    whatever the tile's height or width (lanes own columns, rows own rows).
    """
    key = (rescale, vector_bytes, rows)
    if key not in _MM_TILES:
        codegen = _tile_codegen(rescale, vector_bytes, rows)
        if rescale:
            def typer(typingctx, A, i, B, kb, jb, C, jc, K, alpha):
                """C[i+r, jc+c] = alpha[i+r] * C[i+r, jc+c] + sum_{k<K} A[i+r, k] * B[kb+k, jb+c]."""
                if not (_same_float_c2d(A, B, C) and isinstance(alpha, types.Array) and alpha.ndim == 1
                        and alpha.dtype == A.dtype):
                    return None
                return types.void(A, i, B, kb, jb, C, jc, K, alpha), codegen
        else:
            def typer(typingctx, A, i, B, kb, jb, C, jc, K):
                """C[i+r, jc+c] = sum_{k<K} A[i+r, k] * B[kb+k, jb+c] (see the module docstring)."""
                if not _same_float_c2d(A, B, C):
                    return None
                return types.void(A, i, B, kb, jb, C, jc, K), codegen
        typer.__name__ = (f"mm_tile_{'rescale_add' if rescale else 'store'}_{vector_bytes}B"
                          + ("" if rows == TILE_ROWS else f"_{rows}rows"))
        _MM_TILES[key] = intrinsic(typer)
    return _MM_TILES[key]


#: Host-width tiles (the prefill kernel and the compiled-loop ceiling of the calibration).
mm_tile_store = mm_tile_for(False)
mm_tile_rescale_add = mm_tile_for(True)
#: One-row host-width tiles (a linear layer's rows past the last whole tile).
mm_row_store = mm_tile_for(False, rows=1)
mm_row_rescale_add = mm_tile_for(True, rows=1)


# ------------------------------------------------------------------ dot products in a fixed lane order


def _emit_lane_dots(context, builder, fty, lanes, a_rows, b_rows, K):
    """Emit ``len(a_rows) x len(b_rows)`` dot products over ``k < K`` in the fixed lane order.

    ``a_rows`` / ``b_rows`` are element pointers to the rows; an ``a_rows``
    entry of ``None`` stands for a row of ones (a plain sum, one addition per
    element instead of a multiply-add with 1, which gives the same bits).
    Returns one scalar per (a row, b row), row-major.
    """
    isz = context.get_abi_sizeof(fty)
    vty = ir.VectorType(fty, lanes)
    vptr = vty.as_pointer()
    intp = context.get_value_type(types.intp)
    i32 = ir.IntType(32)
    sfx = "f32" if isz == 4 else "f64"
    vfma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty, vty, vty]),
                                          f"llvm.fma.v{lanes}{sfx}")
    sfma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(fty, [fty, fty, fty]),
                                          f"llvm.fma.{sfx}")

    def madd(fn, a, b, acc):
        return builder.fadd(acc, b) if a is None else builder.call(fn, [a, b, acc])

    accs = [[cgutils.alloca_once_value(builder, ir.Constant(vty, None)) for _ in b_rows] for _ in a_rows]
    nvec = builder.sdiv(K, ir.Constant(intp, lanes))
    with cgutils.for_range(builder, nvec) as loop:  # lane u takes k = u mod lanes
        k = builder.mul(loop.index, ir.Constant(intp, lanes))

        def vload(row):
            return builder.load(builder.bitcast(builder.gep(row, [k]), vptr), align=isz)

        bs = [vload(row) for row in b_rows]
        for r, a_row in enumerate(a_rows):
            a = None if a_row is None else vload(a_row)
            for c, b in enumerate(bs):
                builder.store(madd(vfma, a, b, builder.load(accs[r][c])), accs[r][c])

    sums = []
    for acc_row in accs:
        for acc in acc_row:
            v = builder.load(acc)
            width = lanes
            while width > 1:  # lanes [0, w/2) + lanes [w/2, w): a fixed pairwise tree
                width //= 2
                half = ir.VectorType(i32, width)
                lo = builder.shuffle_vector(v, v, ir.Constant(half, list(range(width))))
                hi = builder.shuffle_vector(v, v, ir.Constant(half, list(range(width, 2 * width))))
                v = builder.fadd(lo, hi)
            sums.append(cgutils.alloca_once_value(builder, builder.extract_element(v, ir.Constant(i32, 0))))
    start = builder.mul(nvec, ir.Constant(intp, lanes))
    with cgutils.for_range(builder, builder.sub(K, start)) as loop:  # the K % lanes tail, in order
        k = builder.add(start, loop.index)
        bk = [builder.load(builder.gep(row, [k])) for row in b_rows]
        for r, a_row in enumerate(a_rows):
            a = None if a_row is None else builder.load(builder.gep(a_row, [k]))
            for c, b in enumerate(bk):
                slot = sums[r * len(b_rows) + c]
                builder.store(madd(sfma, a, b, builder.load(slot)), slot)
    return [builder.load(slot) for slot in sums]


def _row_stride(context, builder, arr, isz):
    """Elements between rows of a 2-D array (its strides are in bytes)."""
    intp = context.get_value_type(types.intp)
    return builder.sdiv(cgutils.unpack_tuple(builder, arr.strides, 2)[0], ir.Constant(intp, isz))


def _dot_tile_codegen(rows, cols, vector_bytes):
    """IR for ``rows x cols`` dot products of A rows with strided B rows (see :func:`dot_tile_nt_for`)."""

    def codegen(context, builder, sig, args):
        aty, bty, cty = sig.args[0], sig.args[2], sig.args[5]
        fty = context.get_value_type(aty.dtype)
        isz = context.get_abi_sizeof(fty)
        intp = context.get_value_type(types.intp)

        def const(n):
            return ir.Constant(intp, n)

        def arg(n):
            return context.cast(builder, args[n], sig.args[n], types.intp)

        A = context.make_array(aty)(context, builder, args[0])
        B = context.make_array(bty)(context, builder, args[2])
        C = context.make_array(cty)(context, builder, args[5])
        lda, ldb, ldc = (_row_stride(context, builder, x, isz) for x in (A, B, C))
        ia, rb, rstride, ic, jc, K = arg(1), arg(3), arg(4), arg(6), arg(7), arg(8)
        a_rows = [builder.gep(A.data, [builder.mul(builder.add(ia, const(r)), lda)]) for r in range(rows)]
        b_rows = [builder.gep(B.data, [builder.mul(builder.add(rb, builder.mul(const(c), rstride)), ldb)])
                  for c in range(cols)]
        sums = _emit_lane_dots(context, builder, fty, vector_bytes // isz, a_rows, b_rows, K)
        for r in range(rows):
            c_row = builder.gep(C.data, [builder.add(builder.mul(builder.add(ic, const(r)), ldc), jc)])
            for c in range(cols):
                builder.store(sums[r * cols + c], builder.gep(c_row, [const(c)]))
        return context.get_dummy_value()

    return codegen


def _row_args(context, builder, sig, args):
    """(element type, item size, pointer to ``S[r, 0]``, ``n``) of a ``(S, r, n, ...)`` row intrinsic."""
    sty = sig.args[0]
    fty = context.get_value_type(sty.dtype)
    isz = context.get_abi_sizeof(fty)
    S = context.make_array(sty)(context, builder, args[0])
    r, n = (context.cast(builder, args[x], sig.args[x], types.intp) for x in (1, 2))
    return fty, isz, builder.gep(S.data, [builder.mul(r, _row_stride(context, builder, S, isz))]), n


def _row_sum_codegen(vector_bytes):
    def codegen(context, builder, sig, args):
        fty, isz, row, n = _row_args(context, builder, sig, args)
        return _emit_lane_dots(context, builder, fty, vector_bytes // isz, [None], [row], n)[0]

    return codegen


_ROW_SUMS = {}


def row_sum_for(vector_bytes=VECTOR_BYTES):
    """The intrinsic ``row_sum(S, r, n)``: ``sum_{k < n} S[r, k]`` of a 2-D C-contiguous float array.

    Summed in the lane order of :func:`dot_tile_nt_for` (the dot product with a
    row of ones, bit for bit): vectorised without ``reassoc``, the same bits
    for every compile.
    """
    if vector_bytes not in _ROW_SUMS:
        codegen = _row_sum_codegen(vector_bytes)

        def typer(typingctx, S, r, n):
            if not _same_float_c2d(S):
                return None
            return S.dtype(S, r, n), codegen

        typer.__name__ = f"row_sum_{vector_bytes}B"
        _ROW_SUMS[vector_bytes] = intrinsic(typer)
    return _ROW_SUMS[vector_bytes]


#: Independent vector maxima per step of :func:`row_max_for` (two hide the compare latency at two loads a cycle).
_MAX_UNROLL = 2


def _row_max_codegen(vector_bytes):
    def codegen(context, builder, sig, args):
        fty, isz, row, n = _row_args(context, builder, sig, args)
        init = args[3]  # the typer asks for the array's dtype
        lanes = vector_bytes // isz
        vty = ir.VectorType(fty, lanes)
        intp = context.get_value_type(types.intp)
        i32 = ir.IntType(32)

        def bigger(x, m):  # x if x > m else m: a NaN x never replaces m
            return builder.select(builder.fcmp_ordered(">", x, m), x, m)

        first = builder.insert_element(ir.Constant(vty, ir.Undefined), init, ir.Constant(i32, 0))
        splat = builder.shuffle_vector(first, first, ir.Constant(ir.VectorType(i32, lanes), [0] * lanes))
        accs = [cgutils.alloca_once_value(builder, splat) for _ in range(_MAX_UNROLL)]
        step = lanes * _MAX_UNROLL
        nvec = builder.sdiv(n, ir.Constant(intp, step))
        with cgutils.for_range(builder, nvec) as loop:
            base = builder.gep(row, [builder.mul(loop.index, ir.Constant(intp, step))])
            for u, acc in enumerate(accs):
                ptr = builder.bitcast(builder.gep(base, [ir.Constant(intp, u * lanes)]), vty.as_pointer())
                builder.store(bigger(builder.load(ptr, align=isz), builder.load(acc)), acc)
        v = builder.load(accs[0])
        for acc in accs[1:]:
            v = bigger(builder.load(acc), v)
        width = lanes
        while width > 1:
            width //= 2
            half = ir.VectorType(i32, width)
            lo = builder.shuffle_vector(v, v, ir.Constant(half, list(range(width))))
            hi = builder.shuffle_vector(v, v, ir.Constant(half, list(range(width, 2 * width))))
            v = bigger(hi, lo)
        slot = cgutils.alloca_once_value(builder, builder.extract_element(v, ir.Constant(i32, 0)))
        start = builder.mul(nvec, ir.Constant(intp, step))
        with cgutils.for_range(builder, builder.sub(n, start)) as loop:
            x = builder.load(builder.gep(row, [builder.add(start, loop.index)]))
            builder.store(bigger(x, builder.load(slot)), slot)
        return builder.load(slot)

    return codegen


_ROW_MAXES = {}


def row_max_for(vector_bytes=VECTOR_BYTES):
    """The intrinsic ``row_max(S, r, n, init)``: ``max(init, S[r, 0], ..., S[r, n - 1])`` on full vectors.

    ``S`` is a 2-D C-contiguous float array, ``init`` a scalar of its dtype.
    Each step is ``x if x > m else m``, so a NaN score never becomes the
    maximum (the maximum is NaN only if ``init`` is). Over non-NaN values the
    maximum does not depend on the order it is taken in, except for the sign
    of a zero result, so the lanes need no order fixed for determinism the way
    the sums do. Written as a Numba loop, LLVM keeps the compare chain scalar
    without ``nnan`` (one score at a time), and even eight named lanes stayed
    scalar code.
    """
    if vector_bytes not in _ROW_MAXES:
        codegen = _row_max_codegen(vector_bytes)

        def typer(typingctx, S, r, n, init):
            if not (_same_float_c2d(S) and init == S.dtype):
                return None
            return S.dtype(S, r, n, init), codegen

        typer.__name__ = f"row_max_{vector_bytes}B"
        _ROW_MAXES[vector_bytes] = intrinsic(typer)
    return _ROW_MAXES[vector_bytes]


_DOT_TILES = {}


def dot_tile_nt_for(rows, cols, vector_bytes=VECTOR_BYTES):
    """The intrinsic ``dot(A, ia, B, rb, rstride, C, ic, jc, K)`` for one block of dot products.

    It sets, for ``r < rows`` and ``c < cols``::

        C[ic + r, jc + c] = sum_{k < K} A[ia + r, k] * B[rb + c * rstride, k]

    on 2-D C-contiguous arrays of one float dtype (nothing is bounds-checked).
    The order of the sum is part of the definition, not the compiler's choice:
    with ``W = vector_bytes // itemsize`` lanes, lane ``u`` accumulates the
    products ``k = u, u + W, ...`` below ``K - K % W`` in increasing ``k``
    with fused multiply-adds; the lanes are then added as a fixed pairwise
    tree (lanes ``[0, W/2)`` plus ``[W/2, W)``, halving until one is left), and
    the last ``K % W`` products are fused in, in increasing ``k``. So the loop
    runs on full vectors without ``reassoc``, and every compile (fresh or from
    the Numba cache) gives the same bits. ``vector_bytes`` defaults to the
    target's register width; any power of two >= the item size is correct on
    any CPU (wider vectors are split into the registers the CPU has), which is
    how the tests cover every width on one machine. The A rows and the
    ``cols`` B rows are read once per block, each product from both.
    """
    key = (rows, cols, vector_bytes)
    if key not in _DOT_TILES:
        codegen = _dot_tile_codegen(rows, cols, vector_bytes)

        def typer(typingctx, A, ia, B, rb, rstride, C, ic, jc, K):
            if not _same_float_c2d(A, B, C):
                return None
            return types.void(A, ia, B, rb, rstride, C, ic, jc, K), codegen

        typer.__name__ = f"dot_tile_nt_{rows}x{cols}_{vector_bytes}B"
        _DOT_TILES[key] = intrinsic(typer)
    return _DOT_TILES[key]


#: Host-width dot-product blocks the decode scores use: 2 query rows x 4 keys and the edges.
dot_tile_nt_2x4 = dot_tile_nt_for(2, 4)
dot_tile_nt_1x4 = dot_tile_nt_for(1, 4)
dot_tile_nt_2x1 = dot_tile_nt_for(2, 1)
dot_tile_nt_4x1 = dot_tile_nt_for(4, 1)
dot_tile_nt_1x1 = dot_tile_nt_for(1, 1)
#: Host-width row sum (the softmax denominator) and row maximum (its shift).
row_sum = row_sum_for()
row_max = row_max_for()


# ------------------------------------------------------------------ software prefetch

@intrinsic
def prefetch_row(typingctx, X, r):
    """Hint the CPU to fetch every cache line of row ``r`` of a 2-D C-contiguous array.

    A prefetch never faults and never changes a value, so ``r`` may be any
    row number (one past the end included): callers use it to request the
    rows of the next tile while the current one is being computed.
    """
    if not (isinstance(X, types.Array) and X.ndim == 2 and X.layout == "C" and isinstance(r, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        aty = sig.args[0]
        fty = context.get_value_type(aty.dtype)
        isz = context.get_abi_sizeof(fty)
        intp = context.get_value_type(types.intp)
        i8p = ir.IntType(8).as_pointer()
        arr = context.make_array(aty)(context, builder, args[0])
        row = context.cast(builder, args[1], sig.args[1], types.intp)
        ld = _row_stride(context, builder, arr, isz)
        base = builder.bitcast(builder.gep(arr.data, [builder.mul(row, ld)]), i8p)
        ncols = cgutils.unpack_tuple(builder, arr.shape, 2)[1]
        nbytes = builder.mul(ncols, ir.Constant(intp, isz))
        nlines = builder.sdiv(builder.add(nbytes, ir.Constant(intp, CACHE_LINE_BYTES - 1)),
                              ir.Constant(intp, CACHE_LINE_BYTES))
        with cgutils.for_range(builder, nlines) as loop:
            emit_prefetch(builder, builder.gep(base, [builder.mul(loop.index, ir.Constant(intp, CACHE_LINE_BYTES))]), 0)
        return context.get_dummy_value()

    return types.void(X, r), codegen
