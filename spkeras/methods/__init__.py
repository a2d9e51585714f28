"""Conversion methods: the framework's switches and the presets built from them."""

from .presets import PRESETS, get_method
from .settings import Method

__all__ = ["Method", "PRESETS", "get_method"]
