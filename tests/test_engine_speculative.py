"""Speculative decoding in the live engine: exactness, seeding, batch independence, cache accounting."""

import numpy as np
import pytest
from scipy.stats import chisquare

from scalelab.kernels.model import LlamaConfig, LlamaModel
from scalelab.kernels.speculative import filtered_probs, perturbed_model, speculative_generate
from scalelab.simulations.serving import ServingResult, poisson_workload
from scalelab.simulations.serving.live import Engine

CFG = LlamaConfig(n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, d_ff=96, vocab_size=97, max_position=256)
SEEDS = [10, 11, 12, 13]


@pytest.fixture(scope="module")
def model():
    return LlamaModel.random(CFG, seed=0)


@pytest.fixture(scope="module")
def draft(model):
    return perturbed_model(model, 0.5, seed=1)


@pytest.fixture(scope="module")
def prompts():
    rng = np.random.default_rng(2)
    return [rng.integers(0, CFG.vocab_size, n) for n in (5, 40, 17, 33)]


@pytest.fixture(scope="module")
def alone(model, draft, prompts):
    """Each prompt generated speculatively on its own engine."""
    return [Engine(model, draft=draft, spec_k=3).generate([p], max_new_tokens=12, seed=[s])[0]
            for p, s in zip(prompts, SEEDS)]


def _all_blocks_back(eng):
    return eng.cache.n_free == eng.cache.n_blocks and eng.draft_cache.n_free == eng.draft_cache.n_blocks


def test_draft_equal_to_target_accepts_everything_and_gives_the_plain_tokens(model, prompts):
    """With draft = target and the same seeds, every draft is accepted and the tokens are the plain engine's.

    Why: the draft proposes token ``j`` with ``sample`` and the plain engine's seed for token ``j``
    on the target's own logits; when all drafts pass, the bonus token is drawn the same way. So
    the output equals plain decoding up to float32 rounding (the target scores the drafts as a
    chunk, the draft as single tokens), which moves a draw only within rounding of a
    cumulative-probability boundary (never at these seeds).
    """
    plain = Engine(model).generate(prompts, max_new_tokens=12, seed=SEEDS)
    eng = Engine(model, draft=model, spec_k=3)
    out = eng.generate(prompts, max_new_tokens=12, seed=SEEDS)
    for a, b in zip(plain, out):
        assert np.array_equal(a, b)
    assert eng.spec_accept() == 1.0
    assert eng.req.spec_accepted == eng.req.spec_drafted  # not one rejection
    # 11 tokens after the prefill's: steps of 3 drafts + 1 -> 3 speculative steps (4, 4, then 3 = 2 drafts + 1)
    assert eng.req.decode_steps == [3] * 4
    assert _all_blocks_back(eng)


@pytest.mark.parametrize("scheduler", ["chunked", "continuous"])
def test_tokens_do_not_depend_on_the_batch(model, draft, prompts, alone, scheduler):
    eng = Engine(model, draft=draft, spec_k=3, scheduler=scheduler, token_budget=24)
    together = eng.generate(prompts, max_new_tokens=12, seed=SEEDS)
    for a, b in zip(alone, together):
        assert b.dtype == np.int64 and b.shape == (12,)
        assert np.array_equal(a, b)
    assert 0 < eng.spec_accept() < 1  # a perturbed draft: some drafts rejected, some accepted
    assert _all_blocks_back(eng)


def test_preempted_requests_recompute_to_the_same_tokens(model, draft, prompts, alone):
    # 4 blocks of 16 tokens hold the longest sequence (40 + 12 tokens) but not all four at once
    eng = Engine(model, draft=draft, spec_k=3, kv_blocks=4)
    out = eng.generate(prompts, max_new_tokens=12, seed=SEEDS)
    assert sum(eng.req.preemptions) >= 1
    for a, b in zip(alone, out):
        assert np.array_equal(a, b)
    assert _all_blocks_back(eng)


def test_greedy_speculation_is_the_target_greedy(model, draft, prompts):
    """At temperature 0 both distributions are one-hot: the engine, plain decoding and speculative_generate agree."""
    plain = Engine(model).generate(prompts, max_new_tokens=10, temperature=0.0)
    eng = Engine(model, draft=draft, spec_k=4)
    out = eng.generate(prompts, max_new_tokens=10, temperature=0.0)
    for p, a, b in zip(prompts, plain, out):
        assert np.array_equal(a, b)
        ref = speculative_generate(model, draft, p, k=4, max_new_tokens=10, temperature=0.0)
        assert np.array_equal(ref.tokens, b)
    assert sum(eng.req.spec_accepted) > 0


def test_different_seeds_give_different_tokens(model, draft, prompts):
    a = Engine(model, draft=draft, spec_k=2).generate(prompts[:1], max_new_tokens=12, seed=[1])[0]
    b = Engine(model, draft=draft, spec_k=2).generate(prompts[:1], max_new_tokens=12, seed=[2])[0]
    assert not np.array_equal(a, b)


def test_emitted_tokens_follow_the_filtered_target_distribution():
    """Chi-square of the four-token joint over many seeds against the target's exact (filtered) joint.

    The engine's seed stream is not :func:`speculative_generate`'s (the engine samples the first
    token from the prefill; speculative_generate verifies it), so equality is in distribution.
    Vocabulary 3 with top-k 2: every draft and target row excludes a token, and where the two
    kept sets differ the residual must move mass. The same counts against the draft's joint
    are rejected, so the test can fail.
    """
    V, N = 3, 600
    cfg = LlamaConfig(n_layers=1, d_model=16, n_heads=2, n_kv_heads=1, d_ff=24, vocab_size=V, max_position=64)
    target = LlamaModel.random(cfg, seed=3)
    draft = perturbed_model(target, 1.0, seed=5)
    prompt = np.array([1, 0, 2])
    filt = dict(temperature=0.9, top_k=2)
    eng = Engine(target, draft=draft, spec_k=2, max_batch=N, token_budget=4 * N)
    out = np.array(eng.generate([prompt] * N, max_new_tokens=4, seed=7, **filt))  # (N, 4)
    assert 0.3 < eng.spec_accept() < 0.95

    def joint(m, prefix=(), depth=4):  # (V ** depth,) probabilities of the next ``depth`` tokens
        p = filtered_probs(m.forward(np.r_[prompt, prefix].astype(np.int64))[-1:], **filt)[0]
        if depth == 1:
            return p
        return np.concatenate([p[a] * joint(m, prefix + (a,), depth - 1) if p[a] else np.zeros(V ** (depth - 1))
                               for a in range(V)])

    counts = np.bincount(((out[:, 0] * V + out[:, 1]) * V + out[:, 2]) * V + out[:, 3], minlength=V ** 4)

    def pvalue(P):
        keep = P * N >= 5  # pool the rare cells into one
        obs, exp = counts[keep], P[keep] * N
        if P[~keep].sum() > 0:
            obs, exp = np.r_[obs, counts[~keep].sum()], np.r_[exp, P[~keep].sum() * N]
        return chisquare(obs, exp * obs.sum() / exp.sum()).pvalue

    P = joint(target)
    assert counts[P == 0].sum() == 0  # never a sequence the filtered target excludes
    assert pvalue(P) > 1e-3
    assert pvalue(joint(draft)) < 1e-6


def test_serve_reports_the_measured_acceptance(model, draft):
    w = poisson_workload(50.0, 5, prompt_len=12, output_len=9, seed=0)
    eng = Engine(model, draft=draft, spec_k=3)
    r = eng.serve(w)
    assert isinstance(r, ServingResult) and r.requests["finished"].all()
    assert [len(t) for t in r.token_times] == w.output_tokens.tolist()
    req = r.requests
    assert r.config["spec_k"] == 3
    assert r.config["spec_accept"] == pytest.approx(req["spec_accepted"].sum() / req["spec_examined"].sum())
    assert 0 < r.config["spec_accept"] < 1
    assert (req["spec_accepted"] <= req["spec_examined"]).all()
    assert (req["spec_examined"] <= req["spec_drafted"]).all()
    assert _all_blocks_back(eng)
    plain = Engine(model).serve(w)
    assert plain.config["spec_k"] == 0 and plain.config["spec_accept"] is None


def test_bad_speculative_arguments(model):
    other = LlamaModel.random(LlamaConfig(n_layers=1, d_model=32, n_heads=2, n_kv_heads=1, d_ff=48,
                                          vocab_size=CFG.vocab_size + 1, max_position=256), seed=0)
    short = LlamaModel.random(LlamaConfig(n_layers=1, d_model=32, n_heads=2, n_kv_heads=1, d_ff=48,
                                          vocab_size=CFG.vocab_size, max_position=20), seed=0)
    with pytest.raises(ValueError, match="spec_k must be an int >= 0"):
        Engine(model, draft=model, spec_k=-1)
    with pytest.raises(ValueError, match="spec_k must be an int >= 0"):
        Engine(model, draft=model, spec_k=2.0)
    with pytest.raises(ValueError, match="draft must share the model's vocabulary"):
        Engine(model, draft=other, spec_k=2)
    with pytest.raises(TypeError, match="draft must be a LlamaModel"):
        Engine(model, draft="tiny", spec_k=2)
    with pytest.raises(ValueError, match="needs a draft model"):
        Engine(model, spec_k=2)
    with pytest.raises(ValueError, match="needs spec_k >= 1"):
        Engine(model, draft=model)
    with pytest.raises(ValueError, match="draft's context"):
        Engine(model, draft=short, spec_k=2).generate([np.arange(15)], max_new_tokens=8)
    with pytest.raises(ValueError, match="noise must be"):
        perturbed_model(model, -0.1)


def test_perturbed_model_noise_zero_is_the_target_and_noise_moves_the_logits(model):
    toks = np.arange(9)
    assert np.array_equal(perturbed_model(model, 0.0).forward(toks), model.forward(toks))
    a, b = perturbed_model(model, 0.1, seed=1), perturbed_model(model, 0.1, seed=1)
    assert np.array_equal(a.forward(toks), b.forward(toks))  # seeded
    assert not np.allclose(a.forward(toks), model.forward(toks), atol=1e-3)


def test_cli_engine_run_with_a_draft(capsys):
    from scalelab.cli.cli import main

    assert main(["engine", "run", "--model", "tiny", "--qps", "20", "--duration", "0.2", "--prompt", "8",
                 "--output", "6", "--draft", "perturbed", "--draft-noise", "0.2", "--spec-k", "2"]) == 0
    out = capsys.readouterr().out
    assert "finished 4/4" in out and "speculative decoding: draft perturbed, k 2; measured acceptance rate 0." in out
    assert main(["engine", "run", "--draft", "perturbed", "--spec-k", "0"]) == 2
    assert main(["engine", "run", "--draft", "llama-3.2-1b"]) == 2
    assert main(["engine", "run", "--draft", "perturbed", "--draft-noise", "-1"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3
    assert "--spec-k must be an integer >= 1" in err[0] and "vocabulary of 128256" in err[1]
    assert "--draft-noise" in err[2]


def test_speculative_iterations_are_logged_as_such_and_the_fit_refuses_them(model, draft, prompts):
    """Every iteration of an engine with a draft is logged as ``"speculative"`` with its draft lengths.

    Why: such an entry's seconds hold draft steps and a (k + 1)-token verification (and the draft's
    prefill of the same chunks), which the step-cost fit's iteration vector does not describe.
    """
    from scalelab.simulations.serving.fitted import engine_iterations
    from scalelab.simulations.serving.live import EngineIteration, get_engine_model

    eng = Engine(model, draft=draft, spec_k=3)
    eng.generate(prompts, max_new_tokens=6, seed=SEEDS)
    assert eng.batches and all(isinstance(b, EngineIteration) and b.kind == "speculative" for b in eng.batches)
    decoding = [b for b in eng.batches if b.decode_kv]
    assert decoding and all(len(b.drafts) == len(b.decode_kv) for b in decoding)
    assert all(0 <= k <= 3 for b in decoding for k in b.drafts) and max(k for b in decoding for k in b.drafts) == 3
    assert all(b.drafts == () for b in eng.batches if not b.decode_kv)
    assert sum(len(b.decode_kv) for b in decoding) == sum(eng.req.decode_steps)  # one entry per step
    # each step emits at most its drafts + 1 tokens: 5 per request after the prefill's
    assert sum(k + 1 for b in decoding for k in b.drafts) >= 5 * len(prompts)
    with pytest.raises(ValueError, match=r"batches\[0\] is an iteration of kind 'speculative'"):
        engine_iterations(get_engine_model("tiny"), eng.batches)
    plain = Engine(model)
    plain.generate(prompts[:1], max_new_tokens=3)
    assert all(b.kind == "plain" and b.drafts == () for b in plain.batches)


def test_tokens_of_one_speculative_step_share_its_timestamp(model, draft):
    """A step's accepted tokens become available at one instant: distinct times = 1 (prefill) + steps.

    The ITL has one sample per decoding sequence and step, so its weights count steps, not tokens.
    """
    w = poisson_workload(50.0, 5, prompt_len=12, output_len=9, seed=1)
    r = Engine(model, draft=draft, spec_k=3).serve(w)
    req = r.requests
    for times, steps in zip(r.token_times, req["decode_steps"]):
        assert np.all(np.diff(times) >= 0)
        assert np.unique(times).size == 1 + steps  # the prefill's token, then one instant per step
    assert (req["decode_steps"] < req["output_tokens"] - 1).any()  # some step emitted more than one token
    assert r.itl_weights.sum() == req["decode_steps"].sum()
