"""Conversion methods as presets of the one framework (Proposition 1, Remark 1)."""

from __future__ import annotations

from ..errors import ConfigError
from .ecc import ECC
from ..method import Method

RUECKAUER2017 = Method(
    name="rueckauer2017",
    citation="Rueckauer et al. 2017, 'Conversion of continuous-valued deep networks to efficient "
    "event-driven networks for image classification' (the paper's 2017-SNN)",
    cn=False,                 # V_thr = 1: data-based weight normalisation
    statistic="percentile",   # λ = 99.9th percentile of positive activations
    percentile=99.9,
    tre="off",
    cmb=True,                 # BN folded with its ε
    reset="subtract",
    encoding="analog",        # constant input current
)

# The methods below were published for networks without biases. Biases, where a network has
# them, are carried as a per-step input current, normalised like the weights.

RMP = Method(
    name="rmp",
    citation="Han, Srinivasan & Roy 2020, 'RMP-SNN: residual membrane potential neuron' (the paper's RMP-SNN)",
    threshold_rule="balance",  # weights unchanged, V_thr^n = λ_n in units of the layer's input
    statistic="max",
    threshold_scale=1.0,       # α: the paper compares 0.8 and 0.9 (presets rmp0.8, rmp0.9)
    tre="off",
    reset="subtract",
    encoding="analog",
)

SPIKENORM = Method(
    name="spikenorm",
    citation="Sengupta et al. 2019, 'Going deeper in spiking neural networks: VGG and residual architectures'",
    threshold_rule="balance",  # weights unchanged
    statistic="spikenorm",     # V_thr^n = largest current into layer n with layers below already spiking
    tre="off",
    reset="zero",
    encoding="poisson",
)

DIEHL2015 = Method(
    name="diehl2015",
    citation="Diehl et al. 2015, 'Fast-classifying, high-accuracy spiking deep networks through weight and "
    "threshold balancing'",
    cn=False,                  # V_thr = 1: weight normalisation
    statistic="max",           # data-based; statistic='model' gives model-based normalisation
    tre="off",
    reset="zero",
    encoding="poisson",
)

CAO2015 = Method(
    name="cao2015",
    citation="Cao, Chen & Khosla 2015, 'Spiking deep convolutional neural networks for energy-efficient "
    "object recognition'",
    cn=False,                  # V_thr = 1
    statistic="none",          # no normalisation: weights as trained
    tre="off",
    reset="zero",
    encoding="poisson",
)

# ECC tuned for time-stepped simulation at low T (docs/low-latency.md): the same CN, CMB and λ,
# with TRE given at once as V(0) = η·V_thr, average pools folded into the next layer's synapses
# (no spiking neurons after them), a per-step, per-channel correction of each layer's input current
# towards the rate model's while the layers below fill, one round of per-channel rate correction
# towards the rate model, both on 128 calibration images, the rate correction given all as
# initial potential (none as bias, which would also drive the late steps), and the output read from
# its membrane potential accumulated after a delay chosen on 256 calibration images.
ECC_PLUS = ECC.with_options(
    name="ecc+",
    citation="ECC (Wu, Yi & Huang) with low-latency switches chosen on held-out calibration images",
    tre="initial",
    spiking_pools=False,
    readout="potential",
    delay_calibration_images=256,
    step_bias=True,
    rate_calibration=1,
    rate_calibration_images=128,
    potential_share=1.0,
)

PRESETS: dict[str, Method] = {
    m.name: m for m in (
        ECC, ECC_PLUS, RUECKAUER2017, RMP, RMP.with_options(name="rmp0.8", threshold_scale=0.8),
        RMP.with_options(name="rmp0.9", threshold_scale=0.9), SPIKENORM, DIEHL2015, CAO2015,
    )
}


def get_method(name: str, **overrides) -> Method:
    """The preset called ``name`` with some switches overridden (None values are ignored)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown method {name!r}; available: {', '.join(PRESETS)}")
    changes = {k: v for k, v in overrides.items() if v is not None}
    if "readout_delay" in changes or "readout_delay_fraction" in changes:  # replaces the preset's choice
        if changes.get("readout_delay") and changes.get("readout_delay_fraction"):
            raise ConfigError("give the readout delay in steps or as a fraction of T, not both")
        changes.setdefault("readout_delay_fraction", 0.0)
        changes.setdefault("delay_calibration_images", 0)
    return PRESETS[name].with_options(**changes) if changes else PRESETS[name]
