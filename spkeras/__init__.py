"""spkeras: convert trained CNNs into spiking neural networks, simulate and measure them."""

__version__ = "0.1.0"

from .api import convert, evaluate, load_model  # noqa: E402
from .evaluate import EvaluationResult  # noqa: E402
from .snn import SpikingNetwork, load_snn, save_snn  # noqa: E402

__all__ = ["convert", "evaluate", "load_model", "EvaluationResult", "SpikingNetwork", "load_snn", "save_snn"]
