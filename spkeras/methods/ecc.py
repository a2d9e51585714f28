"""Explicit current control (ECC), the paper's method, in one place.

ECC is three ingredients on top of the unifying framework (Proposition 1, Eq. 2–6):

* **CN**, current normalisation (Eq. 7–8): every spiking layer gets threshold V_thr = κ_n and
  W ← κ_n λ_{n-1}/λ_n · W, b ← κ_n b/λ_n, so a layer's largest CNN activation drives one spike
  per step. The framework applies the weight scaling for any threshold; CN chooses κ.
* **TRE**, thresholding for residual elimination (Eq. 9–10): η·V_thr of extra charge per neuron,
  spread over T steps as a per-step bias (Eq. 9) or, as an option, given at once as V(0).
* **CMB**, consistency maintenance for batch-norm (Eq. 11–12): fold BN with its own ε
  (:func:`spkeras.passes.fold_batchnorm` with ``use_eps=True``).

Input is encoded by Algorithm 1 with κ₀ = 100, λ_n is the maximum activation and neurons reset
by subtraction; average-pooling layers get spiking neurons too, as the paper's tool does.
"""

from __future__ import annotations

from ..method import Method

KAPPA = 100.0  # κ_n, the current amplification factor of every layer (section 4)
ETA = 0.5      # η, "a typical value" (section 3.3.2)


def cn_threshold(kappa: float) -> float:
    """CN threshold V_thr^n = κ_n (Eq. 8)."""
    return kappa


def tre_step_current(eta: float, threshold: float, timesteps: int) -> float:
    """TRE bias added at every step, η·V_thr/T (Eq. 9)."""
    return eta * threshold / timesteps


def tre_initial_potential(eta: float, threshold: float) -> float:
    """TRE as an initial membrane potential V(0) = η·V_thr (the same charge, given at t = 0)."""
    return eta * threshold


ECC = Method(
    name="ecc",
    citation="Wu, Yi & Huang, 'A Little Energy Goes a Long Way' (explicit current control)",
    cn=True,
    kappa=KAPPA,
    tre="spread",
    eta=ETA,
    cmb=True,
    statistic="max",
    reset="subtract",
    encoding="algorithm1",
    kappa0=KAPPA,
    spiking_pools=True,
)
