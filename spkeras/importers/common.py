"""Helpers shared by the PyTorch and ONNX importers: a graph builder that checks every node as
it is added, by running it on a small example batch.

Running each node at once gives every node its true shape, turns shape mismatches into one-line
:class:`~spkeras.errors.ModelError` messages naming the layer, and lets the importers compare the
finished graph with the original model's own output.
"""

from __future__ import annotations

import re

import numpy as np
import torch

from ..errors import ModelError
from ..ir import Graph, Node
from ..ops import apply_cnn

MAXPOOL_HINT = "; replace {} by AvgPool2d and fine-tune"
RELU_HINT = "; hidden activations must be ReLU"


class Value:
    """A tensor flowing through the imported model.

    ``node``: the IR node holding it. ``squeezed``: the framework's tensor has trailing 1×1
    spatial axes that the IR dropped (the output of a global average pool, before Flatten).
    """

    __slots__ = ("node", "squeezed")

    def __init__(self, node: str, squeezed: bool = False):
        self.node, self.squeezed = node, squeezed


class Batch:
    """The batch size as a symbolic value (``x.size(0)``, ``x.shape[0]``)."""


BATCH = Batch()


def first_line(exc: BaseException, limit: int = 200) -> str:
    """A short one-line description of an exception."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit] + "…"


def parse_input_shape(shape, where: str) -> tuple[int, ...]:
    """A (C, H, W) or (F,) tuple of positive ints, or a ModelError naming ``where``."""
    try:
        shape = tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        raise ModelError(f"{where}: input shape {shape!r} is not a tuple of integers") from None
    if len(shape) not in (1, 3) or min(shape) < 1:
        raise ModelError(f"{where}: input shape {shape} is not supported: expected (C, H, W) images or (F,) vectors")
    return shape


def to_param(label: str, key: str, value) -> torch.Tensor:
    """A weight as a float32 CPU tensor (a copy); refuses non-float dtypes, NaN and infinities."""
    tensor = torch.as_tensor(np.array(value)) if not isinstance(value, torch.Tensor) else value.detach()
    if not tensor.is_floating_point():
        raise ModelError(f"{label}: {key} has dtype {tensor.dtype}; quantized layers are not supported")
    tensor = tensor.to("cpu", torch.float32).clone()
    if not torch.isfinite(tensor).all():
        raise ModelError(f"{label}: {key} contains NaN or infinite values")
    return tensor


class GraphBuilder:
    """Collects IR nodes in order; every added node is run on an example batch at once."""

    def __init__(self, input_shape: tuple[int, ...], source: str, batch: int = 2, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.example = torch.rand((batch, *input_shape), generator=generator)
        self.nodes = [Node("input", "input", shape=tuple(input_shape), source=source)]
        self.values = {"input": self.example}
        self.used = {"input"}

    def claim(self, base: str) -> str:
        """A fresh node name made of ``base`` (letters, digits, underscores)."""
        base = re.sub(r"\W+", "_", base).strip("_") or "node"
        name, k = base, 0
        while name in self.used:
            k += 1
            name = f"{base}_{k}"
        self.used.add(name)
        return name

    def shape(self, value: Value) -> tuple[int, ...]:
        return tuple(self.values[value.node].shape[1:])

    def add(self, base: str, op: str, inputs: list[Value], label: str, params: dict | None = None,
            attrs: dict | None = None) -> Value:
        """Append a node reading ``inputs``; returns its output value."""
        node = Node(self.claim(base), op, [v.node for v in inputs], params or {}, attrs or {}, source=label)
        try:
            with torch.no_grad():
                out = apply_cnn(node, [self.values[v.node] for v in inputs])
        except (RuntimeError, ValueError, IndexError) as exc:
            shapes = " and ".join(str(self.shape(v)) for v in inputs)
            raise ModelError(f"{label}: does not fit its input of shape {shapes} ({first_line(exc, 160)})") from None
        node.shape = tuple(out.shape[1:])
        self.nodes.append(node)
        self.values[node.name] = out
        return Value(node.name)

    # ---------------------------------------------------------------- layers

    def conv2d(self, base: str, label: str, x: Value, weight, bias, stride, padding) -> Value:
        """A 2-D convolution with (top, bottom, left, right) zero padding."""
        self.require_rank(label, x, 3, "Conv2d")
        weight = to_param(label, "weight", weight)
        if weight.dim() != 4:
            raise ModelError(f"{label}: weight has shape {tuple(weight.shape)}; expected (out, in, kh, kw)")
        params = {"weight": weight}
        if bias is not None:
            params["bias"] = to_param(label, "bias", bias)
        attrs = {"stride": [int(s) for s in stride], "padding": [int(p) for p in padding]}
        return self.add(base, "conv2d", [x], label, params, attrs)

    def dense(self, base: str, label: str, x: Value, weight, bias) -> Value:
        """A fully connected layer, weight (out, in)."""
        self.require_plain(label, x)
        if len(self.shape(x)) != 1:
            raise ModelError(f"{label}: reads a tensor of shape {self.shape(x)}; flatten it first "
                             "(Flatten, torch.flatten(x, 1) or x.view(x.size(0), -1))")
        params = {"weight": to_param(label, "weight", weight)}
        if bias is not None:
            params["bias"] = to_param(label, "bias", bias)
        return self.add(base, "dense", [x], label, params)

    def batchnorm(self, base: str, label: str, x: Value, gamma, beta, mean, var, eps: float) -> Value:
        """Batch normalisation with inference statistics over the channel axis."""
        self.require_plain(label, x)
        mean = to_param(label, "running_mean", mean)
        params = {
            "gamma": to_param(label, "weight", gamma) if gamma is not None else torch.ones_like(mean),
            "beta": to_param(label, "bias", beta) if beta is not None else torch.zeros_like(mean),
            "mean": mean,
            "var": to_param(label, "running_var", var),
        }
        if (params["var"] < 0).any():
            raise ModelError(f"{label}: running_var has negative entries")
        return self.add(base, "batchnorm", [x], label, params, {"eps": float(eps)})

    def avgpool(self, base: str, label: str, x: Value, kernel, stride) -> Value:
        self.require_rank(label, x, 3, "average pooling")
        attrs = {"kernel": [int(k) for k in kernel], "stride": [int(s) for s in stride]}
        return self.add(base, "avgpool", [x], label, attrs=attrs)

    def global_avgpool(self, base: str, label: str, x: Value) -> Value:
        """Global average pooling: the IR drops the 1×1 axes the framework keeps until Flatten."""
        self.require_rank(label, x, 3, "global average pooling")
        out = self.add(base, "global_avgpool", [x], label)
        return Value(out.node, squeezed=True)

    def flatten(self, base: str, label: str, x: Value) -> Value:
        """Flatten all but the batch axis (channels-first order); a no-op on flat tensors."""
        if x.squeezed or len(self.shape(x)) == 1:
            return Value(x.node)
        return self.add(base, "flatten", [x], label)

    def relu(self, base: str, label: str, x: Value) -> Value:
        out = self.add(base, "relu", [x], label)
        return Value(out.node, x.squeezed)

    def dropout(self, base: str, label: str, x: Value) -> Value:
        out = self.add(base, "dropout", [x], label)
        return Value(out.node, x.squeezed)

    def softmax(self, base: str, label: str, x: Value, axis: int) -> Value:
        """Softmax over the class axis; :meth:`finish` checks that it is the model's output."""
        self.require_plain(label, x)
        rank = len(self.shape(x)) + 1
        if rank != 2 or axis not in (1, -1):
            raise ModelError(f"{label}: softmax over axis {axis} of a {rank}-D tensor is not supported; "
                             "only over the classes of the final (N, classes) output")
        return self.add(base, "softmax", [x], label)

    def add_values(self, base: str, label: str, terms: list[Value]) -> Value:
        """Element-wise sum of tensors of one shape (residual connections)."""
        shapes = {self.shape(t) for t in terms}
        if len(shapes) != 1 or len({t.squeezed for t in terms}) != 1:
            raise ModelError(f"{label}: adds tensors of shapes {' and '.join(str(self.shape(t)) for t in terms)}; "
                             "only tensors of the same shape can be added (no broadcasting)")
        out = self.add(base, "add", terms, label)
        return Value(out.node, terms[0].squeezed)

    # ---------------------------------------------------------------- checks

    def require_plain(self, label: str, x: Value) -> None:
        if x.squeezed:
            raise ModelError(f"{label}: reads the (N, C, 1, 1) output of a global average pool; flatten it first")

    def require_rank(self, label: str, x: Value, rank: int, what: str) -> None:
        self.require_plain(label, x)
        if len(self.shape(x)) != rank:
            raise ModelError(f"{label}: {what} needs a (C, H, W) input, got shape {self.shape(x)}")

    def finish(self, output: Value, name: str, where: str) -> Graph:
        """The graph ending at ``output``; refuses softmax anywhere but at the end."""
        if output.squeezed:
            raise ModelError(f"{where}: the model ends with the (N, C, 1, 1) output of a global average pool; "
                             "flatten it (and add a Linear layer)")
        for node in self.nodes:
            if node.op == "softmax" and node.name != output.node:
                raise ModelError(f"{node.source}: softmax is only supported on the final layer")
        if output.node == "input":
            raise ModelError(f"{where}: the model has no layers")
        last = self.nodes[[n.name for n in self.nodes].index(output.node)]
        if last.op == "flatten":
            raise ModelError(f"{where}: the model ends with a flatten; add a Linear layer after it")
        index, keep, stack = {n.name: n for n in self.nodes}, {"input"}, [output.node]
        while stack:  # keep what the output reads: drop dead branches
            name = stack.pop()
            if name not in keep:
                keep.add(name)
                stack += index[name].inputs
        nodes = [n for n in self.nodes if n.name in keep]
        return Graph(nodes=nodes, output=output.node, name=name)


def same_padding(size: int, kernel: int, stride: int, extra_at_end: bool = True) -> list[int]:
    """'same' padding (before, after) along one axis; the odd pixel goes after (or before)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    small, large = total // 2, total - total // 2
    return [small, large] if extra_at_end else [large, small]


def compare_outputs(expected: torch.Tensor, actual: torch.Tensor, where: str) -> None:
    """Refuse an import whose graph does not reproduce the model's own output."""
    expected = expected.detach().to(torch.float32).reshape(actual.shape[0], -1)
    actual = actual.detach().to(torch.float32).reshape(actual.shape[0], -1)
    if expected.shape != actual.shape:
        raise ModelError(f"{where}: the imported graph gives outputs of shape {tuple(actual.shape[1:])} "
                         f"but the model gives {tuple(expected.shape[1:])}")
    scale = max(1.0, float(expected.abs().max())) if expected.numel() else 1.0
    difference = float((expected - actual).abs().max()) if expected.numel() else 0.0
    if not difference <= 1e-4 * scale:
        raise ModelError(f"{where}: the imported graph does not reproduce the model's output (largest difference "
                         f"{difference:.3g}); the model computes something spkeras cannot read")
