"""spkeras: convert trained CNNs into spiking neural networks, simulate and measure them."""

__version__ = "0.1.0"

from .api import convert, evaluate, load_model, prepare  # noqa: E402
from .evaluate import EvaluationResult  # noqa: E402
from .method import Method  # noqa: E402
from .simulate import MaxCurrent, NeuronCounts, OutputScores, Recorder, RunOptions, simulate  # noqa: E402
from .snn import SpikingNetwork, load_snn, save_snn  # noqa: E402

__all__ = ["prepare", "convert", "evaluate", "load_model", "Method", "simulate", "RunOptions", "Recorder",
           "NeuronCounts", "MaxCurrent", "OutputScores", "EvaluationResult", "SpikingNetwork", "load_snn", "save_snn"]
