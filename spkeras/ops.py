"""Tensor semantics of every IR operator, shared by the CNN, the simulator and the closed form."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .fixed_order import dense
from .ir import Graph, GraphError, Node


def pad_and_conv(node: Node, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """2-D convolution with the node's (top, bottom, left, right) zero padding and ``groups``."""
    top, bottom, left, right = node.attrs["padding"]
    groups = node.attrs.get("groups", 1)
    if top == bottom and left == right:
        return F.conv2d(x, weight, bias, stride=tuple(node.attrs["stride"]), padding=(top, left), groups=groups)
    x = F.pad(x, (left, right, top, bottom))
    return F.conv2d(x, weight, bias, stride=tuple(node.attrs["stride"]), groups=groups)


def max_pool(node: Node, x: torch.Tensor) -> torch.Tensor:
    """Max pooling; padded taps are −∞, so they never win (the frameworks' semantics)."""
    top, bottom, left, right = node.attrs["padding"]
    if any((top, bottom, left, right)):
        x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
    return F.max_pool2d(x, tuple(node.attrs["kernel"]), tuple(node.attrs["stride"]))


def adaptive_windows(size: int, out: int) -> list[tuple[int, int]]:
    """The (start, end) of each adaptive-pooling window along one axis: ⌊i·size/out⌋ to ⌈(i+1)·size/out⌉."""
    return [((i * size) // out, -(-((i + 1) * size) // out)) for i in range(out)]


def channel_view(vector: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-channel vector shaped to broadcast over (N, C, …)."""
    return vector.view((1, -1) + (1,) * (like.dim() - 2))


def _scaled(y: torch.Tensor, node: Node) -> torch.Tensor:
    scale = node.attrs.get("scale", 1.0)
    return y * scale if scale != 1.0 else y


def _weighted_sum(inputs: list[torch.Tensor], coefficients) -> list[torch.Tensor]:
    coefficients = coefficients or [1.0] * len(inputs)
    return [term * c if c != 1.0 else term for c, term in zip(coefficients, inputs)]


def apply_stateless(node: Node, inputs: list[torch.Tensor], bias_scale: float = 1.0) -> torch.Tensor:
    """Apply an operator that a spiking network computes between its neurons: every linear one
    and max pooling (positively homogeneous: max(a·x) = a·max(x) for a > 0). Its bias (conv,
    dense, affine) is multiplied by ``bias_scale``.

    ``bias_scale`` lets the closed form add t steps' worth of bias to spike counts,
    and lets structural counting (fan-out) drop biases with ``bias_scale=0``.
    """
    op = node.op
    x = inputs[0]
    if op in ("conv2d", "dense", "affine"):
        bias = node.params.get("bias")
        if bias is not None:
            bias = bias * bias_scale if bias_scale != 1.0 else bias
        if op == "dense":
            return dense(x, node.params["weight"], bias)
        if op == "affine":
            y = x * channel_view(node.params["weight"], x)
            return y + channel_view(bias, x) if bias is not None else y
        return pad_and_conv(node, x, node.params["weight"], bias)
    if op == "avgpool":
        return _scaled(F.avg_pool2d(x, tuple(node.attrs["kernel"]), tuple(node.attrs["stride"])), node)
    if op == "adaptive_avgpool":
        return _scaled(F.adaptive_avg_pool2d(x, tuple(node.attrs["output_size"])), node)
    if op == "global_avgpool":
        return _scaled(x.mean(dim=(2, 3)), node)
    if op == "maxpool":
        return _scaled(max_pool(node, x), node)
    if op == "pad":
        top, bottom, left, right = node.attrs["padding"]
        return F.pad(x, (left, right, top, bottom))
    if op == "flatten":
        return x.flatten(1)
    if op == "add":
        terms = _weighted_sum(inputs, node.attrs.get("coefficients"))
        total = terms[0]
        for term in terms[1:]:
            total = total + term
        return total
    if op == "concat":
        return torch.cat(_weighted_sum(inputs, node.attrs.get("coefficients")), dim=1)
    raise GraphError(f"operator {op!r} of node {node.name!r} is not computed between neurons")


def apply_cnn(node: Node, inputs: list[torch.Tensor]) -> torch.Tensor:
    """Apply any CNN operator (stateless ops, BN, ReLU, softmax, dropout as identity)."""
    op = node.op
    if op == "relu":
        cap = node.attrs.get("max_value")
        return torch.relu(inputs[0]) if cap is None else torch.clamp(inputs[0], 0.0, float(cap))
    if op == "softmax":
        return torch.softmax(inputs[0], dim=1)
    if op == "dropout":
        return inputs[0]
    if op == "batchnorm":
        p = node.params
        shape = (1, -1) + (1,) * (inputs[0].dim() - 2)
        inv = torch.rsqrt(p["var"] + node.attrs["eps"]) * p["gamma"]
        return (inputs[0] - p["mean"].view(shape)) * inv.view(shape) + p["beta"].view(shape)
    return apply_stateless(node, inputs)


NodeFn = Callable[[Node, list[torch.Tensor]], torch.Tensor]


def run_graph(
    graph: Graph,
    x: torch.Tensor,
    apply: NodeFn = apply_cnn,
    observe: Callable[[Node, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Evaluate the graph on a batch (N, C, H, W); ``observe`` sees every node's output.

    Values are freed as soon as their last consumer has run, so memory stays bounded
    by the widest cut of the graph.
    """
    last_use = {}
    for position, node in enumerate(graph.nodes):
        for name in node.inputs:
            last_use[name] = position
    values = {graph.input.name: x}
    if observe:
        observe(graph.input, x)
    for position, node in enumerate(graph.nodes[1:], start=1):
        values[node.name] = apply(node, [values[i] for i in node.inputs])
        if observe:
            observe(node, values[node.name])
        for name in dict.fromkeys(node.inputs):  # a node may read one value twice (x + x)
            if last_use[name] == position and name != graph.output:
                del values[name]
    return values[graph.output]


def to_channels_first(x: torch.Tensor) -> torch.Tensor:
    """(N, H, W, C) images → (N, C, H, W) tensors; (N, F) passes through."""
    return x.permute(0, 3, 1, 2) if x.dim() == 4 else x
