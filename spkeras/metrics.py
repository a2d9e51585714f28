"""Operation counts and energy: exact fan-out (Eq. 14), CNN operations (Eq. 13), energy in pJ.

Counts are *structural*: a synapse is a (pre-neuron, post-neuron) pair the layer connects,
whatever its weight. They come from running the graph with every weight set to 1 and no bias,
so padding, stride and borders are handled exactly by the same operators that simulate.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .ir import Graph, Node
from .ops import adaptive_windows, apply_stateless

ENERGY_PER_AC_PJ = 0.9   # one accumulate, 45 nm (Horowitz 2014)
ENERGY_PER_MAC_PJ = 4.6  # one multiply-accumulate, 45 nm (Horowitz 2014)
COUNTED_OPS = ("conv2d", "dense", "affine", "avgpool", "adaptive_avgpool", "global_avgpool", "maxpool")


def window_taps(node: Node, x: torch.Tensor) -> torch.Tensor:
    """Each max-pool window's sum over its real (unpadded) taps."""
    top, bottom, left, right = node.attrs["padding"]
    kh, kw = node.attrs["kernel"]
    padded = F.pad(x, (left, right, top, bottom))
    return F.avg_pool2d(padded, (kh, kw), tuple(node.attrs["stride"])) * (kh * kw)


def _adaptive_sums(x: torch.Tensor, output_size) -> torch.Tensor:
    """Adaptive average pooling times each window's size: each window's sum."""
    height, width = x.shape[2:]
    sizes_h = torch.tensor([e - s for s, e in adaptive_windows(height, output_size[0])], dtype=x.dtype)
    sizes_w = torch.tensor([e - s for s, e in adaptive_windows(width, output_size[1])], dtype=x.dtype)
    return F.adaptive_avg_pool2d(x, tuple(output_size)) * torch.outer(sizes_h, sizes_w).to(x.device)


def structural_apply(node: Node, inputs: list[torch.Tensor]) -> torch.Tensor:
    """The node with every connection weighted 1 and no bias: output i sums its input synapses.

    A max pool over currents connects every unit its windows cover once (the layer below
    computes each of them once, whatever the overlap): each unit is divided by the number of
    windows that cover it before the windows are summed."""
    x = inputs[0]
    if node.op == "maxpool":
        ones = torch.ones_like(x[:1]).requires_grad_(True)
        with torch.enable_grad():
            cover = torch.autograd.grad(window_taps(node, ones).sum(), ones)[0]
        return window_taps(node, torch.where(cover > 0, x / cover.clamp(min=1), torch.zeros_like(x)))
    if node.op == "adaptive_avgpool":
        return _adaptive_sums(x, node.attrs["output_size"])
    ones = Node(node.name, node.op, node.inputs, {}, dict(node.attrs), node.shape)
    if node.op in ("conv2d", "dense", "affine"):
        ones.params["weight"] = torch.ones_like(node.params["weight"], dtype=torch.float64)
    elif node.op == "avgpool":
        kh, kw = node.attrs["kernel"]
        ones.attrs["scale"] = float(kh * kw)
    elif node.op == "global_avgpool":
        ones.attrs["scale"] = float(x.shape[2] * x.shape[3])
    elif node.op in ("add", "concat"):
        ones.attrs["coefficients"] = [1.0] * len(inputs)
    return apply_stateless(ones, inputs)


def gates(graph: Graph) -> list[str]:
    """The max pools of a spiking graph that pass spikes (``gate``)."""
    return [n.name for n in graph.nodes_of("maxpool") if n.attrs.get("gate")]


def source_layers(graph: Graph) -> list[str]:
    """The populations whose outputs travel over synapses: the input, every spike node and every
    max-pool gate (whose passed spikes reach the layers above; a spike into a gate is one
    operation, the update of its unit's count)."""
    emitting = {graph.input.name, *gates(graph)}
    return [n.name for n in graph.nodes if n.name in emitting or n.op == "spike"]


def fan_out(graph: Graph) -> dict[str, torch.Tensor]:
    """Exact number of outgoing synapses of every neuron of every source layer (float64).

    Leaves are the source layers' outputs; the structural graph carries them to the next
    spiking layers; the gradient of the summed currents w.r.t. a leaf counts its synapses.
    """
    with torch.enable_grad():
        return _fan_out(graph)


def _fan_out(graph: Graph) -> dict[str, torch.Tensor]:
    sources = set(source_layers(graph))
    leaves, values, targets = {}, {}, []
    for node in graph.nodes:
        if node.name in sources:
            leaves[node.name] = torch.ones((1, *node.shape), dtype=torch.float64, requires_grad=True)
            values[node.name] = leaves[node.name]
            if node.op == "spike" or node.attrs.get("gate"):
                targets.append(values[node.inputs[0]])
            continue
        values[node.name] = structural_apply(node, [values[i] for i in node.inputs])
    total = sum(t.sum() for t in targets)
    grads = torch.autograd.grad(total, list(leaves.values()), allow_unused=True)
    return {
        name: (g[0].detach().round() if g is not None else torch.zeros(graph.node(name).shape, dtype=torch.float64))
        for name, g in zip(leaves, grads)
    }


def flat_fan_outs(graph: Graph, device) -> dict[str, torch.Tensor]:
    """:func:`fan_out` of every source layer, flattened per neuron, on ``device`` (for Eq. 14)."""
    return {k: v.to(device).flatten() for k, v in fan_out(graph).items()}


def fan_in(node: Node, input_shape: tuple[int, ...]) -> torch.Tensor:
    """Number of input connections of every output unit of one layer (a max pool's: its window's
    real taps, each compared once)."""
    ones = torch.ones((1, *input_shape), dtype=torch.float64)
    with torch.no_grad():
        if node.op == "maxpool":
            return window_taps(node, ones)[0].round()
        return structural_apply(node, [ones])[0].round()


def nominal_fan_in(node: Node, input_shape: tuple[int, ...]) -> int:
    """Fan-in as usually quoted: the whole kernel, padding taps included."""
    if node.op in ("conv2d", "dense"):
        return node.params["weight"][0].numel()
    if node.op == "affine":
        return 1
    if node.op in ("avgpool", "maxpool"):
        return node.attrs["kernel"][0] * node.attrs["kernel"][1]
    if node.op == "adaptive_avgpool":  # windows differ in size where the division is uneven: the largest
        return max(e - s for s, e in adaptive_windows(input_shape[1], node.attrs["output_size"][0])) * max(
            e - s for s, e in adaptive_windows(input_shape[2], node.attrs["output_size"][1]))
    return input_shape[1] * input_shape[2]  # global average pool


@dataclass
class CnnOperations:
    """CNN cost per image: Eq. 13's Σ(2 f_in + 1) M and multiply-accumulates Σ f_in M, with each
    unit's exact fan-in (padding taps excluded), and the nominal MAC count (kernel volume × M)."""

    eq13: float
    macs: float
    nominal_macs: float
    per_layer: dict[str, float]


def cnn_operations(cnn: Graph) -> CnnOperations:
    """Eq. 13 over every conv, dense and pooling layer, with each unit's exact fan-in."""
    eq13, macs, nominal, per_layer = 0.0, 0.0, 0.0, {}
    for node in cnn.nodes:
        if node.op not in COUNTED_OPS:
            continue
        input_shape = cnn.node(node.inputs[0]).shape
        f_in = fan_in(node, input_shape)
        per_layer[node.name] = float(f_in.sum())
        macs += float(f_in.sum())
        eq13 += float((2 * f_in + 1).sum())
        nominal += float(nominal_fan_in(node, input_shape) * f_in.numel())
    return CnnOperations(eq13=eq13, macs=macs, nominal_macs=nominal, per_layer=per_layer)


def energy_pj(synops: float, macs: float, ac_pj: float = ENERGY_PER_AC_PJ, mac_pj: float = ENERGY_PER_MAC_PJ) -> float:
    """Energy estimate: accumulates (synaptic operations) plus multiply-accumulates."""
    return synops * ac_pj + macs * mac_pj
