"""A muP transfer experiment that runs on this CPU: MLPs of growing width under SP and muP.

What it shows (Yang et al. 2022, "Tensor Programs V: Tuning Large Neural Networks via
Zero-Shot Hyperparameter Transfer", arXiv 2203.03466): under the standard
parametrisation (SP) the learning rate that trains a network best moves as the network
gets wider, so tuning a small proxy model does not tell you how to train the big one;
under the maximal-update parametrisation (muP) it stays put, and a wider model is no
worse at the learning rate found on the narrow one.

| function | what it computes |
| --- | --- |
| :func:`mup_experiment` | final test loss for every (width, learning rate, seed) of one parametrisation |
| :func:`best_lr_table` | the best learning rate on the grid per width (mean loss over seeds) |
| :func:`coord_check` | mean absolute activation of every layer after a few Adam steps, per width |

**The network and the task.** An MLP ``x -> relu(x W_1) -> ... -> h W_out`` with
``depth`` hidden layers of ``width`` units, no biases, trained with Adam on a fixed
synthetic regression task: the targets are the outputs of a random *teacher* MLP of
width :attr:`MLPTask.teacher_width` on Gaussian inputs, normalised to unit variance,
with fresh mini-batches each step (online learning, so the test loss measures how well
the function was learnt, not memorisation). The loss is half the mean squared error on
a fixed held-out set. Runs whose loss becomes non-finite are *diverged* and report
``loss = inf``.

**The parametrisations** (:data:`PARAMETRIZATIONS`), written relative to a base width
``n_0`` (``m = width / n_0``, default the smallest width) so that the learning rates and
initial scales of SP and muP agree at ``width == n_0`` and the learning-rate axis means the
same thing for both there:

| weights | SP init variance | SP Adam LR | muP init variance | muP Adam LR |
| --- | --- | --- | --- | --- |
| input ``W_1`` (``d_in x n``) | ``1/d_in`` | ``eta`` | ``1/d_in`` | ``eta`` |
| hidden (``n x n``) | ``1/n`` | ``eta`` | ``1/n`` | ``eta / m`` |
| output (``n x d_out``) | ``1/n`` | ``eta`` | ``0`` (see below) | ``eta / m`` |

The muP columns are Tensor Programs V, Table 3 (muP for Adam: input weights init
variance ``1/fan_in`` and LR constant; hidden weights ``1/fan_in`` and LR ``1/fan_in``;
output weights ``1/fan_in**2`` and LR ``1/fan_in``), with every width-dependent factor
divided by its value at ``n_0`` (hyperparameters are tuned at a base width and the
rules carry them to the others, the paper's muTransfer). Table 3 writes the output rule
without a multiplier; an output multiplier ``1/m`` on weights of variance ``1/n`` and LR
``eta`` is the same network under Adam (Adam's update does not depend on the gradient's
scale). muP's output weights start at zero, the wide limit of Table 3's ``1/(n m)``
variance: with a random readout only the narrow models start with a random output that
training must first undo, which favours larger learning rates at small width and blurs
the transfer being measured. SP keeps its usual random readout.

**Optimizer and task sizes.** Adam with ``beta1 = 0.9, beta2 = 0.95`` (the LLM
pretraining setting, e.g. DeepSeek LLM's AdamW), constant learning rate, batches of 16,
200 steps. With ``beta2 = 0.999`` the second moment remembers a blow-up for ~1000 steps
and damps SP's instability into a slow crawl; with batches of 64 the loss near the best
learning rate is flat to within 1%, so the argmin on the grid moves by noise. Both
choices sharpen the optimum for SP and muP alike; neither changes the rules above.

**Why the default depth is 1.** With two or more hidden layers the ``n x n`` matrices
dominate: at width 2048, eight learning rates and three seeds, one step is about 1e10
FLOPs, several minutes for a sweep on two cores. With one hidden layer the cost is
linear in the width: the full sweep (widths 64-2048, nine learning rates, three seeds,
both parametrisations) took about 23 s of CPU time here. The drift is still real there: under SP, Adam moves every
output weight by about ``eta`` per step and the output sums ``n`` such changes
against activations of size 1, so the output's step grows like ``n`` and the best
``eta`` falls like ``1/n``; muP's ``1/m`` output rule removes that. :func:`coord_check`
takes ``depth=2`` cheaply (one run per width) and shows the hidden layer too.

**Vectorisation.** All learning rates of a seed train together: every weight carries a
leading learning-rate axis ``L`` and each layer is one batched ``np.matmul`` over it; the
inputs are shared (broadcast) across that axis. Seeds run one after the other (the
memory of ``L`` copies of Adam's state at width 2048 is enough).

**Numerics and determinism.** Weights, activations, gradients and Adam's moments are
float32 (as in mixed-precision training; the matmuls accumulate in float32); losses are
reduced in float64. Adam's ``eps`` is 1e-12 rather than the usual 1e-8 because muP's
output gradients shrink like ``1/n`` and a fixed ``eps`` would otherwise silently damp
the widest models. A run's numbers depend only on its seed, width and learning rate:
the initial weights and the data stream come from ``numpy.random.default_rng`` seeded
by ``(task.seed, seed)`` (data) and ``(task.seed, seed, width)`` (weights), and each
learning rate's slice of a batched matmul is its own single-threaded BLAS call, so a run
gives the same bits whichever other learning rates share its batch and however many
threads the process has.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from .checks import check_int as _check_int

#: The parametrisations :func:`mup_experiment` knows.
PARAMETRIZATIONS = ("sp", "mup")

#: Default widths of the full experiment: 64 to 2048, a factor 32.
DEFAULT_WIDTHS = (64, 128, 256, 512, 1024, 2048)
#: Default learning-rate grid: powers of two, one grid step = a factor 2.
DEFAULT_LRS = tuple(2.0 ** k for k in range(-12, -3))

_ADAM_BETA1 = 0.9
# 0.95 as in LLM pretraining; see the module docstring for why not 0.999.
_ADAM_BETA2 = 0.95
_ADAM_EPS = 1e-12  # see the module docstring: muP's output gradients scale like 1/width


@dataclass(frozen=True)
class MLPTask:
    """The fixed synthetic task: regress a random teacher MLP's outputs.

    d_in: input dimension; d_out: output dimension; teacher_width: hidden units of the
    teacher (one tanh layer); batch_size: examples per Adam step; n_test: held-out
    examples for the final loss; seed: seeds the teacher and, with each run's seed,
    the data.
    """

    d_in: int = 32
    d_out: int = 4
    teacher_width: int = 64
    batch_size: int = 16
    n_test: int = 1024
    seed: int = 20220307  # fixed: the task is part of the experiment, not a random draw

    def __post_init__(self) -> None:
        for name in ("d_in", "d_out", "teacher_width", "batch_size", "n_test"):
            _check_int(name, getattr(self, name), 1)
        _check_int("seed", self.seed, 0)

    def teacher(self):
        """``(U, V, scale)``: teacher weights and the factor that gives targets unit variance."""
        rng = np.random.default_rng([self.seed, 0])
        u = rng.standard_normal((self.d_in, self.teacher_width)) / np.sqrt(self.d_in)  # (d, t)
        v = rng.standard_normal((self.teacher_width, self.d_out)) / np.sqrt(self.teacher_width)  # (t, k)
        probe = rng.standard_normal((8192, self.d_in))  # (P, d)
        scale = 1.0 / float(np.std(np.tanh(probe @ u) @ v))
        return u, v, scale

    def targets(self, x: np.ndarray, teacher) -> np.ndarray:
        u, v, scale = teacher
        return (scale * (np.tanh(x @ u) @ v)).astype(np.float32)  # (..., k)


# ------------------------------------------------------------------------ validation


def _check_parametrization(parametrization) -> str:
    if parametrization not in PARAMETRIZATIONS:
        raise ValueError(f"parametrization must be one of {PARAMETRIZATIONS}, got {parametrization!r}")
    return parametrization


def _int_tuple(name: str, values, minimum: int) -> tuple[int, ...]:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError(f"{name} must be a sequence of integers, got {type(values).__name__}")
    out = tuple(_check_int(name, v, minimum) for v in values)
    if not out:
        raise ValueError(f"{name} must not be empty")
    if len(set(out)) != len(out):
        raise ValueError(f"{name} must not repeat values, got {out}")
    return out


def _lr_array(lrs) -> np.ndarray:
    if isinstance(lrs, (str, bytes)):
        raise TypeError("lrs must be a sequence of positive numbers")
    try:
        arr = np.asarray(lrs, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise TypeError(f"lrs must be a sequence of positive numbers, got {type(lrs).__name__}") from None
    if arr.size == 0:
        raise ValueError("lrs must not be empty")
    if not np.all(np.isfinite(arr) & (arr > 0)):
        raise ValueError(f"lrs must be positive and finite, got {arr[~(np.isfinite(arr) & (arr > 0))][0]!r}")
    if np.unique(arr).size != arr.size:
        raise ValueError("lrs must not repeat values")
    return arr


# ---------------------------------------------------------------------- the network


def layer_rules(parametrization: str, width: int, base_width: int, d_in: int, depth: int):
    """Per-layer ``(fan_in, fan_out, init_std, lr_multiplier)`` for one parametrisation.

    The rules of the table in the module docstring (Tensor Programs V, Table 3,
    relative to ``base_width``).
    """
    m = width / base_width
    mup = parametrization == "mup"
    rules = [(d_in, width, 1.0 / np.sqrt(d_in), 1.0)]
    for _ in range(depth - 1):
        rules.append((width, width, 1.0 / np.sqrt(width), 1.0 / m if mup else 1.0))
    # muP's readout starts at zero (the wide limit of Table 3's variance; see the module docstring).
    return rules, (0.0 if mup else 1.0 / np.sqrt(width)), (1.0 / m if mup else 1.0)


def _init_weights(task: MLPTask, parametrization: str, width: int, base_width: int, depth: int, seed: int):
    """Initial weights (float32) and per-layer LR multipliers of one (seed, width)."""
    hidden, out_std, out_lr = layer_rules(parametrization, width, base_width, task.d_in, depth)
    rng = np.random.default_rng([task.seed, seed, width])
    weights, lr_mult = [], []
    for fan_in, fan_out, std, mult in hidden:
        weights.append((std * rng.standard_normal((fan_in, fan_out))).astype(np.float32))  # (fan_in, fan_out)
        lr_mult.append(mult)
    weights.append((out_std * rng.standard_normal((width, task.d_out))).astype(np.float32))  # (n, k)
    lr_mult.append(out_lr)
    return weights, lr_mult


def _forward(weights, x):
    """Pre-activations of every hidden layer and the output; ``x`` is (B, d) or (L, B, d)."""
    pre = []
    h = x
    for w in weights[:-1]:
        z = np.matmul(h, w)  # (L, B, n)
        pre.append(z)
        h = np.maximum(z, 0.0)
    return pre, np.matmul(h, weights[-1])  # (L, B, k)


def _adam_step(task: MLPTask, teacher, data_rng, w, m1, m2, step_lr, t: int) -> None:
    """One Adam step on a fresh mini-batch, in place, for all L copies at once."""
    x = data_rng.standard_normal((task.batch_size, task.d_in)).astype(np.float32)  # (B, d)
    y = task.targets(x, teacher)  # (B, k)
    pre, out = _forward(w, x)
    g = (out - y) * np.float32(1.0 / task.batch_size)  # (L, B, k) d(loss)/d(out)
    acts = [x] + [np.maximum(z, 0.0) for z in pre]  # the input of each weight
    grads = [None] * len(w)
    for i in range(len(w) - 1, -1, -1):
        a = acts[i]
        grads[i] = np.matmul(np.swapaxes(a, -1, -2), g)  # (L, fan_in, fan_out); x broadcasts over L
        if i > 0:
            g = np.matmul(g, np.swapaxes(w[i], -1, -2)) * (pre[i - 1] > 0)  # (L, B, fan_in)
    bc1 = np.float32(1.0 / (1.0 - _ADAM_BETA1 ** t))
    bc2 = np.float32(1.0 / (1.0 - _ADAM_BETA2 ** t))
    for i in range(len(w)):
        m1[i] *= np.float32(_ADAM_BETA1)
        m1[i] += np.float32(1.0 - _ADAM_BETA1) * grads[i]
        m2[i] *= np.float32(_ADAM_BETA2)
        m2[i] += np.float32(1.0 - _ADAM_BETA2) * np.square(grads[i])
        w[i] -= step_lr[i] * bc1 * m1[i] / (np.sqrt(m2[i] * bc2) + np.float32(_ADAM_EPS))


def _train(task: MLPTask, weights, lr_mult, lrs: np.ndarray, seed: int, steps: int, record=None):
    """Adam on ``L = len(lrs)`` copies of one network at once; weights get a leading L axis.

    ``record(step, pre, out)`` is called with the activations on the test set after every step
    when given (used by :func:`coord_check`). Returns the final test loss per learning rate (L,)
    and the trained weights.
    """
    n_lr = lrs.size
    teacher = task.teacher()
    data_rng = np.random.default_rng([task.seed, seed])
    x_test = data_rng.standard_normal((task.n_test, task.d_in)).astype(np.float32)  # (T, d)
    y_test = task.targets(x_test, teacher)  # (T, k)
    w = [np.broadcast_to(w0, (n_lr,) + w0.shape).copy() for w0 in weights]  # each (L, fan_in, fan_out)
    m1 = [np.zeros_like(a) for a in w]
    m2 = [np.zeros_like(a) for a in w]
    step_lr = [(lrs * mult).astype(np.float32)[:, None, None] for mult in lr_mult]  # each (L, 1, 1)
    alive = np.ones(n_lr, dtype=bool)  # (L,)
    # One BLAS thread: these matmuls are small, and a threaded BLAS spent 400x longer spinning
    # than computing on this shared 2-core machine; one thread also fixes the summation order.
    with np.errstate(over="ignore", invalid="ignore"), threadpool_limits(1, user_api="blas"):
        for t in range(1, steps + 1):
            _adam_step(task, teacher, data_rng, w, m1, m2, step_lr, t)
            if record is not None:
                pre_t, out_t = _forward(w, x_test)
                record(t, pre_t, out_t)
            if t % 16 == 0 or t == steps:
                # Diverged copies would spread inf/NaN through BLAS and slow it down; freeze them at zero.
                finite = np.ones(n_lr, dtype=bool)
                for a in w:
                    finite &= np.isfinite(a).all(axis=(1, 2))
                dead = alive & ~finite
                if dead.any():
                    alive &= finite
                    for a in w + m1 + m2:
                        a[dead] = 0.0
    with np.errstate(over="ignore", invalid="ignore"), threadpool_limits(1, user_api="blas"):
        _, out = _forward(w, x_test)
        err = (out.astype(np.float64) - y_test) ** 2  # (L, T, k)
        loss = 0.5 * err.mean(axis=(1, 2))  # (L,)
    loss = np.where(alive & np.isfinite(loss), loss, np.inf)
    return loss, w


# ----------------------------------------------------------------------- experiments


def mup_experiment(*, widths=DEFAULT_WIDTHS, lrs=DEFAULT_LRS, parametrization="mup", seeds=(0, 1, 2),
                   steps: int = 200, depth: int = 1, base_width: int | None = None,
                   task: MLPTask = MLPTask()) -> pd.DataFrame:
    """Train the MLP at every width, learning rate and seed; return the final test losses.

    Parameters
    ----------
    widths : sequence of int
        Hidden widths (each >= 1).
    lrs : sequence of float
        Base Adam learning rates ``eta`` (the rules of :func:`layer_rules` scale them per layer).
    parametrization : {"mup", "sp"}
    seeds : sequence of int
        One run per seed: its own initial weights and data stream.
    steps : int
        Adam steps per run.
    depth : int
        Hidden layers (1 by default; see the module docstring for the cost of more).
    base_width : int, optional
        Width at which SP and muP coincide; default the smallest width.
    task : MLPTask

    Returns
    -------
    DataFrame with columns ``width, lr, seed, loss`` (loss: half MSE on held-out data, ``inf``
    for a diverged run) and ``parametrization``.
    """
    parametrization = _check_parametrization(parametrization)
    widths = _int_tuple("widths", widths, 1)
    seeds = _int_tuple("seeds", seeds, 0)
    lr_arr = _lr_array(lrs)
    steps = _check_int("steps", steps, 1)
    depth = _check_int("depth", depth, 1)
    if not isinstance(task, MLPTask):
        raise TypeError(f"task must be an MLPTask, got {type(task).__name__}")
    base = min(widths) if base_width is None else _check_int("base_width", base_width, 1)
    rows = []
    for width in widths:
        for seed in seeds:
            w0, mult = _init_weights(task, parametrization, width, base, depth, seed)
            loss, _ = _train(task, w0, mult, lr_arr, seed, steps)
            rows.append(pd.DataFrame({"width": width, "lr": lr_arr, "seed": seed, "loss": loss}))
    df = pd.concat(rows, ignore_index=True)
    df["parametrization"] = parametrization
    return df


def best_lr_table(results: pd.DataFrame) -> pd.DataFrame:
    """Best learning rate on the grid per width (lowest loss averaged over seeds).

    A learning rate where any seed diverged counts as diverged (mean ``inf``). Returns columns
    ``width, best_lr, best_loss, grid_index`` (``grid_index`` counts grid steps from the
    smallest learning rate).
    """
    for col in ("width", "lr", "seed", "loss"):
        if col not in results.columns:
            raise ValueError(f"results must have a {col!r} column (from mup_experiment)")
    grid = np.sort(results["lr"].unique())
    mean = results.groupby(["width", "lr"])["loss"].mean().unstack("lr").reindex(columns=grid)  # (W, L)
    idx = np.argmin(mean.to_numpy(), axis=1)
    return pd.DataFrame({"width": mean.index.to_numpy(), "best_lr": grid[idx],
                         "best_loss": mean.to_numpy()[np.arange(len(idx)), idx], "grid_index": idx})


def coord_check(*, widths=DEFAULT_WIDTHS, parametrization="mup", lr: float = 2.0 ** -6, steps: int = 5,
                seeds=(0, 1), depth: int = 2, base_width: int | None = None,
                task: MLPTask = MLPTask()) -> pd.DataFrame:
    """The coordinate check: how big each layer's activations are after a few Adam steps, by width.

    Trains one network per (width, seed) at learning rate ``lr`` and records, on the held-out
    inputs after every step, the mean absolute coordinate of every hidden layer's
    pre-activation and of the output. Under muP these stay the same size as the width grows;
    under SP the layers fed by ``n``-wide weights that Adam updates grow with the width (Tensor
    Programs V, Sec. "coordinate check" and its figures of activation size against width).

    Returns
    -------
    DataFrame with columns ``width, seed, step, layer, mean_abs, mean_abs_delta`` (the second
    is the mean absolute change since initialisation), ``layer`` being ``"hidden1"``, ... and
    ``"output"``.
    """
    parametrization = _check_parametrization(parametrization)
    widths = _int_tuple("widths", widths, 1)
    seeds = _int_tuple("seeds", seeds, 0)
    lr_arr = _lr_array([lr])
    steps = _check_int("steps", steps, 1)
    depth = _check_int("depth", depth, 1)
    base = min(widths) if base_width is None else _check_int("base_width", base_width, 1)
    rows = []
    for width in widths:
        for seed in seeds:
            w0, mult = _init_weights(task, parametrization, width, base, depth, seed)
            x_test = np.random.default_rng([task.seed, seed]).standard_normal((task.n_test, task.d_in)).astype(np.float32)
            pre0, out0 = _forward(w0, x_test)
            names = [f"hidden{i + 1}" for i in range(depth)] + ["output"]
            start = pre0 + [out0]

            def record(t, pre, out, width=width, seed=seed, names=names, start=start):
                for name, a, a0 in zip(names, pre + [out], start):
                    a = a[0].astype(np.float64)
                    rows.append({"width": width, "seed": seed, "step": t, "layer": name,
                                 "mean_abs": float(np.mean(np.abs(a))),
                                 "mean_abs_delta": float(np.mean(np.abs(a - a0)))})

            _train(task, w0, mult, lr_arr, seed, steps, record=record)
    df = pd.DataFrame(rows)
    df["parametrization"] = parametrization
    return df


__all__ = ["PARAMETRIZATIONS", "DEFAULT_WIDTHS", "DEFAULT_LRS", "MLPTask", "layer_rules",
           "mup_experiment", "best_lr_table", "coord_check"]
