"""The Keras backend: torch, chosen before Keras is first imported, unless the user chose one."""

from __future__ import annotations

import importlib.util
import os
import sys


def choose_keras_backend() -> None:
    """Set ``KERAS_BACKEND=torch`` when Keras is not imported yet, no backend is set and
    TensorFlow (Keras' default) is absent, so that ``import keras`` works, here or in user code."""
    if "keras" not in sys.modules and "KERAS_BACKEND" not in os.environ and importlib.util.find_spec("tensorflow") is None:
        os.environ["KERAS_BACKEND"] = "torch"
