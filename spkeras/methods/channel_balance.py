"""Channel balancing: per-channel λ by a rescaling of the CNN that leaves its function unchanged.

One λ_n per layer (Eq. 7) gives a channel whose activations stay far below λ_n only a small
range of rates, so at low T its few spikes carry its value coarsely. Per-channel thresholds
(channel-wise normalisation; LTB, Bu et al. 2025) avoid that; here the same effect comes from the
CNN itself. A ReLU is positively homogeneous: multiplying channel c of the conv or dense layer
that feeds ReLU site n (its weights and bias) by s_c > 0 multiplies channel c of the site's
output by s_c, and dividing the weights that read channel c by s_c restores every later value
exactly. With s_c = λ_n / λ_{n,c}, the site's largest activation over that of channel c on the
calibration images, every channel of the site reaches λ_n, and the per-layer conversion that
follows (λ, CN, the calibrations) treats each channel as if it had its own threshold.

A site is balanced when the layer feeding it feeds nothing else, and everything reading it can
take the division: conv layers without groups, dense layers (through a flatten, channels-first),
and pools or padding in between. A site that feeds an addition, a concatenation or the output,
or is a clipped ReLU, keeps its scale; a channel that never activates keeps s_c = 1.
"""

from __future__ import annotations

import torch

from ..ir import Graph, Node, neurons
from ..ops import run_graph
from ..progress import announce

PRODUCERS = ("conv2d", "dense", "affine")
TRANSPARENT = ("maxpool", "avgpool", "adaptive_avgpool", "global_avgpool", "pad", "flatten")


def balance_channels(graph: Graph, images: torch.Tensor, batch_size: int = 100, device: str = "cpu") -> Graph:
    """A copy of canonical CNN ``graph`` (BN folded) with every eligible ReLU site's channels
    rescaled to reach the site's largest activation on ``images`` (module docstring)."""
    graph = graph.clone()
    sites = {r.name: readers for r in graph.nodes_of("relu") if (readers := absorbing_readers(graph, r)) is not None}
    if not sites:
        return graph
    announce(f"balancing channels ({len(sites)} layers, {images.shape[0]} images)")
    peaks = channel_peaks(graph.to(device), list(sites), images, batch_size, device)
    for name, readers in sites.items():
        peak = peaks[name]
        scale = torch.where(peak > 0, peak.max() / peak, torch.ones_like(peak))
        relu = graph.node(name)
        scale_outputs(graph.node(relu.inputs[0]), scale)
        for reader, repeat in readers:
            scale_inputs(reader, 1.0 / scale.repeat_interleave(repeat))
    return graph


def absorbing_readers(graph: Graph, relu: Node) -> list[tuple[Node, int]] | None:
    """The conv and dense layers that read ReLU ``relu``'s channels (each with how many inputs of
    its own one channel becomes: H·W after a flatten, else 1), or None if the site can't be balanced."""
    producer = graph.node(relu.inputs[0])
    if (relu.attrs.get("max_value") is not None or relu.name == graph.output or producer.op not in PRODUCERS
            or [n.name for n in graph.consumers(producer.name)] != [relu.name]):
        return None
    readers, frontier = [], [(relu, 1)]
    while frontier:
        node, repeat = frontier.pop()
        for consumer in graph.consumers(node.name):
            if consumer.op in TRANSPARENT and consumer.name != graph.output:
                spread = repeat * (neurons(node) // node.shape[0] if consumer.op == "flatten" else 1)
                frontier.append((consumer, spread))
            elif consumer.op == "dense" or (consumer.op == "conv2d" and consumer.attrs.get("groups", 1) == 1):
                readers.append((consumer, repeat))
            else:
                return None
    return readers


def channel_peaks(graph: Graph, sites: list[str], images: torch.Tensor, batch_size: int,
                  device: str) -> dict[str, torch.Tensor]:
    """Each site's largest activation per channel over ``images``."""
    peaks: dict[str, torch.Tensor] = {}

    def observe(node, value):
        if node.name in sites:
            per_channel = value.detach().transpose(0, 1).flatten(1).amax(1).cpu()
            peaks[node.name] = per_channel if node.name not in peaks else torch.maximum(peaks[node.name], per_channel)

    with torch.no_grad():
        for start in range(0, images.shape[0], batch_size):
            run_graph(graph, images[start : start + batch_size].to(device), observe=observe)
    return peaks


def scale_outputs(layer: Node, scale: torch.Tensor) -> None:
    """Multiply output channel c of a conv, dense or affine layer by scale[c]."""
    weight = layer.params["weight"]
    layer.params["weight"] = weight * scale.to(weight.dtype).view((-1,) + (1,) * (weight.dim() - 1))
    if "bias" in layer.params:
        layer.params["bias"] = layer.params["bias"] * scale.to(weight.dtype)


def scale_inputs(layer: Node, scale: torch.Tensor) -> None:
    """Multiply the weights reading input c of a conv (no groups) or dense layer by scale[c]."""
    weight = layer.params["weight"]
    layer.params["weight"] = weight * scale.to(weight.dtype).view((1, -1) + (1,) * (weight.dim() - 2))
