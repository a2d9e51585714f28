"""spkeras: convert trained CNNs into spiking neural networks, simulate and measure them.

The names below are imported on first use (PEP 562), so that ``import spkeras.cli`` and
``spkeras --help`` do not pay for torch and Keras.
"""

from .backend import choose_keras_backend
from .version import __version__

choose_keras_backend()

_EXPORTS = {
    "prepare": "api", "convert": "api", "evaluate": "api", "load_model": "api",
    "EvaluationResult": "evaluation", "Method": "method",
    "RunOptions": "simulate", "Recorder": "simulate", "NeuronCounts": "simulate",
    "MaxCurrent": "simulate", "OutputScores": "simulate",
    "SpikingNetwork": "snn", "load_snn": "snn", "save_snn": "snn",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'spkeras' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)
