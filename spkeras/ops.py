"""Tensor semantics of every IR operator, shared by the CNN, the simulator and the closed form."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .fixed_order import dense
from .ir import Graph, GraphError, Node


def pad_and_conv(node: Node, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """2-D convolution with the node's (top, bottom, left, right) zero padding."""
    top, bottom, left, right = node.attrs["padding"]
    if top == bottom and left == right:
        return F.conv2d(x, weight, bias, stride=tuple(node.attrs["stride"]), padding=(top, left))
    x = F.pad(x, (left, right, top, bottom))
    return F.conv2d(x, weight, bias, stride=tuple(node.attrs["stride"]))


def apply_linear(node: Node, inputs: list[torch.Tensor], bias_scale: float = 1.0) -> torch.Tensor:
    """Apply a linear operator; its bias is multiplied by ``bias_scale``.

    ``bias_scale`` lets the closed form add t steps' worth of bias to spike counts,
    and lets structural counting (fan-out) drop biases with ``bias_scale=0``.
    """
    op = node.op
    x = inputs[0]
    if op in ("conv2d", "dense"):
        bias = node.params.get("bias")
        if bias is not None:
            bias = bias * bias_scale if bias_scale != 1.0 else bias
        if op == "dense":
            return dense(x, node.params["weight"], bias)
        return pad_and_conv(node, x, node.params["weight"], bias)
    scale = node.attrs.get("scale", 1.0)
    if op == "avgpool":
        y = F.avg_pool2d(x, tuple(node.attrs["kernel"]), tuple(node.attrs["stride"]))
        return y * scale if scale != 1.0 else y
    if op == "global_avgpool":
        y = x.mean(dim=(2, 3))
        return y * scale if scale != 1.0 else y
    if op == "flatten":
        return x.flatten(1)
    if op == "add":
        coefficients = node.attrs.get("coefficients") or [1.0] * len(inputs)
        total = inputs[0] * coefficients[0] if coefficients[0] != 1.0 else inputs[0]
        for c, term in zip(coefficients[1:], inputs[1:]):
            total = total + (term * c if c != 1.0 else term)
        return total
    raise GraphError(f"operator {op!r} of node {node.name!r} is not linear")


def apply_cnn(node: Node, inputs: list[torch.Tensor]) -> torch.Tensor:
    """Apply any CNN operator (linear ops, BN, ReLU, softmax, dropout as identity)."""
    op = node.op
    if op == "relu":
        return torch.relu(inputs[0])
    if op == "softmax":
        return torch.softmax(inputs[0], dim=1)
    if op == "dropout":
        return inputs[0]
    if op == "batchnorm":
        p = node.params
        shape = (1, -1) + (1,) * (inputs[0].dim() - 2)
        inv = torch.rsqrt(p["var"] + node.attrs["eps"]) * p["gamma"]
        return (inputs[0] - p["mean"].view(shape)) * inv.view(shape) + p["beta"].view(shape)
    return apply_linear(node, inputs)


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
        for name in node.inputs:
            if last_use[name] == position and name != graph.output:
                del values[name]
    return values[graph.output]


def to_channels_first(x: torch.Tensor) -> torch.Tensor:
    """(N, H, W, C) images → (N, C, H, W) tensors; (N, F) passes through."""
    return x.permute(0, 3, 1, 2) if x.dim() == 4 else x
