"""PyTorch importer: an ``nn.Module`` (read with torch.fx), a TorchScript file, or a state dict plus
its class → CNN graph.

Safety: no Python code stored in a file ever runs. A TorchScript archive (a zip with a ``code/``
folder) is loaded with ``torch.jit.load``, which runs TorchScript only; every other file is read
with ``torch.load(weights_only=True)``, which refuses any pickled object but tensors and plain
containers. A state dict needs the network's class, named ``module:Class`` (``--torch-class``);
importing that module runs its code, as the user asked.

Reading: an ``nn.Module`` is traced symbolically with torch.fx and stock ``torch.nn`` layers are
read from their attributes. A TorchScript module is read from its graph: calls of stock layers
that keep their configuration (scripted modules) are read from their attributes, everything else
(traced modules, user code) op by op (``aten::conv2d``, ``aten::batch_norm``…). Control flow
that depends on the input cannot be read faithfully and is refused; an ``if`` on a module attribute
fixed when the module was built (``if self.use_res_connect:``) follows the branch it takes.
Finally the graph is run beside the module on random input; any difference (an operation spkeras
did not see) is refused, so an import is either faithful or an error.

Modules do not record their input shape: pass ``input_shape=(C, H, W)`` (or ``(F,)``), set an
``input_shape`` attribute on the module, or use ``--input-shape C,H,W`` on the command line.
"""

from __future__ import annotations

import contextlib
import importlib
import operator
import os
import pickle
import re
import sys
import zipfile
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import ConfigError, ModelError
from ..ir import Graph
from ..ops import run_graph
from .common import (BATCH, GraphBuilder, IF_RATE, Value, activation_error, ceil_mode_extra, compare_outputs,
                     first_line, is_activation, parse_input_shape)

SUPPORTED = ("Conv2d (groups, depthwise), Linear, BatchNorm1d/2d, ReLU (module, F.relu, torch.relu), clipped ReLU "
             "(ReLU6, Hardtanh(0, c), clamp(x, 0, c)), MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, "
             "AdaptiveMaxPool2d(1), ZeroPad2d/ConstantPad2d(p, 0)/F.pad, Flatten (module, torch.flatten(x, 1), "
             "x.view(x.size(0), -1)), Dropout, residual + / torch.add, torch.cat(dim=1), final Softmax")
SUFFIXES = (".pt", ".pth", ".ts")

CONTAINERS = {"Sequential", "ModuleList", "ModuleDict"}


def _hint(name: str) -> str:
    """Advice for an unsupported module class or function name."""
    lowered = name.lower()
    if "pool" in lowered:
        return "; supported pooling: MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, AdaptiveMaxPool2d(1)"
    if "pad" in lowered:
        return "; only zero padding is supported (ZeroPad2d, ConstantPad2d(p, 0), F.pad(x, p))"
    if lowered in ("stack", "hstack", "vstack", "dstack"):
        return "; only concatenation along channels (torch.cat(..., dim=1)) is supported"
    return ""


def _unsupported(label: str, name: str, message: str | None = None) -> ModelError:
    """The refusal of an unsupported module class or function ``name`` in ``label``: why, for an
    activation an IF neuron cannot represent, else ``message`` (default: what is supported)."""
    bare = name.split(".")[-1].rstrip("_")
    if is_activation(bare):
        return activation_error(label, name)
    return ModelError(message or f"unsupported {label}: supported are {SUPPORTED}{_hint(bare)}")


def _pair(value) -> tuple[int, int]:
    if isinstance(value, (list, tuple)):
        return (int(value[0]), int(value[-1])) if len(value) in (1, 2) else tuple(value)
    return int(value), int(value)


def _output_size(value) -> list:
    """An adaptive pool's output size as [oh, ow], None meaning 'the input's size'."""
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    items = items * 2 if len(items) == 1 else items
    return [None if v is None else int(v) for v in items]


def _number(label: str, value, what: str):
    """A Python number from a constant argument (int, float, or a one-element constant tensor)."""
    if value is None or isinstance(value, (int, float)):
        return value
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    raise ModelError(f"{label}: its {what} is not a constant number; only constant bounds are supported")


class _Param:
    """A parameter or buffer read directly (prim::GetAttr / fx get_attr)."""

    def __init__(self, name: str, tensor: torch.Tensor | None = None):
        self.name, self.tensor = name, tensor


class _Module:
    """A TorchScript submodule and its dotted path in the model."""

    def __init__(self, module, path: str):
        self.module, self.path = module, path


class _Function:
    """A TorchScript function constant (F.relu, F.dropout… called with prim::CallFunction)."""

    def __init__(self, name: str):
        self.name = name


class _Indices:
    """The indices output of a max pool (aten::adaptive_max_pool2d returns them always), usable by nothing."""

    def __init__(self, label: str):
        self.label = label


# ------------------------------------------------------------------ the reader shared by both front-ends

class _Reader:
    """Turns layer calls and tensor functions into IR nodes through a GraphBuilder."""

    def __init__(self, input_shape: tuple[int, ...], where: str):
        self.b = GraphBuilder(input_shape, source="input (model input)")
        self.where = where

    # -------------------------------------------------- helpers

    def tensor(self, label: str, value, what: str = "input") -> Value:
        if isinstance(value, Value):
            return value
        if isinstance(value, _Indices):
            raise ModelError(f"{label}: uses the indices of the max pool {value.label}; max-pooling indices are "
                             "not supported")
        if isinstance(value, _Param):
            raise ModelError(f"{label}: uses the parameter {value.name!r} directly as a tensor; "
                             f"only calls of supported layers are supported ({SUPPORTED})")
        raise ModelError(f"{label}: its {what} is a constant ({type(value).__name__}), not a tensor computed from the input")

    def weight(self, label: str, value, key: str):
        if value is None:
            return None
        if isinstance(value, _Param):
            return value.tensor
        if isinstance(value, torch.Tensor):
            return value
        raise ModelError(f"{label}: its {key} is not a parameter of the model")

    def torch_shape(self, x: Value) -> tuple:
        return (BATCH, *self.b.shape(x), *((1, 1) if x.squeezed else ()))

    # -------------------------------------------------- layers, shared by module and op handlers

    def conv(self, base, label, x, weight, bias, stride, padding, dilation=(1, 1), groups=1) -> Value:
        if _pair(dilation) != (1, 1):
            raise ModelError(f"{label}: dilation {_pair(dilation)} is not supported; only 1")
        weight = self.weight(label, weight, "weight")
        if weight is None or weight.dim() != 4:
            raise ModelError(f"{label}: only 2-D convolutions (Conv2d) are supported")
        kh, kw = weight.shape[2:]
        if isinstance(padding, str):
            if padding == "valid":
                pads = [0, 0, 0, 0]
            elif padding == "same":  # torch: stride 1, the odd pixel after
                pads = [(kh - 1) // 2, kh - 1 - (kh - 1) // 2, (kw - 1) // 2, kw - 1 - (kw - 1) // 2]
            else:
                raise ModelError(f"{label}: padding={padding!r} is not supported")
        else:
            ph, pw = _pair(padding)
            pads = [ph, ph, pw, pw]
        return self.b.conv2d(base, label, self.tensor(label, x), weight, self.weight(label, bias, "bias"),
                             _pair(stride), pads, int(groups))

    def linear(self, base, label, x, weight, bias) -> Value:
        x = self.tensor(label, x)
        self.b.require_plain(label, x)
        return self.b.dense(base, label, x, self.weight(label, weight, "weight"), self.weight(label, bias, "bias"))

    def batchnorm(self, base, label, x, gamma, beta, mean, var, eps, rank: int | None = None) -> Value:
        x = self.tensor(label, x)
        if mean is None or var is None:
            raise ModelError(f"{label}: track_running_stats=False (batch statistics at inference) is not supported")
        shape = self.b.shape(x)
        if rank is not None and len(shape) != rank:
            raise ModelError(f"{label}: reads a tensor of shape {shape}; BatchNorm1d is supported on (N, F) "
                             "and BatchNorm2d on (N, C, H, W)")
        return self.b.batchnorm(base, label, x, self.weight(label, gamma, "weight"), self.weight(label, beta, "bias"),
                                self.weight(label, mean, "running_mean"), self.weight(label, var, "running_var"),
                                float(eps))

    def pool_geometry(self, label, x: Value, kernel, stride, padding, ceil_mode):
        """(kernel, stride, (top, bottom, left, right) padding) of a 2-D pool; ceil mode is extra
        bottom/right padding."""
        self.b.require_rank(label, x, 3, "pooling")
        kernel = _pair(kernel)
        stride = _pair(stride) if stride not in (None, [], ()) else kernel
        ph, pw = _pair(padding)
        pads = [ph, ph, pw, pw]
        if ceil_mode:
            h, w = self.b.shape(x)[1:]
            pads[1] += ceil_mode_extra(h, kernel[0], stride[0], ph, ph)
            pads[3] += ceil_mode_extra(w, kernel[1], stride[1], pw, pw)
        return kernel, stride, pads

    def avgpool(self, base, label, x, kernel, stride, padding=0, ceil_mode=False, count_include_pad=True,
                divisor_override=None) -> Value:
        x = self.tensor(label, x)
        kernel, stride, pads = self.pool_geometry(label, x, kernel, stride, padding, False)
        if ceil_mode and pads != self.pool_geometry(label, x, kernel, stride, padding, True)[2]:
            raise ModelError(f"{label}: ceil_mode=True adds a partial window here, whose mean PyTorch takes over "
                             "fewer pixels; only ceil_mode=False is supported")
        if any(pads) and not count_include_pad:
            raise ModelError(f"{label}: padding with count_include_pad=False is not supported; only "
                             "count_include_pad=True (the default: padded zeros count in the mean)")
        if divisor_override is not None and int(divisor_override) != kernel[0] * kernel[1]:
            raise ModelError(f"{label}: divisor_override={divisor_override} is not supported")
        return self.b.avgpool(base, label, x, kernel, stride, pads)

    def adaptive_avgpool(self, base, label, x, output_size) -> Value:
        return self.b.adaptive_avgpool(base, label, self.tensor(label, x), _output_size(output_size))

    def maxpool(self, base, label, x, kernel, stride=None, padding=0, dilation=1, ceil_mode=False,
                return_indices=False) -> Value:
        if return_indices:
            raise ModelError(f"{label}: return_indices=True is not supported; max-pooling indices cannot be used")
        if _pair(dilation) != (1, 1):
            raise ModelError(f"{label}: dilation {_pair(dilation)} is not supported; only 1")
        x = self.tensor(label, x)
        kernel, stride, pads = self.pool_geometry(label, x, kernel, stride, padding, ceil_mode)
        return self.b.maxpool(base, label, x, kernel, stride, pads)

    def adaptive_maxpool(self, base, label, x, output_size, return_indices=False) -> Value:
        if return_indices:
            raise ModelError(f"{label}: return_indices=True is not supported; max-pooling indices cannot be used")
        x = self.tensor(label, x)
        self.b.require_rank(label, x, 3, "adaptive max pooling")
        size = self.b.shape(x)[1:]
        out = [n if o is None else o for n, o in zip(size, _output_size(output_size))]
        if out == [1, 1]:
            return self.b.global_maxpool(base, label, x)
        if all(o >= 1 and n % o == 0 for n, o in zip(size, out)):
            kernel = [n // o for n, o in zip(size, out)]
            return self.b.maxpool(base, label, x, kernel, kernel, (0, 0, 0, 0))
        raise ModelError(f"{label}: output size {tuple(out)} does not divide the input size {tuple(size)}; "
                         "only AdaptiveMaxPool2d(1) or sizes that divide evenly are supported")

    def clipped_relu(self, base, label, x, low, high) -> Value:
        """clamp(x, low, high): a (clipped) ReLU when ``low`` is 0."""
        x = self.tensor(label, x)
        low, high = _number(label, low, "lower bound"), _number(label, high, "upper bound")
        if low is None or low != 0:
            shown = f"[{'-inf' if low is None else low}, {'inf' if high is None else high}]"
            raise ModelError(f"{label}: clips to {shown}; only a lower bound of 0 (ReLU, ReLU6, clamp(x, 0, c)) "
                             f"can be converted: {IF_RATE}")
        return self.b.relu(base, label, x, None if high is None else float(high))

    def pad(self, base, label, x, pad, mode="constant", value=None) -> Value:
        x = self.tensor(label, x)
        if mode != "constant":
            raise ModelError(f"{label}: mode={mode!r} padding is not supported; only zero padding "
                             "(mode='constant', value=0)")
        value = _number(label, value, "fill value")
        if value not in (None, 0):
            raise ModelError(f"{label}: padding with the value {value} is not supported; only zero padding")
        pad = [int(p) for p in pad]
        if len(pad) % 2 or any(pad[4:]):
            raise ModelError(f"{label}: pads {tuple(pad)} are not supported; only padding of the last two axes "
                             "(left, right, top, bottom)")
        left, right, top, bottom = (pad + [0, 0, 0, 0])[:4]
        return self.b.pad(base, label, x, [top, bottom, left, right])

    def cat(self, base, label, tensors, dim=0) -> Value:
        if not isinstance(tensors, (list, tuple)) or not tensors:
            raise ModelError(f"{label}: expected a list of tensors to concatenate")
        terms = [self.tensor(label, t) for t in tensors]
        rank = len(self.torch_shape(terms[0]))
        if int(dim) % rank != 1:
            raise ModelError(f"{label}: concatenation along dim={dim} is not supported; only along channels (dim=1)")
        return self.b.concat(base, label, terms)

    def permute(self, base, label, x, dims) -> Value:
        """A permutation of the axes: refused unless it leaves the tensor as it is."""
        x = self.tensor(label, x)
        shape = self.torch_shape(x)
        dims = [int(d) % len(shape) for d in dims]
        if sorted(dims) == list(range(len(shape))):
            permuted = [shape[d] for d in dims]
            moved = [d for d in dims if shape[d] != 1]
            if permuted == list(shape) and moved == sorted(moved):
                return x
        raise ModelError(f"{label}: permuting or transposing the axes of a {len(shape)}-D tensor is not supported; "
                         "spkeras keeps tensors channels-first (N, C, H, W)")

    def transpose(self, base, label, x, dim0, dim1) -> Value:
        rank = len(self.torch_shape(self.tensor(label, x)))
        dims = list(range(rank))
        dims[int(dim0) % rank], dims[int(dim1) % rank] = dims[int(dim1) % rank], dims[int(dim0) % rank]
        return self.permute(base, label, x, dims)

    def flatten(self, base, label, x, start=0, end=-1) -> Value:
        x = self.tensor(label, x)
        rank = len(self.torch_shape(x))
        if start % rank != 1 or end % rank != rank - 1:
            raise ModelError(f"{label}: flatten(start_dim={start}, end_dim={end}) is not supported; "
                             "only flattening every axis but the batch (start_dim=1)")
        return self.b.flatten(base, label, x)

    def reshape(self, base, label, x, shape) -> Value:
        x = self.tensor(label, x)
        shape = list(shape)
        count = 1
        for d in self.torch_shape(x)[1:]:
            count *= d
        if len(shape) == 2 and (shape[0] is BATCH or shape[0] == -1 and shape[1] == count) and shape[1] in (-1, count):
            return self.b.flatten(base, label, x)
        shown = ", ".join("x.size(0)" if d is BATCH else str(d) for d in shape)
        raise ModelError(f"{label}: reshape to ({shown}) is not supported; only flattening, x.view(x.size(0), -1)")

    def add(self, base, label, a, b, alpha=1) -> Value:
        if alpha != 1:
            raise ModelError(f"{label}: torch.add with alpha={alpha} is not supported; only plain sums")
        if not isinstance(a, Value) or not isinstance(b, Value):
            constant = b if isinstance(a, Value) else a
            what = f"the parameter {constant.name!r}" if isinstance(constant, _Param) else f"the constant {constant!r}"
            raise ModelError(f"{label}: adds {what}; only sums of two tensors computed from the input (residual "
                             "connections) are supported")
        return self.b.add_values(base, label, [a, b])

    def dropout(self, base, label, x, training=False) -> Value:
        if training:
            raise ModelError(f"{label}: dropout with training=True is active at inference; pass training=self.training")
        return self.b.dropout(base, label, self.tensor(label, x))

    def softmax(self, base, label, x, dim) -> Value:
        x = self.tensor(label, x)
        return self.b.softmax(base, label, x, 1 if dim is None else int(dim))

    def size(self, label, x, dim=None):
        shape = self.torch_shape(self.tensor(label, x))
        return shape if dim is None else shape[int(dim)]

    # -------------------------------------------------- stock modules (nn.Module or scripted, by attributes)

    def module(self, path: str, module, cls: str, args: list) -> Value:
        label = f"layer {path!r} ({cls})"
        handler = _MODULES.get(cls)
        if handler is None:
            raise _unsupported(label, cls)
        if len(args) != 1:
            raise ModelError(f"{label}: called with {len(args)} arguments; expected one tensor")
        return handler(self, path.replace(".", "_") or cls.lower(), label, module, args[0])

    # -------------------------------------------------- functions and methods (fx) and aten ops (TorchScript)

    def function(self, base: str, label: str, op: str, args: list, kwargs: dict):
        """Apply the function ``op`` (a canonical name, see ``_FX_FUNCTIONS``) to resolved arguments."""
        def arg(k, name, default=None):
            return args[k] if len(args) > k else kwargs.get(name, default)

        if op == "relu":
            return self.b.relu(base, label, self.tensor(label, arg(0, "input")))
        if op == "relu6":
            return self.clipped_relu(base, label, arg(0, "input"), 0, 6)
        if op == "hardtanh":
            return self.clipped_relu(base, label, arg(0, "input"), arg(1, "min_val", -1.0), arg(2, "max_val", 1.0))
        if op == "clamp":
            return self.clipped_relu(base, label, arg(0, "input"), arg(1, "min"), arg(2, "max"))
        if op == "clamp_min":
            return self.clipped_relu(base, label, arg(0, "input"), arg(1, "min"), None)
        if op == "clamp_max":
            return self.clipped_relu(base, label, arg(0, "input"), None, arg(1, "max"))
        if op == "maxpool":
            return self.maxpool(base, label, arg(0, "input"), arg(1, "kernel_size"), arg(2, "stride"),
                                arg(3, "padding", 0), arg(4, "dilation", 1), arg(5, "ceil_mode", False),
                                arg(6, "return_indices", False))
        if op == "adaptive_maxpool":
            return self.adaptive_maxpool(base, label, arg(0, "input"), arg(1, "output_size"),
                                         arg(2, "return_indices", False))
        if op == "pad":
            return self.pad(base, label, arg(0, "input"), arg(1, "pad"), arg(2, "mode", "constant"),
                            arg(3, "value"))
        if op == "pad_nd":
            return self.pad(base, label, arg(0, "input"), arg(1, "pad"), "constant", arg(2, "value", 0))
        if op == "cat":
            return self.cat(base, label, arg(0, "tensors"), kwargs.get("axis", arg(1, "dim", 0)))
        if op == "permute":
            dims = args[1] if len(args) == 2 and isinstance(args[1], (list, tuple)) else args[1:]
            return self.permute(base, label, args[0], kwargs.get("dims", dims))
        if op == "transpose":
            return self.transpose(base, label, arg(0, "input"), arg(1, "dim0"), arg(2, "dim1"))
        if op == "t":
            return self.transpose(base, label, args[0], 0, -1)
        if op == "add":
            return self.add(base, label, arg(0, "input"), arg(1, "other"), arg(2, "alpha", 1))
        if op == "flatten":
            return self.flatten(base, label, arg(0, "input"), arg(1, "start_dim", 0), arg(2, "end_dim", -1))
        if op == "reshape":
            shape = args[1] if len(args) == 2 and isinstance(args[1], (list, tuple)) else args[1:]
            return self.reshape(base, label, args[0], kwargs.get("shape", shape))
        if op == "size":
            return self.size(label, arg(0, "input"), arg(1, "dim"))
        if op == "shape":
            return self.size(label, args[0])
        if op == "getitem":
            container, index = args
            if isinstance(container, Value):
                raise ModelError(f"{label}: indexing or slicing tensors is not supported")
            return container[index]
        if op == "dropout":
            return self.dropout(base, label, arg(0, "input"), arg(2, "training", True))
        if op == "softmax":
            return self.softmax(base, label, arg(0, "input"), arg(1, "dim"))
        if op == "identity":
            return self.tensor(label, args[0])
        if op == "avgpool":
            return self.avgpool(base, label, arg(0, "input"), arg(1, "kernel_size"), arg(2, "stride"),
                                arg(3, "padding", 0), arg(4, "ceil_mode", False), arg(5, "count_include_pad", True),
                                arg(6, "divisor_override"))
        if op == "adaptive_avgpool":
            return self.adaptive_avgpool(base, label, arg(0, "input"), arg(1, "output_size"))
        raise AssertionError(op)

    def aten(self, base: str, label: str, kind: str, args: list):
        """A TorchScript operator (``aten::…``) with resolved arguments."""
        name = kind.split("::")[-1]
        if name in ("relu", "relu_"):
            return self.b.relu(base, label, self.tensor(label, args[0]))
        if name in ("relu6", "relu6_"):
            return self.clipped_relu(base, label, args[0], 0, 6)
        if name in ("hardtanh", "hardtanh_", "clamp", "clamp_", "clip", "clip_"):
            return self.clipped_relu(base, label, args[0], args[1], args[2])
        if name in ("clamp_min", "clamp_min_"):
            return self.clipped_relu(base, label, args[0], args[1], None)
        if name in ("clamp_max", "clamp_max_"):
            return self.clipped_relu(base, label, args[0], None, args[1])
        if name == "max_pool2d":
            return self.maxpool(base, label, *args[:6])
        if name == "max_pool2d_with_indices":
            return self.maxpool(base, label, *args[:6], True)
        if name == "adaptive_max_pool2d":
            return self.adaptive_maxpool(base, label, args[0], args[1])
        if name == "pad":
            return self.pad(base, label, *args[:4])
        if name == "constant_pad_nd":
            return self.pad(base, label, args[0], args[1], "constant", args[2] if len(args) > 2 else 0)
        if name in ("cat", "concat", "concatenate"):
            return self.cat(base, label, args[0], args[1])
        if name == "permute":
            return self.permute(base, label, args[0], args[1])
        if name in ("transpose", "transpose_", "swapaxes", "swapdims"):
            return self.transpose(base, label, *args[:3])
        if name in ("t", "t_"):
            return self.transpose(base, label, args[0], 0, -1)
        if name in ("add", "add_"):
            return self.add(base, label, args[0], args[1], args[2] if len(args) > 2 else 1)
        if name == "flatten":
            return self.flatten(base, label, *args[:3])
        if name in ("view", "reshape"):
            return self.reshape(base, label, args[0], args[1])
        if name == "size":
            return self.size(label, *args[:2])
        if name in ("dropout", "dropout_", "feature_dropout", "alpha_dropout"):
            return self.dropout(base, label, args[0], args[2])
        if name == "softmax":
            return self.softmax(base, label, args[0], args[1])
        if name == "contiguous":
            return self.tensor(label, args[0])
        if name == "_convolution":
            x, w, b, stride, padding, dilation, transposed, _, groups = args[:9]
            if transposed:
                raise ModelError(f"unsupported {label}: transposed convolutions are not supported; "
                                 f"supported are {SUPPORTED}")
            return self.conv(base, label, x, w, b, stride, padding, dilation, groups)
        if name in ("conv2d", "_convolution_mode"):
            return self.conv(base, label, *args[:7])
        if name == "linear":
            return self.linear(base, label, *args[:3])
        if name == "batch_norm":
            x, gamma, beta, mean, var, training, _, eps = args[:8]
            if training:
                raise ModelError(f"{label}: batch_norm in training mode is not supported")
            return self.batchnorm(base, label, x, gamma, beta, mean, var, eps)
        if name == "avg_pool2d":
            return self.avgpool(base, label, *args[:7])
        if name == "adaptive_avg_pool2d":
            return self.adaptive_avgpool(base, label, args[0], args[1])
        if name in ("Int", "IntImplicit", "ScalarImplicit", "Float", "FloatImplicit"):
            return args[0]
        if name == "__getitem__" and not isinstance(args[0], Value):  # x.shape[0]
            return self.function(base, label, "getitem", args[:2], {})
        shown = "torch." + name.rstrip("_")
        raise _unsupported(label, shown, f"unsupported function {shown} in {label}: supported are {SUPPORTED}"
                                         f"{_hint(name.rstrip('_'))}")


def _m_conv2d(r, base, label, m, x):
    if m.padding_mode != "zeros":
        raise ModelError(f"{label}: padding_mode={m.padding_mode!r} is not supported; only 'zeros'")
    return r.conv(base, label, x, m.weight, m.bias, m.stride, m.padding, m.dilation, m.groups)


def _m_linear(r, base, label, m, x):
    return r.linear(base, label, x, m.weight, m.bias)


def _m_batchnorm(rank):
    def handler(r, base, label, m, x):
        if not m.track_running_stats:
            raise ModelError(f"{label}: track_running_stats=False (batch statistics at inference) is not supported")
        affine = m.affine
        return r.batchnorm(base, label, x, m.weight if affine else None, m.bias if affine else None,
                           m.running_mean, m.running_var, m.eps, rank)
    return handler


def _m_relu(r, base, label, m, x):
    return r.b.relu(base, label, r.tensor(label, x))


def _m_clipped_relu(r, base, label, m, x):  # ReLU6, Hardtanh
    return r.clipped_relu(base, label, x, m.min_val, m.max_val)


def _m_avgpool(r, base, label, m, x):
    return r.avgpool(base, label, x, m.kernel_size, m.stride, m.padding, m.ceil_mode, m.count_include_pad,
                     m.divisor_override)


def _m_adaptive(r, base, label, m, x):
    return r.adaptive_avgpool(base, label, x, m.output_size)


def _m_maxpool(r, base, label, m, x):
    return r.maxpool(base, label, x, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, m.return_indices)


def _m_adaptive_max(r, base, label, m, x):
    return r.adaptive_maxpool(base, label, x, m.output_size, m.return_indices)


def _m_pad(r, base, label, m, x):  # ZeroPad2d, ConstantPad2d
    return r.pad(base, label, x, m.padding, "constant", m.value)


def _m_flatten(r, base, label, m, x):
    return r.flatten(base, label, x, m.start_dim, m.end_dim)


def _m_dropout(r, base, label, m, x):
    return r.dropout(base, label, x)


def _m_identity(r, base, label, m, x):
    return r.tensor(label, x)


def _m_softmax(r, base, label, m, x):
    return r.softmax(base, label, x, m.dim)


_MODULES = {
    "Conv2d": _m_conv2d, "Linear": _m_linear, "BatchNorm1d": _m_batchnorm(1), "BatchNorm2d": _m_batchnorm(3),
    "ReLU": _m_relu, "ReLU6": _m_clipped_relu, "Hardtanh": _m_clipped_relu, "AvgPool2d": _m_avgpool,
    "AdaptiveAvgPool2d": _m_adaptive, "MaxPool2d": _m_maxpool, "AdaptiveMaxPool2d": _m_adaptive_max,
    "ZeroPad2d": _m_pad, "ConstantPad2d": _m_pad, "Flatten": _m_flatten, "Dropout": _m_dropout,
    "Dropout1d": _m_dropout, "Dropout2d": _m_dropout, "Identity": _m_identity, "Softmax": _m_softmax,
}
# an attribute that scripted stock modules keep and traced ones lose
_CONFIG_ATTRIBUTE = {
    "Conv2d": "stride", "Linear": "in_features", "BatchNorm1d": "eps", "BatchNorm2d": "eps", "ReLU": "inplace",
    "ReLU6": "max_val", "Hardtanh": "max_val", "AvgPool2d": "kernel_size", "AdaptiveAvgPool2d": "output_size",
    "MaxPool2d": "kernel_size", "AdaptiveMaxPool2d": "output_size", "ZeroPad2d": "padding",
    "ConstantPad2d": "padding", "Flatten": "start_dim", "Dropout": "p", "Dropout1d": "p", "Dropout2d": "p",
    "Softmax": "dim",
}

# ------------------------------------------------------------------ torch.fx front-end

_FX_FUNCTIONS = {
    F.relu: "relu", torch.relu: "relu", torch.relu_: "relu", operator.add: "add", operator.iadd: "add",
    torch.add: "add", torch.flatten: "flatten", torch.reshape: "reshape", F.dropout: "dropout",
    F.softmax: "softmax", torch.softmax: "softmax", operator.getitem: "getitem", F.avg_pool2d: "avgpool",
    F.adaptive_avg_pool2d: "adaptive_avgpool",
    F.relu6: "relu6", F.hardtanh: "hardtanh", torch.clamp: "clamp", torch.clip: "clamp",
    torch.clamp_min: "clamp_min", torch.clamp_max: "clamp_max",
    F.max_pool2d: "maxpool", torch.max_pool2d: "maxpool", F.adaptive_max_pool2d: "adaptive_maxpool",
    F.pad: "pad", torch.constant_pad_nd: "pad_nd", torch.cat: "cat", torch.concat: "cat", torch.concatenate: "cat",
    torch.permute: "permute", torch.transpose: "transpose", torch.swapaxes: "transpose", torch.swapdims: "transpose",
    torch.t: "t",
}
_FX_METHODS = {
    "relu": "relu", "relu_": "relu", "add": "add", "add_": "add", "__add__": "add", "__iadd__": "add",
    "flatten": "flatten", "view": "reshape", "reshape": "reshape", "size": "size", "softmax": "softmax",
    "contiguous": "identity", "clamp": "clamp", "clamp_": "clamp", "clip": "clamp", "clip_": "clamp",
    "clamp_min": "clamp_min", "clamp_min_": "clamp_min", "clamp_max": "clamp_max", "clamp_max_": "clamp_max",
    "permute": "permute", "transpose": "transpose", "swapaxes": "transpose", "swapdims": "transpose", "t": "t",
}


def _function_name(target) -> str:
    """torch.sigmoid, F.max_pool2d, operator.mul… for messages."""
    name = getattr(target, "__name__", str(target))
    if getattr(F, name, None) is target:
        return f"F.{name}"
    module = (getattr(target, "__module__", None) or "").replace("_operator", "operator")
    if module.startswith("torch.nn.functional"):
        return f"F.{name}"
    if module.startswith("torch") or module == "" and hasattr(torch, name):
        return f"torch.{name}"
    return f"{module}.{name}" if module else name


def _stock_class(module) -> str | None:
    """The class name of a stock ``torch.nn`` module (exact class, not a subclass), else None."""
    cls = type(module)
    return cls.__name__ if cls.__module__.startswith("torch.nn.modules.") else None


def _read_fx(module: torch.nn.Module, reader: _Reader) -> Value:
    import torch.fx

    try:
        traced = torch.fx.symbolic_trace(module)
    except Exception as exc:  # user code that torch.fx cannot follow (data-dependent control flow…)
        raise ModelError(f"{reader.where}: torch.fx cannot trace it ({first_line(exc, 160)}); "
                         "remove data-dependent control flow, or save it as TorchScript") from None
    env: dict = {}
    output = None
    for node in traced.graph.nodes:
        args = torch.fx.node.map_arg(node.args, lambda n: env[n])
        kwargs = torch.fx.node.map_arg(node.kwargs, lambda n: env[n])
        if node.op == "placeholder":
            if "input" not in {getattr(v, "node", None) for v in env.values()}:
                env[node] = Value("input")
            elif node.args:
                env[node] = node.args[0]  # an optional argument left at its default
            else:
                raise ModelError(f"{reader.where}: forward() takes more than one input; only one is supported")
        elif node.op == "get_attr":
            env[node] = _Param(node.target, _get_attr(module, node.target))
        elif node.op == "call_module":
            sub = module.get_submodule(node.target)
            cls = _stock_class(sub) or type(sub).__name__
            env[node] = reader.module(node.target, sub, cls, list(args))
        elif node.op in ("call_function", "call_method"):
            if node.op == "call_method":
                op, shown = _FX_METHODS.get(node.target), f"Tensor.{node.target}"
            elif node.target is getattr and len(args) == 2 and args[1] == "shape":
                op, shown, args = "shape", "x.shape", args[:1]
            else:
                op, shown = _FX_FUNCTIONS.get(node.target), _function_name(node.target)
            label = f"{node.name} ({shown})"
            if op is None:
                bare = shown.split(".")[-1]
                raise _unsupported(label, shown, f"unsupported function {shown} ({node.name}): supported are "
                                                 f"{SUPPORTED}{_hint(bare)}")
            env[node] = reader.function(node.name, label, op, list(args), dict(kwargs))
        elif node.op == "output":
            output = args[0]
    if not isinstance(output, Value):
        raise ModelError(f"{reader.where}: forward() must return one tensor, not a {type(output).__name__}")
    return output


def _get_attr(module, target: str):
    value = module
    for part in target.split("."):
        value = getattr(value, part)
    return value if isinstance(value, torch.Tensor) else None


# ------------------------------------------------------------------ TorchScript front-end

def _script_class(module) -> tuple[str, bool]:
    """(class name, whether it is a stock torch.nn class) of a TorchScript module."""
    qualified = re.sub(r"___torch_mangle_\d+\.", "", module._c._type().qualified_name())
    return qualified.split(".")[-1], qualified.startswith("__torch__.torch.nn.modules.")


def _read_script(module, reader: _Reader) -> Value:
    graph = module.graph
    inputs = list(graph.inputs())
    if len(inputs) != 2:
        raise ModelError(f"{reader.where}: forward() takes {len(inputs) - 1} inputs; only one is supported")
    env = {inputs[0]: _Module(module, ""), inputs[1]: Value("input")}
    output = _walk(reader, graph, env, reader.where, "")
    if not isinstance(output, Value):
        raise ModelError(f"{reader.where}: forward() must return one tensor, not a {type(output).__name__}")
    return output


def _call_method(reader: _Reader, target: _Module, method: str, args: list):
    """A submodule call: a stock layer read from its attributes, or its graph walked op by op."""
    cls, stock = _script_class(target.module)
    path = target.path or cls
    if stock and cls not in CONTAINERS:
        if cls not in _MODULES:
            raise _unsupported(f"layer {path!r} ({cls})", cls)
        if method == "forward" and hasattr(target.module, _CONFIG_ATTRIBUTE.get(cls, "training")):
            return reader.module(path, target.module, cls, args)
    graph = target.module._c._get_method(method).graph
    inputs = list(graph.inputs())
    if len(inputs) != len(args) + 1:
        raise ModelError(f"layer {path!r} ({cls}): {method}() is called with {len(args)} arguments but takes {len(inputs) - 1}")
    env = {inputs[0]: target, **dict(zip(inputs[1:], args))}
    return _walk(reader, graph, env, f"layer {path!r} ({cls})", target.path, leaf=stock and cls not in CONTAINERS)


# Python functions of torch.nn.functional that TorchScript calls with prim::CallFunction → op of _Reader.function
_SCRIPT_FUNCTIONS = {
    "relu": "relu", "dropout": "dropout", "softmax": "softmax", "flatten": "flatten",
    "adaptive_avg_pool2d": "adaptive_avgpool", "relu6": "relu6", "hardtanh": "hardtanh", "pad": "pad",
    "_max_pool2d": "maxpool", "max_pool2d": "maxpool", "max_pool2d_with_indices": "maxpool_indices",
    "_adaptive_max_pool2d": "adaptive_maxpool", "adaptive_max_pool2d": "adaptive_maxpool",
    "adaptive_max_pool2d_with_indices": "adaptive_maxpool_indices",
}


def _walk(reader: _Reader, graph, env: dict, owner: str, path: str, leaf: bool = False):
    """Interpret one TorchScript graph; returns the value it returns. Nodes made inside a stock
    layer (``leaf``) are named after the layer, others after the layer and the operator."""
    flow = next((n.kind() for n in graph.nodes() if n.kind() == "prim::Loop"
                 or n.kind() == "prim::If" and _from_tensors(n.inputsAt(0))), None)
    if flow:
        raise ModelError(f"{owner}: control flow ({flow}) in a TorchScript module cannot be read faithfully; "
                         "script or trace a module without it, or pass the nn.Module itself")
    _walk_nodes(reader, graph.nodes(), env, owner, path, leaf)
    returned = list(graph.return_node().inputs())
    return env.get(returned[0]) if len(returned) == 1 else list(env.get(v) for v in returned)


def _from_tensors(value) -> bool:
    """Whether a TorchScript value is computed from tensors (so from the input), not only from
    constants and module attributes."""
    if value.type().kind() == "TensorType":
        return True
    node = value.node()
    if node.kind() in ("prim::Constant", "prim::GetAttr", "prim::Param"):
        return False
    return any(_from_tensors(v) for v in node.inputs())


def _walk_nodes(reader: _Reader, nodes, env: dict, owner: str, path: str, leaf: bool) -> None:
    """Interpret TorchScript nodes in order, recording their outputs in ``env``. A ``prim::If``
    whose condition is fixed when the module is built (``if self.use_res_connect:``) runs the
    branch it takes; control flow that depends on the input cannot be read faithfully."""
    for node in nodes:
        kind = node.kind()
        if kind == "prim::If" and type(env.get(node.inputsAt(0))) is bool:
            block = list(node.blocks())[0 if env[node.inputsAt(0)] else 1]
            _walk_nodes(reader, block.nodes(), env, owner, path, leaf)
            for out, value in zip(node.outputs(), block.outputs()):
                env[out] = env.get(value)
            continue
        if kind in ("prim::If", "prim::Loop"):
            raise ModelError(f"{owner}: control flow ({kind}) in a TorchScript module cannot be read faithfully; "
                             "script or trace a module without it, or pass the nn.Module itself")
        args = [env.get(v) for v in node.inputs()]
        outputs = list(node.outputs())
        base = path.replace(".", "_") if leaf and path else (
            (path.replace(".", "_") + "_" if path else "") + kind.split("::")[-1].strip("_"))
        if kind == "prim::Constant":
            out = outputs[0]
            env[out] = _Function(node.s("name")) if out.type().kind() == "FunctionType" else out.toIValue()
        elif kind == "prim::GetAttr":
            owner_module = args[0]
            if not isinstance(owner_module, _Module):
                raise ModelError(f"{owner}: reads an attribute of something other than a module")
            name = node.s("name")
            value = getattr(owner_module.module, name)
            dotted = f"{owner_module.path}.{name}" if owner_module.path else name
            if isinstance(value, torch.jit.ScriptModule):
                env[outputs[0]] = _Module(value, dotted)
            elif isinstance(value, torch.Tensor):
                env[outputs[0]] = _Param(dotted, value)
            else:
                env[outputs[0]] = value
        elif kind == "prim::CallMethod":
            if not isinstance(args[0], _Module):
                raise ModelError(f"{owner}: calls a method of something other than a module")
            env[outputs[0]] = _call_method(reader, args[0], node.s("name"), args[1:])
        elif kind == "prim::CallFunction":
            function = args[0]
            name = function.name if isinstance(function, _Function) else "?"
            op = _SCRIPT_FUNCTIONS.get(name)
            if op is None:
                raise _unsupported(f"{owner}: F.{name}", f"F.{name}", f"unsupported function F.{name} in {owner}: "
                                                                     f"supported are {SUPPORTED}{_hint(name)}")
            label = f"{owner}: F.{name}"
            call = args[1:]
            base = (path.replace(".", "_") + "_" if path else "") + name
            if op == "dropout":
                env[outputs[0]] = reader.dropout(base, label, call[0], call[2])
            elif op == "maxpool_indices":
                env[outputs[0]] = reader.maxpool(base, label, *call[:6], True)
            elif op == "adaptive_maxpool_indices":
                env[outputs[0]] = reader.adaptive_maxpool(base, label, call[0], call[1], True)
            else:
                env[outputs[0]] = reader.function(base, label, op, call, {})
        elif kind in ("prim::ListConstruct", "prim::TupleConstruct"):
            env[outputs[0]] = list(args)
        elif kind in ("prim::ListUnpack", "prim::TupleUnpack"):
            for out, value in zip(outputs, args[0]):
                env[out] = value
        elif kind in ("prim::NumToTensor", "prim::device", "prim::dtype"):
            env[outputs[0]] = args[0]
        elif kind.startswith("aten::"):
            label = f"{owner}: {kind}"
            if kind == "aten::adaptive_max_pool2d":  # its second output, the indices, must stay unused
                env[outputs[1]] = _Indices(label)
            elif len(outputs) != 1:
                raise ModelError(f"unsupported function torch.{kind[6:]} in {owner}: supported are {SUPPORTED}")
            env[outputs[0]] = reader.aten(base, label, kind, args)
        else:
            raise ModelError(f"unsupported TorchScript operation {kind} in {owner}: supported are {SUPPORTED}")


# ------------------------------------------------------------------ entry points

@contextlib.contextmanager
def _eval_mode(module: torch.nn.Module):
    """Put every submodule in eval mode, restoring each one's own mode afterwards."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


def module_to_graph(module: torch.nn.Module, input_shape=None, where: str | None = None) -> Graph:
    """Translate an ``nn.Module`` or TorchScript module into a CNN graph (see the module docstring)."""
    scripted = isinstance(module, torch.jit.ScriptModule)
    name = getattr(module, "original_name", None) if scripted else type(module).__name__
    where = where or f"model {name}"
    shape = input_shape if input_shape is not None else getattr(module, "input_shape", None)
    if shape is None:
        raise ModelError(f"{where}: a PyTorch model does not record its input shape; pass input_shape=(C, H, W) "
                         "(--input-shape C,H,W) or set module.input_shape")
    reader = _Reader(parse_input_shape(shape, where), where)
    with _eval_mode(module), torch.no_grad():
        try:
            expected = module(reader.b.example)
        except Exception as exc:  # the module's own code fails on this input
            reason = [line for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
            raise ModelError(f"{where}: running it on an input of shape {tuple(reader.b.example.shape[1:])} fails "
                             f"({' '.join(reason[-1].split())[:160]}); check --input-shape") from None
        if not isinstance(expected, torch.Tensor):
            raise ModelError(f"{where}: forward() must return one tensor, not a {type(expected).__name__}")
        output = _read_script(module, reader) if scripted else _read_fx(module, reader)
        graph = reader.b.finish(output, name or "model", where)
        compare_outputs(expected, run_graph(graph, reader.b.example), where)
    return graph


def is_torchscript(path: Path) -> bool:
    """True for a TorchScript archive: a zip whose top folder holds ``code/``."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.split("/")[1:2] == ["code"] for name in archive.namelist())


def load_torch(path, input_shape=None, torch_class: str | None = None) -> Graph:
    """Import a TorchScript file, or a state dict (``torch.save(model.state_dict())``) with its class."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file {path} {'is not a file' if path.exists() else 'does not exist'}")
    if is_torchscript(path):
        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:  # corrupt archives raise RuntimeError and others
            raise ModelError(f"cannot load TorchScript file {path}: {first_line(exc, 160)}") from None
        return module_to_graph(module, input_shape, str(path))
    state = _load_weights(path)
    if torch_class is None:
        raise ModelError(f"{path} holds weights only (a state dict): pass the network's class with --torch-class "
                         "module:Class and --input-shape C,H,W, or save the model as TorchScript "
                         "(torch.jit.script(model).save(path))")
    module = instantiate(torch_class)
    try:
        module.load_state_dict(_state_dict(state, path))
    except Exception as exc:  # missing or unexpected keys, shape mismatches
        raise ModelError(f"{path}: the weights do not fit {torch_class}: {first_line(exc, 200)}") from None
    return module_to_graph(module, input_shape, f"{path} ({torch_class})")


def _load_weights(path: Path):
    """``torch.load(weights_only=True)``: tensors and containers only, never code."""
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        text = " ".join(str(exc).split())
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        if isinstance(exc, pickle.UnpicklingError) and found:
            raise ModelError(f"{path}: refused to unpickle the Python object {found[1]}: spkeras reads PyTorch files "
                             "with weights_only=True and never runs code stored in them; save model.state_dict() and "
                             "pass --torch-class, or save TorchScript") from None
        if isinstance(exc, pickle.UnpicklingError) and "Weights only load failed" in text:
            raise ModelError(f"cannot load PyTorch file {path}: it is not a weights file that weights_only=True can "
                             "read (truncated, corrupt, or a plain Python pickle?)") from None
        raise ModelError(f"cannot load PyTorch file {path}: {first_line(exc, 120)} (truncated or corrupt file?)") from None


def _state_dict(obj, path: Path) -> dict:
    """The state dict in a loaded object (itself, or under 'state_dict' / 'model_state_dict' / 'model')."""
    if isinstance(obj, dict):
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
        for key in ("state_dict", "model_state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return inner
    raise ModelError(f"{path}: holds a {type(obj).__name__} but not a state dict of tensors")


def instantiate(spec: str) -> torch.nn.Module:
    """``module:Class`` → ``Class()``; the module is looked up on sys.path and in the current folder."""
    module_name, _, class_name = spec.partition(":")
    if not module_name or not class_name:
        raise ConfigError(f"--torch-class must look like module:Class, got {spec!r}")
    added = os.getcwd() not in sys.path
    if added:
        sys.path.insert(0, os.getcwd())
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
        module = cls()
    except Exception as exc:  # import errors, missing class, constructor arguments
        raise ModelError(f"cannot create {spec} for --torch-class: {first_line(exc, 160)}") from None
    finally:
        if added:
            sys.path.remove(os.getcwd())
    if not isinstance(module, torch.nn.Module):
        raise ModelError(f"{spec} is a {type(module).__name__}, not a torch.nn.Module")
    return module
