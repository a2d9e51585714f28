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

# Why an integrate-and-fire neuron cannot represent an activation: its spike rate is zero for a
# negative input current, grows linearly above it and saturates at one spike per step.
IF_RATE = ("hidden activations must be ReLU or clipped ReLU such as ReLU6, because an IF neuron's spike rate is "
           "non-negative and saturates only at one spike per step")
NEGATIVE = "its output can be negative, and an IF neuron's firing rate cannot be negative"
NON_MONOTONE = "it is not monotone (it dips below zero before rising), which an IF neuron's rate cannot follow"
SMOOTH = "it is a smooth or saturating curve, non-zero for negative inputs, which an IF neuron's rate cannot follow"
# keys as activation_key() writes the names of every framework (torch modules and functions, ONNX
# operators, Keras activation names)
ACTIVATION_PROBLEMS = {
    **dict.fromkeys(("leakyrelu", "prelu", "rrelu", "elu", "selu", "celu", "tanh", "hardtanh", "softsign",
                     "tanhshrink", "logsigmoid", "logsoftmax", "hardshrink", "softshrink"), NEGATIVE),
    **dict.fromkeys(("gelu", "silu", "swish", "hardswish", "hardsilu", "mish"), NON_MONOTONE),
    **dict.fromkeys(("sigmoid", "hardsigmoid", "sparsesigmoid", "softplus", "squareplus", "sparseplus",
                     "exponential"), SMOOTH),
    "threshold": "it jumps from its fill value to the input at its threshold",
    "thresholdedrelu": "it jumps from zero to its threshold",
    "glu": "it multiplies two halves of its input",
}


def activation_key(name: str) -> str:
    """'leaky_relu_', 'LeakyReLU', 'LeakyRelu' → 'leakyrelu' (a key of ACTIVATION_PROBLEMS)."""
    return name.lower().replace("_", "")


def is_activation(name: str) -> bool:
    """True for an activation (module class, function or ONNX operator name) that an IF neuron cannot represent."""
    return activation_key(name) in ACTIVATION_PROBLEMS


def activation_error(label: str, name: str) -> ModelError:
    """The one-line refusal of an activation an IF neuron cannot represent; ``label`` names the layer."""
    problem = ACTIVATION_PROBLEMS.get(activation_key(name.split(".")[-1]), "it is not a (clipped) ReLU")
    shown = "this activation" if name in label else name
    return ModelError(f"{label}: {shown} cannot be converted ({problem}); {IF_RATE}")


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

    def conv2d(self, base: str, label: str, x: Value, weight, bias, stride, padding, groups: int = 1) -> Value:
        """A 2-D convolution with (top, bottom, left, right) zero padding; weight (out, in/groups, kh, kw)."""
        self.require_rank(label, x, 3, "Conv2d")
        weight = to_param(label, "weight", weight)
        if weight.dim() != 4:
            raise ModelError(f"{label}: weight has shape {tuple(weight.shape)}; expected (out, in/groups, kh, kw)")
        groups = int(groups)
        channels = self.shape(x)[0]
        if groups < 1 or channels % groups or weight.shape[0] % groups or weight.shape[1] * groups != channels:
            raise ModelError(f"{label}: a weight of shape {tuple(weight.shape)} with groups={groups} does not fit "
                             f"{channels} input channels")
        params = {"weight": weight}
        if bias is not None:
            params["bias"] = to_param(label, "bias", bias)
        attrs = {"stride": [int(s) for s in stride], "padding": [int(p) for p in padding]}
        if groups != 1:
            attrs["groups"] = groups
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

    def avgpool(self, base: str, label: str, x: Value, kernel, stride, padding=(0, 0, 0, 0)) -> Value:
        """Average pooling; (top, bottom, left, right) ``padding`` is zeros counted in every window's
        mean (count_include_pad), so it becomes a ``pad`` node before the pool (less any bottom or
        right padding that no window reaches)."""
        self.require_rank(label, x, 3, "average pooling")
        kernel, stride, padding = [int(k) for k in kernel], [int(s) for s in stride], [int(p) for p in padding]
        h, w = self.shape(x)[1:]
        padding[1] = used_padding(h, kernel[0], stride[0], padding[0], padding[1])
        padding[3] = used_padding(w, kernel[1], stride[1], padding[2], padding[3])
        if any(padding):
            x = self.pad(f"{base}_pad", label, x, padding)
        self.check_windows(label, x, kernel, stride, (0, 0, 0, 0))
        return self.add(base, "avgpool", [x], label, attrs={"kernel": kernel, "stride": stride})

    def global_avgpool(self, base: str, label: str, x: Value) -> Value:
        """Global average pooling: the IR drops the 1×1 axes the framework keeps until Flatten."""
        self.require_rank(label, x, 3, "global average pooling")
        out = self.add(base, "global_avgpool", [x], label)
        return Value(out.node, squeezed=True)

    def adaptive_avgpool(self, base: str, label: str, x: Value, output_size) -> Value:
        """Adaptive average pooling to ``output_size`` (oh, ow), None keeping that axis: a global pool
        for (1, 1), nothing where the map has that size already, a plain pool where the sizes divide
        evenly, else an ``adaptive_avgpool`` node (overlapping windows, as PyTorch computes them)."""
        self.require_rank(label, x, 3, "adaptive average pooling")
        h, w = self.shape(x)[1:]
        oh, ow = (size if out is None else int(out) for size, out in zip((h, w), output_size))
        if oh < 1 or ow < 1:
            raise ModelError(f"{label}: output size {(oh, ow)} is not supported")
        if (oh, ow) == (1, 1):
            return self.global_avgpool(base, label, x)
        if (oh, ow) == (h, w):
            return x
        if h % oh == 0 and w % ow == 0:
            kernel = [h // oh, w // ow]
            return self.avgpool(base, label, x, kernel, kernel)
        return self.add(base, "adaptive_avgpool", [x], label, attrs={"output_size": [oh, ow]})

    def maxpool(self, base: str, label: str, x: Value, kernel, stride, padding) -> Value:
        """Max pooling; (top, bottom, left, right) ``padding`` is −∞ (padded taps never win)."""
        self.require_rank(label, x, 3, "max pooling")
        attrs = {"kernel": [int(k) for k in kernel], "stride": [int(s) for s in stride],
                 "padding": [int(p) for p in padding]}
        self.check_windows(label, x, attrs["kernel"], attrs["stride"], attrs["padding"])
        if attrs["kernel"] == [1, 1] and attrs["stride"] == [1, 1] and not any(attrs["padding"]):
            return x  # a 1×1 max pool (a global one on a 1×1 map) leaves the tensor as it is
        return self.add(base, "maxpool", [x], label, attrs=attrs)

    def global_maxpool(self, base: str, label: str, x: Value) -> Value:
        """Global max pooling as the frameworks keep it: (C, 1, 1), a max pool over the whole map."""
        self.require_rank(label, x, 3, "global max pooling")
        size = list(self.shape(x)[1:])
        return self.maxpool(base, label, x, size, size, (0, 0, 0, 0))

    def pad(self, base: str, label: str, x: Value, padding) -> Value:
        """Zero padding (top, bottom, left, right) of the spatial axes; no node when it is all zeros."""
        padding = [int(p) for p in padding]
        if min(padding) < 0:
            raise ModelError(f"{label}: negative padding {padding} (cropping) is not supported")
        self.require_rank(label, x, 3, "padding")
        if not any(padding):
            return x
        return self.add(base, "pad", [x], label, attrs={"padding": padding})

    def flatten(self, base: str, label: str, x: Value) -> Value:
        """Flatten all but the batch axis (channels-first order); a no-op on flat tensors."""
        if x.squeezed or len(self.shape(x)) == 1:
            return Value(x.node)
        return self.add(base, "flatten", [x], label)

    def relu(self, base: str, label: str, x: Value, max_value: float | None = None) -> Value:
        """ReLU, or the clipped ReLU min(max(x, 0), max_value) (ReLU6…) when ``max_value`` is finite."""
        attrs = {}
        if max_value is not None and max_value != float("inf"):
            if not max_value > 0:
                raise ModelError(f"{label}: clips to [0, {max_value}]; the upper bound must be positive")
            attrs["max_value"] = float(max_value)
        out = self.add(base, "relu", [x], label, attrs=attrs)
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

    def concat(self, base: str, label: str, terms: list[Value]) -> Value:
        """Concatenation along the channel axis (axis 1 of the framework's tensors)."""
        if len(terms) == 1:
            return terms[0]
        shapes = [self.shape(t) for t in terms]
        if (len({len(s) for s in shapes}) != 1 or len({s[1:] for s in shapes}) != 1
                or len({t.squeezed for t in terms}) != 1):
            raise ModelError(f"{label}: concatenates tensors of shapes {' and '.join(str(s) for s in shapes)}; "
                             "only tensors that differ in their channel count can be joined")
        out = self.add(base, "concat", terms, label)
        return Value(out.node, terms[0].squeezed)

    # ---------------------------------------------------------------- checks

    def check_windows(self, label: str, x: Value, kernel, stride, padding) -> None:
        """Refuse a pooling whose windows do not fit the map, or that has a window of padding only."""
        size = self.shape(x)[1:]
        for axis, name in ((0, "height"), (1, "width")):
            before, after = padding[2 * axis], padding[2 * axis + 1]
            k, s, n = kernel[axis], stride[axis], size[axis]
            if k < 1 or s < 1 or n + before + after < k:
                raise ModelError(f"{label}: a {k}-wide window with stride {s} does not fit the {name} {n} "
                                 f"(padding {before}, {after})")
            last = (n + before + after - k) // s * s
            if k <= before or last >= n + before:
                raise ModelError(f"{label}: padding ({before}, {after}) of the {name} leaves a window with no "
                                 "input pixel")

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


def ceil_mode_extra(size: int, kernel: int, stride: int, before: int, after: int) -> int:
    """The padding that ``ceil_mode`` adds after one axis (PyTorch's rule, which onnxruntime follows).

    Ceil mode rounds the output size up: ⌈(size + before + after − kernel) / stride⌉ + 1, except
    that a last window starting past the input and the padding before it (in the padding after)
    is dropped. The extra padding makes the floor-mode output of the padded map that size.
    """
    total = size + before + after
    if total < kernel:
        return 0
    out = -(-(total - kernel) // stride) + 1
    if (out - 1) * stride >= size + before:
        out -= 1
    return max(0, (out - 1) * stride + kernel - total)


def used_padding(size: int, kernel: int, stride: int, before: int, after: int) -> int:
    """The part of the padding ``after`` one axis that some pooling window reaches (the rest changes nothing)."""
    total = size + before + after
    if total < kernel:
        return after
    end = (total - kernel) // stride * stride + kernel  # where the last window ends
    return max(0, after - (total - end))


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
