"""Scaling laws of language-model pretraining and their published fits.

Two functional forms, one interface (``loss``, ``compute_optimal``,
``tokens_per_parameter``, ``optimal_loss``, ``exponents``, ``isoflop``,
``tokens_for_loss``, ``min_params_for_loss``):

* :class:`ScalingLaw`: Hoffmann et al. 2022's ``L(N, D) = E + A / N**alpha + B / D**beta``
  (N parameters, D training tokens). Under ``C = 6 N D`` the optimum is closed form:
  ``N_opt = G (C/6)**a``, ``D_opt = (C/6)**b / G`` with ``a = beta/(alpha+beta)``,
  ``b = alpha/(alpha+beta)``, ``G = (alpha A / (beta B))**(1/(alpha+beta))``.
* :class:`KaplanLaw`: Kaplan et al. 2020's ``L(N, D) = [(Nc/N)**(aN/aD) + Dc/D]**aD``;
  its compute-optimal allocation is their empirical ``N_opt ~ C**0.73``.

The published constants (with citations) and the presets built from them
(:data:`LAWS`, :func:`get_law`) live here too, with the FLOP accounting
``C = 6 N D`` they all share.

Units: N in parameters, D in tokens, C in FLOPs, loss in nats per token.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scalelab.simulations.checks import as_positive_array as _positive
from scalelab.simulations.checks import float_or_array as _out
from scalelab.simulations.checks import lookup_preset

# ----------------------------------------------------------------------------- constants

#: Training FLOPs per parameter per token: 2 (multiply-accumulate) x 3 (forward + backward);
#: Kaplan et al. 2020 Sec. 2.1, used throughout Hoffmann et al. 2022 (C = 6ND).
TRAINING_FLOPS_PER_PARAM_TOKEN = 6.0

#: Inference FLOPs per parameter per generated or processed token (forward pass only);
#: Sardana et al. 2023, "Beyond Chinchilla-Optimal", Sec. 2 (2N FLOPs per inference token).
INFERENCE_FLOPS_PER_PARAM_TOKEN = 2.0

#: Hoffmann et al. 2022 (arXiv 2203.15556), Approach 3 fit as printed in Eq. (10), App. D.2.
HOFFMANN2022_APPROACH3 = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}

#: Besiroglu, Erdil, Barnett & You 2024, "Chinchilla Scaling: A replication attempt"
#: (arXiv 2404.10102): their Approach-3 refit on the 240 runs extracted from Hoffmann et al.'s
#: Figure 4 (5 highest-loss runs dropped), and its bootstrap standard errors.
BESIROGLU2024_ESTIMATES = {"E": 1.8172, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}
BESIROGLU2024_STANDARD_ERRORS = {"E": 0.026, "A": 124.52, "B": 1293.28, "alpha": 0.0154, "beta": 0.0206}
#: Runs they dropped (the highest final losses) and the bootstrap size they used.
BESIROGLU2024_DROPPED_RUNS = 5
BESIROGLU2024_N_BOOTSTRAP = 4000

#: Kaplan et al. 2020 (arXiv 2001.08361), joint law L(N, D), Eq. (1.5) with the fit of Table 2.
KAPLAN2020_JOINT = {"alpha_N": 0.076, "alpha_D": 0.103, "N_c": 6.4e13, "D_c": 1.8e13}
#: Kaplan et al.'s compute-efficient allocation N_opt ~ C**0.73 (Kaplan et al. 2020 Sec. 6.1,
#: Fig. 14; listed as a = 0.73 in Hoffmann et al. 2022 Table 2).
KAPLAN2020_ALLOCATION_EXPONENT = 0.73
#: Anchor of that allocation: at 1e21 FLOPs Kaplan et al.'s rule gives 4.68e9 parameters
#: (Hoffmann et al. 2022, App. D.4).
KAPLAN2020_ALLOCATION_ANCHOR = {"flops": 1e21, "params": 4.68e9}


# ------------------------------------------------------------------------------ the laws


class _LawBase:
    """What every law derives from its own ``loss(N, D)`` and ``compute_optimal(C)``."""

    def tokens_per_parameter(self, C):
        """``D_opt / N_opt`` at budget C."""
        n, d = self.compute_optimal(C)
        return _out(np.asarray(d) / np.asarray(n))

    def optimal_loss(self, C):
        """Loss at the compute-optimal allocation for budget C."""
        n, d = self.compute_optimal(C)
        return self.loss(n, d)

    def isoflop(self, C, N):
        """Loss along the budget ``C``: N parameters trained on ``D = C / (6N)`` tokens."""
        C = _positive("C", C)
        N = _positive("N", N)
        return self.loss(N, C / (TRAINING_FLOPS_PER_PARAM_TOKEN * N))


@dataclass(frozen=True)
class ScalingLaw(_LawBase):
    """``L(N, D) = E + A / N**alpha + B / D**beta`` (Hoffmann et al. 2022, Eq. 2).

    E: irreducible loss (nats/token); A, B: coefficients; alpha, beta: exponents (> 0).
    Every method is vectorized: array arguments broadcast, scalars give floats.
    """

    E: float  # irreducible loss, nats/token (>= 0)
    A: float  # coefficient of the parameter term
    B: float  # coefficient of the data term
    alpha: float  # exponent of N
    beta: float  # exponent of D
    name: str = "custom"  # preset key in LAWS
    source: str = ""  # citation: paper, equation or table
    note: str = ""  # caveat a reader of the numbers should know

    def __post_init__(self) -> None:
        _positive("E", self.E, allow_zero=True)
        for key in ("A", "B", "alpha", "beta"):
            _positive(key, getattr(self, key))

    @property
    def irreducible_loss(self) -> float:
        return float(self.E)

    def loss(self, N, D):
        """Predicted loss of N parameters trained on D tokens."""
        N = _positive("N", N)
        D = _positive("D", D)
        return _out(self.E + self.A * N ** -self.alpha + self.B * D ** -self.beta)

    @property
    def exponents(self) -> tuple[float, float]:
        """``(a, b)`` with ``N_opt ~ C**a`` and ``D_opt ~ C**b`` (Hoffmann et al. 2022, Eq. 4)."""
        s = self.alpha + self.beta
        return self.beta / s, self.alpha / s

    @property
    def G(self) -> float:
        """``(alpha A / (beta B))**(1/(alpha+beta))`` of the closed-form optimum."""
        return (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / (self.alpha + self.beta))

    def compute_optimal(self, C):
        """``(N_opt, D_opt)`` minimising the loss at ``C = 6 N D`` FLOPs (closed form)."""
        C = _positive("C", C)
        a, b = self.exponents
        x = C / TRAINING_FLOPS_PER_PARAM_TOKEN
        return _out(self.G * x**a), _out(x**b / self.G)

    def tokens_for_loss(self, N, target_loss):
        """Tokens D at which N parameters reach ``target_loss``; ``inf`` where N cannot reach it."""
        N = _positive("N", N)
        target = _positive("target_loss", target_loss)
        gap = target - self.E - self.A * N ** -self.alpha
        with np.errstate(divide="ignore"):
            d = np.where(gap > 0, (self.B / np.where(gap > 0, gap, 1.0)) ** (1.0 / self.beta), np.inf)
        return _out(d)

    def min_params_for_loss(self, target_loss):
        """Smallest N that reaches ``target_loss`` with unlimited data (D -> inf)."""
        target = _positive("target_loss", target_loss)
        if np.any(target <= self.E):
            raise ValueError(f"target_loss must exceed the irreducible loss E = {self.E:g}, got {target_loss!r}")
        return _out((self.A / (target - self.E)) ** (1.0 / self.alpha))


@dataclass(frozen=True)
class KaplanLaw(_LawBase):
    """Kaplan et al. 2020's joint law ``L(N, D) = [(N_c/N)**(alpha_N/alpha_D) + D_c/D]**alpha_D``.

    Its compute-optimal allocation is Kaplan et al.'s empirical rule ``N_opt ~ C**0.73``
    (anchored at ``anchor_params`` parameters for ``anchor_flops``), with
    ``D_opt = C / (6 N_opt)``: it is *not* the minimiser of this ``loss`` at fixed C
    (Kaplan et al. fitted the allocation on early-stopped, fixed-schedule runs).
    """

    alpha_N: float  # exponent of N
    alpha_D: float  # exponent of D
    N_c: float  # parameters (non-embedding) of the N scale
    D_c: float  # tokens of the D scale
    allocation_exponent: float  # a in N_opt ~ C**a, in (0, 1)
    anchor_flops: float  # budget C of the allocation's anchor point, FLOPs
    anchor_params: float  # N_opt at anchor_flops, parameters
    name: str = "custom"  # preset key in LAWS
    source: str = ""  # citation: paper, equation or table
    note: str = ""  # caveat a reader of the numbers should know

    def __post_init__(self) -> None:
        for key in ("alpha_N", "alpha_D", "N_c", "D_c", "anchor_flops", "anchor_params"):
            _positive(key, getattr(self, key))
        if not 0.0 < self.allocation_exponent < 1.0:
            raise ValueError(f"allocation_exponent must be in (0, 1), got {self.allocation_exponent!r}")

    @property
    def irreducible_loss(self) -> float:
        return 0.0

    def loss(self, N, D):
        N = _positive("N", N)
        D = _positive("D", D)
        return _out(((self.N_c / N) ** (self.alpha_N / self.alpha_D) + self.D_c / D) ** self.alpha_D)

    @property
    def exponents(self) -> tuple[float, float]:
        a = self.allocation_exponent
        return a, 1.0 - a

    def compute_optimal(self, C):
        C = _positive("C", C)
        n = self.anchor_params * (C / self.anchor_flops) ** self.allocation_exponent
        return _out(n), _out(C / (TRAINING_FLOPS_PER_PARAM_TOKEN * n))

    def tokens_for_loss(self, N, target_loss):
        N = _positive("N", N)
        target = _positive("target_loss", target_loss)
        gap = target ** (1.0 / self.alpha_D) - (self.N_c / N) ** (self.alpha_N / self.alpha_D)
        with np.errstate(divide="ignore"):
            d = np.where(gap > 0, self.D_c / np.where(gap > 0, gap, 1.0), np.inf)
        return _out(d)

    def min_params_for_loss(self, target_loss):
        target = _positive("target_loss", target_loss)
        return _out(self.N_c * target ** (-1.0 / self.alpha_N))


def hoffmann2022_law() -> ScalingLaw:
    """Hoffmann et al. 2022, Approach 3 as printed (Eq. 10): E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28.

    The printed constants are rounded, and the rounding moves the optimum: at Gopher's
    budget (5.76e23 FLOPs) this law puts the compute-optimal model at about 32B parameters,
    whereas the paper's Figure 4 (drawn with the unrounded fit) gives 40B. Besiroglu et al.
    2024 discuss the discrepancy; their refit is :func:`besiroglu2024_law`.
    """
    return ScalingLaw(
        **HOFFMANN2022_APPROACH3,
        name="hoffmann2022",
        source="Hoffmann et al. 2022, Training Compute-Optimal Large Language Models (arXiv 2203.15556), "
        "Approach 3, Eq. (10), App. D.2",
        note="Printed constants are rounded: at the Gopher budget 5.76e23 FLOPs they give ~32B parameters, "
        "while the paper's Figure 4 shows 40B.",
    )


def besiroglu2024_law() -> ScalingLaw:
    """Besiroglu et al. 2024's refit of Approach 3 on the Figure-4 runs (arXiv 2404.10102)."""
    return ScalingLaw(
        **BESIROGLU2024_ESTIMATES,
        name="besiroglu2024",
        source="Besiroglu, Erdil, Barnett & You 2024, Chinchilla Scaling: A replication attempt "
        "(arXiv 2404.10102), Approach-3 refit on 240 runs extracted from Hoffmann et al. 2022 Fig. 4",
    )


def kaplan2020_law() -> KaplanLaw:
    """Kaplan et al. 2020's L(N, D) (Eq. 1.5, Table 2) with their N_opt ~ C**0.73 allocation."""
    return KaplanLaw(
        **KAPLAN2020_JOINT,
        allocation_exponent=KAPLAN2020_ALLOCATION_EXPONENT,
        anchor_flops=KAPLAN2020_ALLOCATION_ANCHOR["flops"],
        anchor_params=KAPLAN2020_ALLOCATION_ANCHOR["params"],
        name="kaplan2020",
        source="Kaplan et al. 2020, Scaling Laws for Neural Language Models (arXiv 2001.08361), Eq. (1.5), "
        "Table 2; allocation N_opt ~ C^0.73 (Sec. 6.1) anchored at 4.68e9 parameters for 1e21 FLOPs "
        "(Hoffmann et al. 2022, App. D.4)",
        note="Allocation is Kaplan et al.'s empirical rule, not the minimiser of this L(N, D) at fixed compute.",
    )


#: Presets by name; each carries its citation in ``source``.
LAWS: dict[str, ScalingLaw | KaplanLaw] = {
    "hoffmann2022": hoffmann2022_law(),
    "besiroglu2024": besiroglu2024_law(),
    "kaplan2020": kaplan2020_law(),
}


def get_law(name) -> ScalingLaw | KaplanLaw:
    """The preset called ``name``; a law object passes through."""
    return lookup_preset("law", name, LAWS, (ScalingLaw, KaplanLaw), expected="a preset name or a law object")


def training_flops(N, D):
    """Training compute ``6 N D`` FLOPs for N parameters and D tokens."""
    return _out(TRAINING_FLOPS_PER_PARAM_TOKEN * _positive("N", N) * _positive("D", D))


def training_tokens(dataset_tokens, epochs):
    """Tokens seen when training ``epochs`` (may be fractional) passes over ``dataset_tokens``."""
    return _out(_positive("dataset_tokens", dataset_tokens) * _positive("epochs", epochs))
