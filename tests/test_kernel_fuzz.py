"""Property-based fuzzing of every public kernel: random shapes, dtypes, strides,
NaN/inf placements and out-of-range integers. Each call must either raise a
``ValueError``/``TypeError`` naming an argument, or agree with its NumPy
reference. The hypothesis run happens in a child interpreter so that a
segfault fails this test instead of killing pytest.
"""

import os
import subprocess
import sys
import textwrap

_INNER = textwrap.dedent(r'''
    import numpy as np
    from hypothesis import given, settings, HealthCheck, strategies as st
    from scalelab.kernels import attention as A, moe, recurrent as R, sampling as S, speculative as SP

    settings.register_profile("fuzz", max_examples=int(__import__("sys").argv[1]), deadline=None, derandomize=True,
                              suppress_health_check=list(HealthCheck))
    settings.load_profile("fuzz")
    BAD = [None, np.nan, np.inf, -np.inf]

    def arr(draw, shape, dtype):
        seed = draw(st.integers(0, 2**32 - 1))
        a = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
        if draw(st.booleans()) and a.size:  # a non-contiguous view with the same values
            a = np.asfortranarray(a)
        poison = draw(st.sampled_from(BAD))
        if poison is not None and a.size:
            a.flat[draw(st.integers(0, a.size - 1))] = poison
        return a

    def sizes(data, *bounds):
        """One drawn integer per ``(lo, hi)`` pair."""
        return tuple(data.draw(st.integers(lo, hi)) for lo, hi in bounds)

    def outcome(f, *args, **kw):
        try:
            return f(*args, **kw)
        except (ValueError, TypeError) as err:
            assert str(err), "error without a message"
            return err

    def same(out, ref, tol, nan_where_ref=False):
        """Both raised the same type, or agree; NaN only where the reference has it, if allowed at all."""
        if isinstance(ref, Exception) or isinstance(out, Exception):
            assert type(out) is type(ref), (out, ref)
            return
        out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
        assert out.shape == ref.shape, (out.shape, ref.shape)
        if nan_where_ref:  # NaN inputs propagate: the same elements must be NaN
            np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
            out, ref = np.nan_to_num(out, nan=0.0), np.nan_to_num(ref, nan=0.0)
        assert not np.isnan(out).any(), "NaN from a defined input"
        np.testing.assert_allclose(out, ref, atol=tol, rtol=tol)  # -inf (masked) must match exactly

    @st.composite
    def attention_case(draw):
        dt = draw(st.sampled_from([np.float32, np.float64]))
        B, Hkv, g, L, D = (draw(st.integers(0, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 2)),
                           draw(st.integers(0, 20)), draw(st.integers(1, 9)))
        q = arr(draw, (B, Hkv * g, L, D), dt)
        k, v = arr(draw, (B, Hkv, L, D), dt), arr(draw, (B, Hkv, L, D), dt)
        window = draw(st.sampled_from([None, 1, 3, 0, -1, 2**63, 2**62]))
        scale = draw(st.sampled_from([None, 0.5, 1e39, float("nan")]))
        return q, k, v, dict(causal=draw(st.booleans()), window=window, scale=scale)

    @given(attention_case())
    def fuzz_attention(case):
        q, k, v, kw = case
        same(outcome(A.attention, q, k, v, **kw), outcome(A.attention_ref, q, k, v, **kw), 1e-4)

    @given(st.data())
    def fuzz_decode(data):
        dt = data.draw(st.sampled_from([np.float32, np.float64]))
        B, L, ps = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 12)), data.draw(st.integers(1, 4))
        q = arr(data.draw, (B, 2, 8), dt)
        kc, vc = arr(data.draw, (B, 1, L, 8), dt), arr(data.draw, (B, 1, L, 8), dt)
        lengths = np.array(data.draw(st.lists(st.integers(-2, L + 2), min_size=B, max_size=B)))
        same(outcome(A.decode_attention, q, kc, vc, lengths), outcome(A.decode_attention_ref, q, kc, vc, lengths), 1e-4)
        nb = -(-L // ps)
        pages = arr(data.draw, (B * nb + 1, ps, 1, 8), dt)
        table = np.array(data.draw(st.lists(st.integers(-3, B * nb + 3), min_size=B * nb, max_size=B * nb))).reshape(B, nb)
        same(outcome(A.paged_decode_attention, q, pages, pages, table, lengths),
             outcome(A.paged_decode_attention_ref, q, pages, pages, table, lengths), 1e-4)

    @given(st.data())
    def fuzz_sampling(data):
        dt = data.draw(st.sampled_from([np.float32, np.float64]))
        logits = arr(data.draw, (data.draw(st.integers(1, 3)), data.draw(st.integers(1, 40))), dt)
        kw = dict(temperature=data.draw(st.sampled_from([0.0, 0.7, 1e39, -1.0])),
                  top_k=data.draw(st.sampled_from([0, 1, 5, -1, np.uint64(2**63)])),
                  top_p=data.draw(st.sampled_from([1.0, 0.5, 0.0])))
        same(outcome(S.filter_logits, logits, **kw), outcome(S.filter_logits_ref, logits, **kw), 1e-5)
        tok = outcome(S.sample, logits, seed=3, **kw)
        ref = outcome(S.sample_ref, logits, seed=3, **kw)
        if not isinstance(tok, Exception):
            assert ((0 <= tok) & (tok < logits.shape[1])).all(), tok
        assert type(tok) is type(ref) or not isinstance(ref, Exception), (tok, ref)
        k = data.draw(st.integers(-1, logits.shape[1] + 1))
        out, ref = outcome(S.top_k, logits, k), outcome(S.top_k_ref, logits, k)
        if isinstance(out, Exception) or isinstance(ref, Exception):
            assert type(out) is type(ref), (out, ref)
        else:
            np.testing.assert_array_equal(out[1], ref[1])

    @given(st.data())
    def fuzz_moe(data):
        T, E = data.draw(st.integers(0, 12)), data.draw(st.integers(1, 6))
        k = data.draw(st.integers(1, E))
        experts = np.array(data.draw(st.lists(st.integers(-1, E), min_size=T * k, max_size=T * k))).reshape(T, k)
        cap = data.draw(st.sampled_from([None, 0, 1, 3, -1, 2**70]))
        D, R = outcome(moe.dispatch, experts, E, capacity=cap), outcome(moe.dispatch_ref, experts, E, capacity=cap)
        if isinstance(D, Exception) or isinstance(R, Exception):
            assert type(D) is type(R), (D, R)
            return
        x = arr(data.draw, (T, 5), np.float32)
        same(outcome(moe.permute, x, D), outcome(moe.permute_ref, x, D), 0)
        if D.n_kept and data.draw(st.booleans()):  # a Dispatch changed behind its back
            bad = np.array(D.order)
            bad[data.draw(st.integers(0, D.n_kept - 1))] = data.draw(st.sampled_from([-5, T * k, 10**6, 2**31 - 1]))
            object.__setattr__(D, "order", bad)
            assert isinstance(outcome(moe.permute, x, D), ValueError)
            assert isinstance(outcome(moe.permute_ref, x, D), ValueError)

    # The routing, combine, loss and layer functions get fewer examples each: their code
    # paths are few and the dense float64 layer reference is the slowest call here.
    few = settings(max_examples=max(4, settings().max_examples // 4))
    fewer = settings(max_examples=max(3, settings().max_examples // 8))  # the layer: 3 GEMMs x E, and its dense reference

    @few
    @given(st.data())
    def fuzz_route(data):
        T, E = data.draw(st.integers(0, 9)), data.draw(st.integers(1, 6))
        logits = arr(data.draw, (T, E), data.draw(st.sampled_from([np.float32, np.float64])))
        scoring = data.draw(st.sampled_from(["softmax", "sigmoid"]))
        kw = dict(scoring=scoring, renormalize=data.draw(st.booleans()))
        if scoring == "sigmoid" and data.draw(st.booleans()):
            kw.update(n_groups=data.draw(st.sampled_from([1, 2, 3, 0])), topk_groups=data.draw(st.integers(0, 2)),
                      bias=data.draw(st.sampled_from([None, np.linspace(-0.1, 0.1, E), np.zeros(E + 1)])))
        top_k = data.draw(st.sampled_from([1, E, 0, E + 1, 2**63]))
        out, ref = outcome(moe.route, logits, top_k, **kw), outcome(moe.route_ref, logits, top_k, **kw)
        same(out if isinstance(out, Exception) else out[0], ref if isinstance(ref, Exception) else ref[0], 1e-5)
        if not isinstance(out, Exception):
            np.testing.assert_array_equal(out[1], ref[1])
            assert ((0 <= out[1]) & (out[1] < E)).all()
        cap = data.draw(st.sampled_from([0, 1, T, T + 1, -1, 2**70]))
        out, ref = outcome(moe.expert_choice, logits, cap), outcome(moe.expert_choice_ref, logits, cap)
        same(out if isinstance(out, Exception) else out[1], ref if isinstance(ref, Exception) else ref[1], 1e-6)
        if not isinstance(out, Exception):
            np.testing.assert_array_equal(out[0], ref[0])
        experts = np.array(data.draw(st.lists(st.integers(-1, E), min_size=T * 2, max_size=T * 2)), np.int64).reshape(T, 2)
        same(outcome(moe.load_balancing_loss, logits, experts), outcome(moe.load_balancing_loss_ref, logits, experts),
             1e-9)
        same(outcome(moe.router_z_loss, logits), outcome(moe.router_z_loss_ref, logits), 1e-9)

    @few
    @given(st.data())
    def fuzz_unpermute(data):
        T, E = data.draw(st.integers(0, 10)), data.draw(st.integers(1, 5))
        k = data.draw(st.integers(1, E))
        experts = np.array(data.draw(st.lists(st.integers(0, E - 1), min_size=T * k, max_size=T * k)), np.int64).reshape(T, k)
        D = moe.dispatch(experts, E, capacity=data.draw(st.sampled_from([None, 0, 1, 2])))
        dt = data.draw(st.sampled_from([np.float32, np.float64]))
        rows = D.n_kept + data.draw(st.sampled_from([0, 0, 0, 1]))  # sometimes one row too many
        ys = arr(data.draw, (rows, data.draw(st.integers(0, 6))), dt)
        w = arr(data.draw, data.draw(st.sampled_from([(T, k), (T, k), (T, k + 1)])), np.float32)
        same(outcome(moe.unpermute, ys, D, w), outcome(moe.unpermute_ref, ys, D, w), 1e-5, nan_where_ref=True)
        if D.n_kept and T and data.draw(st.booleans()):  # a Dispatch changed behind its back
            bad = np.array(D.position)
            bad.flat[data.draw(st.integers(0, bad.size - 1))] = data.draw(st.sampled_from([-2, D.n_kept, 10**6]))
            object.__setattr__(D, "position", bad)
            assert isinstance(outcome(moe.unpermute, ys, D, w), (ValueError, TypeError))
            assert isinstance(outcome(moe.unpermute_ref, ys, D, w), (ValueError, TypeError))

    @fewer
    @given(st.data())
    def fuzz_moe_layer(data):
        dt = data.draw(st.sampled_from([np.float32, np.float64]))
        T, d, E, F = sizes(data, (0, 6), (1, 5), (1, 4), (1, 4))
        x = arr(data.draw, (T, d), dt)
        rw, w1, w3 = arr(data.draw, (d, E), dt), arr(data.draw, (E, d, F), dt), arr(data.draw, (E, d, F), dt)
        w2 = arr(data.draw, (E, F, d), data.draw(st.sampled_from([dt, dt, np.float16])))
        top_k = data.draw(st.sampled_from([1, E, 0, E + 1]))
        cap = data.draw(st.sampled_from([None, 0, 1, -1]))
        same(outcome(moe.moe_layer, x, rw, w1, w3, w2, top_k, capacity=cap),
             outcome(moe.moe_layer_ref, x, rw, w1, w3, w2, top_k, capacity=cap), 1e-3, nan_where_ref=True)

    @few
    @given(st.data())
    def fuzz_recurrent(data):
        dt = data.draw(st.sampled_from([np.float32, np.float64]))
        nb, L, d, N = sizes(data, (0, 2), (0, 6), (0, 5), (1, 3))
        x, delta = arr(data.draw, (nb, L, d), dt), np.abs(arr(data.draw, (nb, L, d), dt))
        A_ = -np.abs(arr(data.draw, (d, N), dt)) * data.draw(st.sampled_from([1, 1, 1, -1]))  # sometimes A > 0
        Bm, Cm, Dv = arr(data.draw, (nb, L, N), dt), arr(data.draw, (nb, L, N), dt), arr(data.draw, (d,), dt)
        state = data.draw(st.sampled_from([None, "given"]))
        state = None if state is None else arr(data.draw, (nb, d, N), dt)
        chunk = data.draw(st.sampled_from([None, None, 1, 3, 2**62, 0, -1, 2**70, 1.5]))
        out = outcome(R.mamba_scan, x, delta, A_, Bm, Cm, Dv, state, chunk=chunk)
        ref = outcome(R.mamba_scan_ref, x, delta, A_, Bm, Cm, Dv, state)
        if chunk in (0, -1, 2**70, 1.5) and not isinstance(ref, Exception):
            assert isinstance(out, TypeError if chunk == 1.5 else ValueError), out
        else:
            same(out if isinstance(out, Exception) else out[0], ref if isinstance(ref, Exception) else ref[0], 1e-4)
            if not isinstance(out, Exception):
                same(out[1], ref[1], 1e-4)
        if L:  # one decode step on the first token, state updated in place by both
            s1 = np.zeros((nb, d, N), dt) if state is None else np.array(state)
            s2 = np.array(s1)
            out = outcome(R.mamba_step, x[:, 0], delta[:, 0], A_, Bm[:, 0], Cm[:, 0], Dv, s1)
            ref = outcome(R.mamba_step_ref, x[:, 0], delta[:, 0], A_, Bm[:, 0], Cm[:, 0], Dv, s2)
            same(out, ref, 1e-4)
            if not isinstance(out, Exception):
                same(s1, s2, 1e-4)
        H, K, V = sizes(data, (0, 2), (0, 4), (0, 4))
        r, k = arr(data.draw, (nb, L, H, K), dt), arr(data.draw, (nb, L, H, K), dt)
        v, u = arr(data.draw, (nb, L, H, V), dt), arr(data.draw, (H, K), dt)
        with np.errstate(invalid="ignore"):  # inf % 1 is NaN: a poisoned decay stays poisoned
            w = np.abs(arr(data.draw, (nb, L, H, K), dt)) % dt(1) * data.draw(st.sampled_from([1, 1, 1, 2]))
        state = data.draw(st.sampled_from([None, "given"]))
        state = None if state is None else arr(data.draw, (nb, H, K, V), dt)
        ref = outcome(R.rwkv_wkv_ref, r, k, v, w, u, state)
        for f in (R.rwkv_wkv, R.rwkv_wkv_loop):
            out = outcome(f, r, k, v, w, u, state)
            same(out if isinstance(out, Exception) else out[0], ref if isinstance(ref, Exception) else ref[0], 1e-4)
            if not isinstance(out, Exception):
                same(out[1], ref[1], 1e-4)
        if L:
            s1 = np.zeros((nb, H, K, V), dt) if state is None else np.array(state)
            s2 = np.array(s1)
            same(outcome(R.rwkv_step, r[:, 0], k[:, 0], v[:, 0], w[:, 0], u, s1),
                 outcome(R.rwkv_step_ref, r[:, 0], k[:, 0], v[:, 0], w[:, 0], u, s2), 1e-4)
            same(s1, s2, 1e-4)

    @few
    @given(st.data())
    def fuzz_speculative(data):
        dt = data.draw(st.sampled_from([np.float32, np.float64]))
        B, k, V = data.draw(st.integers(0, 3)), data.draw(st.integers(0, 3)), data.draw(st.integers(1, 6))
        logits = arr(data.draw, (B * (2 * k + 1), V), dt)
        probs = outcome(SP.filtered_probs, logits, temperature=data.draw(st.sampled_from([0.0, 0.8, 1e39])),
                        top_k=data.draw(st.sampled_from([0, 2, -1])))
        if isinstance(probs, Exception):
            return
        assert np.isfinite(probs).all() and np.allclose(probs.sum(axis=-1), 1.0)
        probs = probs.astype(dt)
        if data.draw(st.booleans()) and probs.size:  # a non-distribution
            probs.flat[data.draw(st.integers(0, probs.size - 1))] = data.draw(st.sampled_from([-0.5, np.nan, 3.0]))
        q, p = probs[:B * k].reshape(B, k, V), probs[B * k:].reshape(B, k + 1, V)
        tokens = np.array(data.draw(st.lists(st.integers(-1, V), min_size=B * k, max_size=B * k)),
                          np.int64).reshape(B, k)
        seed = data.draw(st.sampled_from([0, 7, -1, 2**64, np.arange(B)]))
        out, ref = (outcome(f, q, p, tokens, seed) for f in (SP.speculative_verify, SP.speculative_verify_ref))
        if isinstance(out, Exception) or isinstance(ref, Exception):
            assert type(out) is type(ref), (out, ref)
            return
        np.testing.assert_array_equal(out[0], ref[0])
        np.testing.assert_array_equal(out[1], ref[1])
        assert ((out[0] >= 0) & (out[0] <= k)).all() and (out[1] < V).all()

    INTS = st.sampled_from([0, 1, 3, -1, 2**63, 2**64, True, 1.5, np.uint64(2**64 - 1)])

    @few
    @given(st.data())
    def fuzz_helpers(data):
        # sampling: the seeded uniforms and the best-of-N scores
        seeds = data.draw(st.lists(INTS, min_size=0, max_size=3))
        u = outcome(S.row_uniform, np.array(seeds) if seeds else np.zeros(0, np.uint64), data.draw(INTS))
        if not isinstance(u, Exception):
            assert ((0 <= u) & (u < 1)).all(), u
        N, T = data.draw(st.integers(0, 3)), data.draw(st.integers(1, 5))
        lp = -np.abs(arr(data.draw, (N, T), data.draw(st.sampled_from([np.float32, np.float64]))))
        lengths = np.array(data.draw(st.lists(st.integers(-1, T + 1), min_size=N, max_size=N)), np.int64)
        got = outcome(S.sequence_logprob, lp, lengths)
        if not isinstance(got, Exception):
            want = [lp[i, :lengths[i]].astype(np.float64).sum() / lengths[i] for i in range(N)]
            np.testing.assert_allclose(got, want, rtol=1e-12)
            assert outcome(S.best_of_n, lp, lengths) == int(np.argmax(got))
        # moe: capacity from a factor (ceil of a positive capacity, at least 1) and the dense SwiGLU
        T, k, E = data.draw(INTS), data.draw(INTS), data.draw(INTS)
        factor = data.draw(st.sampled_from([1.0, 1.25, 1e-12, 0.0, -1.0, np.nan, np.inf, 1e308, "1"]))
        cap = outcome(moe.capacity_from_factor, T, k, E, factor)
        if not isinstance(cap, Exception):
            want = factor * T * k / E
            assert type(cap) is int and cap >= 1 and cap - 1 < want * (1 + 1e-12) <= cap * (1 + 1e-12), (cap, want)
        dt = data.draw(st.sampled_from([np.float32, np.float64]))
        Tn, d, F = data.draw(st.integers(0, 4)), data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
        x, w1, w3, w2 = arr(data.draw, (Tn, d), dt), arr(data.draw, (d, F), dt), arr(data.draw, (d, F), dt), \
            arr(data.draw, (F, d), data.draw(st.sampled_from([dt, dt, np.float16])))
        got = outcome(moe.swiglu_ffn, x, w1, w3, w2)
        if not isinstance(got, Exception):
            x64, h = x.astype(np.float64), x.astype(np.float64) @ w1
            with np.errstate(all="ignore"):
                want = (h / (1 + np.exp(-h)) * (x64 @ w3)) @ w2
            same(got, want, 1e-4, nan_where_ref=True)
        # attention napkin math: an exact non-negative count or a named error
        for f, args in ((A.attention_flops, (data.draw(INTS), data.draw(INTS), data.draw(INTS))),
                        (A.kv_bytes_read, (np.array([data.draw(st.sampled_from([0, 5, -5, 2**62]))]), data.draw(INTS),
                                           data.draw(INTS)))):
            got = outcome(f, *args)
            assert isinstance(got, Exception) or (type(got) is int and got >= 0), (f.__name__, args, got)

    for f in (fuzz_attention, fuzz_decode, fuzz_sampling, fuzz_moe, fuzz_route, fuzz_unpermute, fuzz_moe_layer,
              fuzz_recurrent, fuzz_speculative, fuzz_helpers):
        f()
    print("ok")
''')


def test_kernels_reject_or_match_reference_on_fuzzed_input():
    examples = os.environ.get("SCALELAB_HYPOTHESIS_EXAMPLES", "60")
    r = subprocess.run([sys.executable, "-c", _INNER, examples], capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), (r.returncode, r.stdout[-3000:], r.stderr[-5000:])
