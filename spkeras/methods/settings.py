"""The switches of the one conversion framework; every method is a preset of them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..errors import ConfigError

CHOICES = {
    "threshold_rule": ("normalise", "balance"),
    "statistic": ("max", "percentile", "model", "none", "spikenorm"),
    "rounding": ("nearest", "trunc"),
    "tre": ("off", "spread", "initial"),
    "reset": ("subtract", "zero"),
    "encoding": ("analog", "algorithm1", "poisson"),
    "readout": ("spikes", "potential"),
}


@dataclass(frozen=True)
class Method:
    """A conversion method as a set of switches over Proposition 1 (Eq. 2–6).

    threshold_rule: ``normalise`` scales weights so the current reaching layer n is in units of
        λ_n/V_thr (weight normalisation, Remark 1); ``balance`` keeps weights and sets
        V_thr so the same holds (threshold balancing).
    cn, kappa: with ``normalise``, V_thr = κ when ``cn`` (ECC's CN, Eq. 8), else V_thr = 1.
    statistic, percentile: λ_n is the maximum activation, a percentile, the largest activation
        the weights allow (``model``, Diehl et al.'s model-based normalisation), 1 (``none``: no
        normalisation at all), or, with ``balance``, set layer by layer from the largest current
        each layer receives in a spiking simulation of the layers below it (``spikenorm``).
    threshold_scale: multiplies every V_thr after normalisation, weights kept (RMP's α).
    tre, eta: TRE (Eq. 9) spread over T, as an initial potential, or off.
    cmb: fold batch-norm with its ε (Eq. 11–12); off folds without ε.
    reset: reset by subtraction (Eq. 2) or to zero.
    encoding, kappa0: analog current, Algorithm 1 with threshold κ₀, or Bernoulli (Poisson) spikes.
    spiking_pools: average-pooling layers get their own spiking neurons.
    readout: the output layer's spike count, or its membrane potential (non-firing).
    readout_delay: read only what the output accumulates after this many steps (0: all).
    readout_delay_fraction: at conversion for T steps, sets readout_delay = ⌊fraction·T⌋.
    delay_calibration_images: at conversion, choose the readout delay fraction that agrees best
        with the CNN on this many calibration images (0: off; it replaces readout_delay_fraction).
    bits, rounding: b-bit signed fixed-point weights and integer thresholds (section 4.4).
    spikenorm_timesteps, spikenorm_images: the calibration simulation of ``spikenorm``.
    rate_calibration, rate_calibration_images: rounds of per-channel rate correction towards the
        rate model after T steps, on that many calibration images (0: off).
    potential_share: the fraction of each rate correction given at once as a per-channel initial
        membrane potential (T·e·V_thr) rather than spread as bias (e·V_thr per step).
    """

    name: str = "custom"
    citation: str = ""
    threshold_rule: str = "normalise"
    cn: bool = True
    kappa: float = 100.0
    statistic: str = "max"
    percentile: float = 99.9
    threshold_scale: float = 1.0
    tre: str = "off"
    eta: float = 0.5
    cmb: bool = True
    reset: str = "subtract"
    encoding: str = "analog"
    kappa0: float = 100.0
    spiking_pools: bool = True
    readout: str = "spikes"
    readout_delay: int = 0
    readout_delay_fraction: float = 0.0
    delay_calibration_images: int = 0
    bits: int | None = None
    rounding: str = "trunc"
    spikenorm_timesteps: int = 64
    spikenorm_images: int = 50
    rate_calibration: int = 0
    rate_calibration_images: int = 256
    potential_share: float = 0.0

    def __post_init__(self):
        for field, allowed in CHOICES.items():
            if getattr(self, field) not in allowed:
                raise ConfigError(f"{field} must be one of {', '.join(allowed)}; got {getattr(self, field)!r}")
        if not 0 <= self.eta < 1:
            raise ConfigError(f"eta must be in [0, 1), got {self.eta}")
        if self.bits is not None and not 2 <= self.bits <= 32:
            raise ConfigError(f"bits must be between 2 and 32, got {self.bits}")
        if self.statistic == "spikenorm" and self.threshold_rule != "balance":
            raise ConfigError("statistic spikenorm sets thresholds, so it needs threshold_rule balance")
        if not 0 <= self.readout_delay_fraction < 1:
            raise ConfigError(f"readout_delay_fraction must be in [0, 1), got {self.readout_delay_fraction}")
        if self.readout_delay < 0:
            raise ConfigError(f"readout_delay must be ≥ 0, got {self.readout_delay}")
        if not 0 <= self.potential_share <= 1:
            raise ConfigError(f"potential_share must be in [0, 1], got {self.potential_share}")
        if self.delay_calibration_images < 0:
            raise ConfigError(f"delay_calibration_images must be ≥ 0, got {self.delay_calibration_images}")
        if self.rate_calibration < 0:
            raise ConfigError(f"rate_calibration must be ≥ 0, got {self.rate_calibration}")
        for field in ("kappa", "kappa0", "threshold_scale", "spikenorm_timesteps", "spikenorm_images",
                      "rate_calibration_images"):
            if not getattr(self, field) > 0:
                raise ConfigError(f"{field} must be positive, got {getattr(self, field)}")
        if not 0 < self.percentile <= 100:
            raise ConfigError(f"percentile must be in (0, 100], got {self.percentile}")

    def with_options(self, **changes) -> "Method":
        """A copy with some switches changed; unknown switch names raise ConfigError."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ConfigError(f"unknown method option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Method":
        return cls().with_options(**data)
