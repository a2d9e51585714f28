"""The switches of the one conversion framework (Proposition 1, Eq. 2–6); every method is a preset of them.

This module is the ground floor: it imports nothing of spkeras but :mod:`spkeras.errors`, so the
simulator, the encoders and the file formats can read a :class:`Method` without climbing. Each
switch is defined once, here, with its help text and choices; the CLI's options
(:mod:`spkeras.options`) and the docs' tables are generated from these definitions.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .errors import ConfigError


def switch(default, help: str, choices: tuple = (), flag: str | None = None, metavar: str | None = None,
           internal: bool = False):
    """A method field with its one definition: default, help text, allowed values, CLI flag.

    ``flag`` names the CLI option (default: ``--`` + the field name with dashes); ``internal``
    marks a field that is not a user switch (a preset's name and citation) and has no flag.
    """
    meta = {"help": help, "choices": tuple(choices), "flag": flag, "metavar": metavar, "internal": internal}
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class Method:
    """A conversion method as a set of switches over Proposition 1 (Eq. 2–6).

    Every field's help text (``Method.help(name)``) says what it does; the groups are:
    normalisation (``threshold_rule``, ``cn``/``kappa`` for CN, Eq. 7–8, ``statistic``,
    ``percentile``, ``threshold_scale``), TRE (Eq. 9–10: ``tre``, ``eta``), CMB (Eq. 11–12:
    ``cmb``), neurons and input (``reset``, ``encoding``/``kappa0`` for Algorithm 1,
    ``spiking_pools``, ``maxpool``), readout (``readout``, ``readout_delay``, ``readout_delay_fraction``,
    ``delay_calibration_images``), section 4.4's b-bit weights (``bits``, ``rounding``) and the
    simulation-based calibrations (``spikenorm_*``, ``rate_calibration*``, ``potential_share``).
    """

    name: str = switch("custom", "preset name", internal=True)
    citation: str = switch("", "where the method was published", internal=True)
    threshold_rule: str = switch(
        "normalise", "normalise: scale weights so the current into layer n is in units of λ_n/V_thr (weight "
        "normalisation); balance: keep weights and set V_thr so the same holds (threshold balancing, Remark 1)",
        choices=("normalise", "balance"))
    cn: bool = switch(True, "current normalisation (Eq. 8): V_thr = κ (on) or 1 (off), with threshold_rule normalise")
    kappa: float = switch(100.0, "CN current amplification κ (Eq. 8)")
    statistic: str = switch(
        "max", "λ_n: max activation, a percentile, model (the bound the weights allow, Diehl et al.), none (λ = 1), "
        "or spikenorm (largest current into layer n with the layers below spiking; needs threshold_rule balance)",
        choices=("max", "percentile", "model", "none", "spikenorm"))
    percentile: float = switch(99.9, "percentile of positive activations for statistic percentile, in (0, 100]")
    threshold_scale: float = switch(1.0, "threshold scale α: every V_thr × α after normalisation, weights kept; a "
                                         "spike then stands for α·λ_n, which the layer above takes into account, so "
                                         "α clips each layer at α·λ_n (RMP: 0.8, 0.9)", flag="--alpha", metavar="ALPHA")
    tre: str = switch("off", "TRE (Eq. 9): η·V_thr of charge spread over T as a per-step current, given at once "
                             "as V(0) (initial), or off", choices=("off", "spread", "initial"))
    eta: float = switch(0.5, "TRE η in [0, 1) (Eq. 9)")
    cmb: bool = switch(True, "CMB (Eq. 11–12): fold batch-norm with its ε (on) or without (off)")
    reset: str = switch("subtract", "reset by subtraction (Eq. 2) or to zero", choices=("subtract", "zero"))
    encoding: str = switch("analog", "input: analog current, Algorithm 1 spike trains, or Bernoulli (Poisson) spikes",
                           choices=("analog", "algorithm1", "poisson"))
    kappa0: float = switch(100.0, "Algorithm 1 input threshold κ₀")
    spiking_pools: bool = switch(True, "average-pooling layers get spiking neurons of their own")
    channel_balance: bool = switch(
        False, "balance channels: before λ, rescale each ReLU layer's channels (and the weights that read them, "
               "which leaves the CNN's function unchanged) so that every channel reaches the layer's largest "
               "activation on the calibration images: per-channel thresholds in effect (where the layer feeds "
               "only convs, dense layers and pools)")
    maxpool: str = switch(
        "accumulated", "max pooling: accumulated (the ReLU moves after the pool, max(ReLU(z)) = ReLU(max(z)); the "
        "pool passes the step-to-step change of the largest accumulated input current of its window, so its "
        "neuron integrates exactly the max of the total currents), current (the largest input current at each "
        "step, as LTB and SpikingJelly do: exact only for constant currents) or gate (neurons before the pool; "
        "it passes the spikes of the input with the largest spike count so far, Rueckauer et al. 2017)",
        choices=("accumulated", "current", "gate"))
    readout: str = switch("spikes", "output: its spike count, or its membrane potential (non-firing)",
                          choices=("spikes", "potential"))
    readout_delay: int = switch(0, "read only what the output accumulates after step K (0: from the start); "
                                   "replaces a preset's choice", metavar="K")
    readout_delay_fraction: float = switch(0.0, "readout delay as a fraction of T: K = ⌊F·T⌋, F in [0, 1)",
                                           metavar="F")
    delay_calibration_images: int = switch(
        0, "choose the readout delay (a fraction of T) that agrees best with the CNN on N calibration images "
           "(0: off)", flag="--delay-calibration", metavar="N")
    bits: int | None = switch(None, "b-bit signed fixed-point weights and integer thresholds, 2..32 (section 4.4)")
    rounding: str = switch("trunc", "rounding of --bits weights to integers", choices=("nearest", "trunc"))
    spikenorm_timesteps: int = switch(64, "steps of Spike-Norm's calibration simulation")
    spikenorm_images: int = switch(50, "calibration images of Spike-Norm's simulation", metavar="N")
    rate_calibration: int = switch(0, "rounds of per-channel rate correction towards the rate model after T steps, "
                                      "layer by layer (0: off)", metavar="ROUNDS")
    rate_calibration_images: int = switch(256, "calibration images of the rate correction", metavar="N")
    step_bias: bool = switch(
        False, "per-step current correction: before rate calibration, each spiking layer gets, per channel and "
               "step t, the gap between the rate model's mean input current and the mean it receives at step t "
               "while the layers below fill (measured layer by layer on the rate-calibration images)")
    per_step_rates: bool = switch(
        False, "give the rate correction not spread evenly over the T steps (bias) but step by step, where the "
               "rate fell short: at step t the gap between the rate model and the layer's mean rate at t")
    potential_share: float = switch(0.0, "share in [0, 1] of each rate correction given as initial membrane "
                                         "potential, the rest as bias", metavar="S")

    def __post_init__(self):
        for field in dataclasses.fields(self):
            allowed = field.metadata.get("choices")
            if allowed and getattr(self, field.name) not in allowed:
                raise ConfigError(f"{field.name} must be one of {', '.join(allowed)}; got {getattr(self, field.name)!r}")
            if isinstance(field.default, bool) and not isinstance(getattr(self, field.name), bool):
                # a string such as "False" would otherwise switch the option on
                raise ConfigError(f"{field.name} is on or off: give True or False, got {getattr(self, field.name)!r}")
        if not 0 <= self.eta < 1:
            raise ConfigError(f"eta must be in [0, 1), got {self.eta}")
        if self.bits is not None and not 2 <= self.bits <= 32:
            raise ConfigError(f"bits must be between 2 and 32, got {self.bits}")
        if self.statistic == "spikenorm" and self.threshold_rule != "balance":
            raise ConfigError("statistic spikenorm sets thresholds, so it needs threshold_rule balance")
        if not 0 <= self.readout_delay_fraction < 1:
            raise ConfigError(f"readout_delay_fraction must be in [0, 1), got {self.readout_delay_fraction}")
        if not 0 <= self.potential_share <= 1:
            raise ConfigError(f"potential_share must be in [0, 1], got {self.potential_share}")
        for field in ("readout_delay", "delay_calibration_images", "rate_calibration"):
            if getattr(self, field) < 0:
                raise ConfigError(f"{field} must be ≥ 0, got {getattr(self, field)}")
        for field in ("kappa", "kappa0", "threshold_scale", "spikenorm_timesteps", "spikenorm_images",
                      "rate_calibration_images"):
            if not getattr(self, field) > 0:
                raise ConfigError(f"{field} must be positive, got {getattr(self, field)}")
        if not 0 < self.percentile <= 100:
            raise ConfigError(f"percentile must be in (0, 100], got {self.percentile}")

    # ------------------------------------------------------------------ what the switches imply
    @property
    def depends_on_timesteps(self) -> bool:
        """Whether the network made for T steps differs from the one made for another T: spread
        TRE (η·V_thr/T per step, Eq. 9), a readout delay given as a fraction of T, and the
        calibrations that simulate T steps (rate correction, readout-delay choice)."""
        return (self.tre == "spread" or self.readout_delay_fraction > 0 or self.rate_calibration > 0
                or self.delay_calibration_images > 0 or self.step_bias)

    @property
    def simulates_calibration(self) -> bool:
        """Whether conversion simulates calibration images (Spike-Norm, step-bias, rate or delay calibration)."""
        return (self.statistic == "spikenorm" or self.rate_calibration > 0 or self.delay_calibration_images > 0
                or self.step_bias)

    def preparation_key(self) -> dict:
        """The switches that the T-independent part of conversion (canonical graph and λ) depends on."""
        return {"cmb": self.cmb, "spiking_pools": self.spiking_pools, "maxpool": self.maxpool,
                "channel_balance": self.channel_balance,
                "statistic": self.statistic,
                "percentile": self.percentile if self.statistic == "percentile" else None}

    # ------------------------------------------------------------------ copies and files
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

    @classmethod
    def switches(cls) -> list[dataclasses.Field]:
        """The user-facing switches (every field not marked internal), in definition order."""
        return [f for f in dataclasses.fields(cls) if not f.metadata["internal"]]


CHOICES = {f.name: f.metadata["choices"] for f in dataclasses.fields(Method) if f.metadata["choices"]}
