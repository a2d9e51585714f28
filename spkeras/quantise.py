"""b-bit signed fixed-point weights and integer thresholds (paper section 4.4, Fig. 4).

After normalisation, each layer feeding a spiking layer is scaled into [−1, 1] by its largest
|w|; the threshold, bias and TRE charge get the same factor; everything is multiplied by
2^(b−1) and weights, biases and thresholds are rounded to integers. Scaling all of a neuron's
inputs and its threshold by one factor leaves the dynamics unchanged, so only rounding differs.
"""

from __future__ import annotations

import torch

from .errors import ConfigError
from .ir import Graph, Node, feeding_layer

ROUNDERS = {"nearest": torch.round, "trunc": torch.trunc}


def integer_factor(node: Node, bits: int) -> float:
    """2^(b−1) / max|w| of the layer feeding a neuron; pools have the uniform weight scale/k²."""
    if node.op in ("conv2d", "dense"):
        largest = float(node.params["weight"].abs().max())
    elif node.op == "avgpool":
        kh, kw = node.attrs["kernel"]
        largest = abs(node.attrs.get("scale", 1.0)) / (kh * kw)
    else:
        raise ConfigError(f"--bits supports neurons fed by conv, dense or average-pool layers, not {node.op} ({node.name})")
    if not largest > 0:
        raise ConfigError(f"--bits: layer {node.name} has only zero weights")
    return 2 ** (bits - 1) / largest


def quantise(graph: Graph, bits: int, rounding: str = "trunc") -> None:
    """Quantise, in place, every layer that feeds a spiking neuron, and that neuron's threshold."""
    rounder = ROUNDERS[rounding]
    for neuron in graph.nodes_of("spike"):
        layer = feeding_layer(graph, neuron)
        factor = integer_factor(layer, bits)
        if layer.op == "avgpool":
            kh, kw = layer.attrs["kernel"]
            layer.attrs["scale"] = float(2 ** (bits - 1) * kh * kw) * (1 if layer.attrs.get("scale", 1.0) > 0 else -1)
        else:
            for key in ("weight", "bias"):
                if key in layer.params:
                    layer.params[key] = rounder(layer.params[key].double() * factor).to(layer.params[key].dtype)
        attrs = neuron.attrs
        attrs["threshold"] = max(1.0, float(rounder(torch.tensor(attrs["threshold"] * factor, dtype=torch.float64))))
        attrs["v_init"] = attrs["v_init"] * factor
        attrs["step_current"] = attrs["step_current"] * factor
