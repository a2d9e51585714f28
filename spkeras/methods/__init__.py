"""Conversion methods: the framework's switches and the presets built from them."""

from .presets import PRESETS, get_method
from ..method import Method

__all__ = ["Method", "PRESETS", "get_method"]
