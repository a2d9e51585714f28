"""Conversion methods as presets of the one framework (Proposition 1, Remark 1)."""

from __future__ import annotations

from ..errors import ConfigError
from .ecc import ECC
from .settings import Method

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

PRESETS: dict[str, Method] = {m.name: m for m in (ECC, RUECKAUER2017)}


def get_method(name: str, **overrides) -> Method:
    """The preset called ``name`` with some switches overridden (None values are ignored)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown method {name!r}; available: {', '.join(PRESETS)}")
    changes = {k: v for k, v in overrides.items() if v is not None}
    return PRESETS[name].with_options(**changes) if changes else PRESETS[name]
