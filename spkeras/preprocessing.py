"""Input preprocessing a model expects, as a per-channel affine node after the input.

spkeras reads every image as pixels x in [0, 1] (uint8 / 255). A model trained on other inputs
states what it expects: ``scale`` (255 for models fed raw 0–255 pixel values, such as Keras
models that start with ``Rescaling(1/255)``), then per-channel ``mean`` and ``std`` in those
units (torchvision-style normalisation): the model sees (x·scale − mean)/std. The node is an
exact affine map that the canonical passes fold into the first conv or dense layer where that
is exact (:func:`spkeras.passes.fold_affine`), so the spiking network still reads x.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import ConfigError
from .ir import Graph, Node, insert_after, unique_name


@dataclass(frozen=True)
class InputPreprocessing:
    """The model sees (x·scale − mean)/std per channel for pixels x in [0, 1]."""

    scale: float = 1.0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self):
        if not self.scale > 0:
            raise ConfigError(f"input scale must be positive, got {self.scale}")
        if self.std is not None and not all(s > 0 for s in self.std):
            raise ConfigError(f"input std must be positive, got {self.std}")

    @classmethod
    def of(cls, value) -> "InputPreprocessing | None":
        """From an InputPreprocessing, a dict of its fields, or None."""
        if value is None or isinstance(value, cls):
            return value
        if isinstance(value, dict):
            unknown = sorted(set(value) - {"scale", "mean", "std"})
            if unknown:
                raise ConfigError(f"unknown preprocessing field(s) {', '.join(unknown)}; known: scale, mean, std")
            return cls(**{k: tuple(v) if k != "scale" and v is not None else v for k, v in value.items()})
        raise ConfigError(f"preprocessing must be a dict with scale, mean and std, got {type(value).__name__}")

    def channel_values(self, values, channels: int, what: str) -> torch.Tensor:
        """One value per input channel (a single value applies to all)."""
        tensor = torch.tensor(values, dtype=torch.float64).flatten()
        if tensor.numel() == 1:
            return tensor.expand(channels).clone()
        if tensor.numel() != channels:
            raise ConfigError(f"input {what} has {tensor.numel()} values but the model's input has {channels} channels")
        return tensor

    def apply(self, graph: Graph) -> Graph:
        """A copy of ``graph`` with the affine node (weight scale/std, bias −mean/std) after its input."""
        channels = graph.input.shape[0]
        mean = self.channel_values(self.mean if self.mean is not None else 0.0, channels, "mean")
        std = self.channel_values(self.std if self.std is not None else 1.0, channels, "std")
        weight, bias = self.scale / std, -mean / std
        if bool((weight == 1).all() and (bias == 0).all()):
            return graph
        graph = graph.clone()
        dtype = graph.dtype
        node = Node(unique_name(graph, "preprocessing"), "affine", [], {"weight": weight.to(dtype), "bias": bias.to(dtype)},
                    {}, graph.input.shape, f"preprocessing (x·{self.scale:g} − mean)/std")
        return insert_after(graph, graph.input.name, node)
