"""ONNX importer: a ``.onnx`` file (or an ``onnx.ModelProto``) → CNN graph, read with the ``onnx``
package alone (no onnxruntime).

Weights come from the graph's initializers (``onnx.numpy_helper``); external tensor data is
refused, so a model file can never make spkeras read other files. Operators: Conv (group),
Gemm, MatMul (+ Add of a bias), BatchNormalization, Relu, Clip with min 0 (ReLU6 and other
clipped ReLUs), MaxPool, GlobalMaxPool, AveragePool, GlobalAveragePool, Pad with zeros,
Concat along channels, Flatten/Reshape that flatten (N, …) to (N, -1), Dropout, Add of two
tensors (residual), Softmax on the output, Identity. The small computations on constants that
exporters emit for ``x.view(x.size(0), -1)`` and for the pads of ``F.pad`` (Shape, Gather,
Unsqueeze, Concat, ConstantOfShape, Slice, Transpose…) are evaluated on the way.
Pads ``[top, left, bottom, right]`` map exactly to the graph's (top, bottom, left, right),
asymmetric ones included; ``auto_pad`` SAME_UPPER/SAME_LOWER/VALID too; a pool's ``ceil_mode``
becomes extra bottom/right padding (the rule of PyTorch and onnxruntime: a last window that
would start in the padding after the input is dropped).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from ..errors import ModelError
from ..ir import Graph
from .common import (GraphBuilder, IF_RATE, Value, activation_error, ceil_mode_extra, first_line, is_activation,
                     parse_input_shape, same_padding, to_param, used_padding)

SUPPORTED = ("Conv (group), Gemm, MatMul(+Add), BatchNormalization, Relu, Clip(min 0), MaxPool, GlobalMaxPool, "
             "AveragePool, GlobalAveragePool, Pad (zeros), Concat (channels), Flatten/Reshape (flattening), Dropout, "
             "Add (residual), final Softmax, Identity")
SHAPE_OPS = ("Constant", "Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Cast", "Slice", "ConstantOfShape",
             "Transpose", "Reshape")
FLOAT_MAX = float(np.finfo(np.float32).max)  # Clip's default bounds are ±FLOAT_MAX (opset < 11)


def _onnx():
    import onnx

    return onnx


def load_onnx(path, input_shape=None) -> Graph:
    """Load a .onnx file (without external data) and import it."""
    onnx = _onnx()
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file {path} {'is not a file' if path.exists() else 'does not exist'}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends
        raise ModelError(f"cannot load ONNX model {path}: {first_line(exc, 120)} (truncated or corrupt file?)") from None
    return onnx_to_graph(model, input_shape, str(path))


def onnx_to_graph(model, input_shape=None, where: str | None = None) -> Graph:
    """Translate an ``onnx.ModelProto`` into a CNN graph."""
    onnx = _onnx()
    graph = model.graph
    where = where or f"ONNX model {graph.name or 'model'}"
    if not graph.node:
        raise ModelError(f"{where}: holds no operators (an empty or corrupt ONNX model?)")
    for tensor in graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            raise ModelError(f"{where}: initializer {tensor.name!r} keeps its data in an external file, which is not "
                             "supported; save the model with its weights inside")
    try:
        constants = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    except Exception as exc:  # malformed tensors
        raise ModelError(f"{where}: unreadable initializer ({first_line(exc, 120)})") from None
    inputs = [i for i in graph.input if i.name not in constants]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ModelError(f"{where}: has {len(inputs)} inputs and {len(graph.output)} outputs; "
                         "only single-input, single-output models are supported")
    shape, batch = _input_shape(onnx, inputs[0], input_shape, where)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    reader = _Reader(shape, batch, opset, where, Counter(name for node in graph.node for name in node.input if name))
    env: dict = {inputs[0].name: Value("input"), **constants}
    for index, node in enumerate(graph.node):
        reader.node(index, node, env)
    output = env.get(graph.output[0].name)
    if not isinstance(output, Value):
        raise ModelError(f"{where}: its output {graph.output[0].name!r} is not computed from the input")
    return reader.b.finish(output, graph.name or "model", where)


def _input_shape(onnx, value_info, input_shape, where) -> tuple[tuple[int, ...], int]:
    """((C, H, W) or (F,), batch size to evaluate shape computations with)."""
    tensor_type = value_info.type.tensor_type
    if tensor_type.elem_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16):
        raise ModelError(f"{where}: input {value_info.name!r} is not a float tensor")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
    if len(dims) not in (2, 4):
        raise ModelError(f"{where}: input {value_info.name!r} has rank {len(dims)}; expected (N, C, H, W) or (N, F)")
    batch = dims[0] or 2
    declared = dims[1:]
    if input_shape is not None:
        given = parse_input_shape(input_shape, where)
        if len(given) != len(declared) or any(d is not None and d != g for d, g in zip(declared, given)):
            shown = tuple("?" if d is None else d for d in declared)
            raise ModelError(f"{where}: --input-shape {given} contradicts the model's input shape {shown}")
        return given, batch
    if any(d is None for d in declared):
        raise ModelError(f"{where}: the input's size is not fixed ({tuple(d or '?' for d in declared)}); "
                         "pass --input-shape C,H,W")
    return parse_input_shape(declared, where), batch


class _Reader:
    """Translates ONNX nodes one by one into IR nodes."""

    def __init__(self, shape, batch: int, opset: int, where: str, uses: Counter):
        self.b = GraphBuilder(shape, source="input (model input)", batch=batch)
        self.batch, self.opset, self.where, self.uses = batch, opset, where, uses
        self.biasless: dict[str, str] = {}  # ONNX value → IR node of a MatMul/Conv without bias

    def node(self, index: int, node, env: dict) -> None:
        onnx = _onnx()
        op = node.op_type
        label = f"{node.name or node.output[0]} ({op})"
        if node.domain not in ("", "ai.onnx"):
            raise ModelError(f"unsupported operator {label} from domain {node.domain!r}: supported are {SUPPORTED}")
        handler = getattr(self, f"_{op}", None)
        if handler is None:
            if is_activation(op):
                raise activation_error(label, op)
            raise ModelError(f"unsupported operator {label}: supported are {SUPPORTED}")
        args = []
        for name in node.input:
            if name and name not in env:
                raise ModelError(f"{label}: reads {name!r}, which no earlier node computes (not topologically sorted?)")
            args.append(env.get(name) if name else None)
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}
        parts = (node.name or "").strip("/").split("/")
        base = parts[-2] if len(parts) >= 2 else (parts[0] if parts[0] and op not in parts[0] else op.lower())
        try:
            result = handler(label, base, args, attrs, node)
        except ModelError:
            raise
        except (ValueError, IndexError, TypeError, KeyError) as exc:  # malformed attributes or inputs
            raise ModelError(f"{label}: malformed operator ({first_line(exc, 120)})") from None
        env[node.output[0]] = result

    # ---------------------------------------------------------------- helpers

    def tensor(self, label, value) -> Value:
        if isinstance(value, Value):
            return value
        raise ModelError(f"{label}: its input is a constant, not a tensor computed from the model's input")

    def constant(self, label, value, what: str) -> np.ndarray:
        if value is None or isinstance(value, Value):
            raise ModelError(f"{label}: its {what} must be a constant (an initializer), not computed from the input")
        return np.asarray(value)

    def torch_shape(self, x: Value) -> list[int]:
        return [self.batch, *self.b.shape(x), *((1, 1) if x.squeezed else ())]

    # ---------------------------------------------------------------- layers

    def _Conv(self, label, base, args, attrs, node):
        x, weight = self.tensor(label, args[0]), self.constant(label, args[1], "weight")
        bias = self.constant(label, args[2], "bias") if len(args) > 2 and args[2] is not None else None
        if weight.ndim != 4:
            raise ModelError(f"{label}: only 2-D convolutions are supported")
        if any(d != 1 for d in attrs.get("dilations", [1, 1])):
            raise ModelError(f"{label}: dilations {attrs['dilations']} are not supported; only 1")
        kh, kw = weight.shape[2:]
        stride = list(attrs.get("strides", [1, 1]))
        pads = self._pads(label, x, attrs, (kh, kw), stride)
        out = self.b.conv2d(base, label, x, weight, bias, stride, pads, attrs.get("group", 1))
        if bias is None and self.uses[node.output[0]] == 1:
            self.biasless[node.output[0]] = out.node
        return out

    def _pads(self, label, x, attrs, kernel, stride) -> list[int]:
        """(top, bottom, left, right) from ONNX pads [top, left, bottom, right] or auto_pad."""
        auto = attrs.get("auto_pad", "NOTSET")
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            self.b.require_rank(label, x, 3, "a 2-D operator")
            h, w = self.b.shape(x)[1:]
            upper = auto == "SAME_UPPER"
            return same_padding(h, kernel[0], stride[0], upper) + same_padding(w, kernel[1], stride[1], upper)
        if auto == "VALID":
            return [0, 0, 0, 0]
        if auto != "NOTSET":
            raise ModelError(f"{label}: auto_pad={auto!r} is not supported")
        top, left, bottom, right = [int(p) for p in attrs.get("pads", [0, 0, 0, 0])]
        return [top, bottom, left, right]

    def _pool(self, label, x, attrs, what: str):
        """(kernel, stride, (top, bottom, left, right) pads, pads added by ceil_mode) of a 2-D pool."""
        self.b.require_rank(label, x, 3, what)
        kernel = [int(k) for k in attrs["kernel_shape"]]
        if len(kernel) != 2:
            raise ModelError(f"{label}: only 2-D {what} is supported")
        stride = [int(s) for s in attrs.get("strides", [1, 1])]
        if any(d != 1 for d in attrs.get("dilations", [1, 1])):
            raise ModelError(f"{label}: dilations {list(attrs['dilations'])} are not supported; only 1")
        pads = self._pads(label, x, attrs, kernel, stride)
        extra = [0, 0, 0, 0]
        if attrs.get("ceil_mode", 0) and attrs.get("auto_pad", "NOTSET") in ("NOTSET", "VALID"):
            h, w = self.b.shape(x)[1:]
            extra[1] = ceil_mode_extra(h, kernel[0], stride[0], pads[0], pads[1])
            extra[3] = ceil_mode_extra(w, kernel[1], stride[1], pads[2], pads[3])
        return kernel, stride, pads, extra

    def _Gemm(self, label, base, args, attrs, node):
        x = self.tensor(label, args[0])
        if attrs.get("transA", 0):
            raise ModelError(f"{label}: transA=1 is not supported")
        b = self.constant(label, args[1], "weight B").astype(np.float32)
        weight = float(attrs.get("alpha", 1.0)) * (b if attrs.get("transB", 0) else b.T)
        bias = None
        if len(args) > 2 and args[2] is not None:
            c = self.constant(label, args[2], "bias C").astype(np.float32).reshape(-1)
            if c.size not in (1, weight.shape[0]):
                raise ModelError(f"{label}: bias C of {c.size} values does not fit {weight.shape[0]} outputs")
            bias = float(attrs.get("beta", 1.0)) * np.broadcast_to(c, (weight.shape[0],))
        return self.b.dense(base, label, x, weight, bias)

    def _MatMul(self, label, base, args, attrs, node):
        x, b = self.tensor(label, args[0]), self.constant(label, args[1], "second operand")
        if b.ndim != 2:
            raise ModelError(f"{label}: MatMul with a {b.ndim}-D weight is not supported; only (in, out) matrices")
        out = self.b.dense(base, label, x, b.T, None)
        if self.uses[node.output[0]] == 1:
            self.biasless[node.output[0]] = out.node
        return out

    def _Add(self, label, base, args, attrs, node):
        a, b = args
        if isinstance(a, Value) and isinstance(b, Value):
            return self.b.add_values(base, label, [a, b])
        if isinstance(a, Value) or isinstance(b, Value):
            x, c = (a, b) if isinstance(a, Value) else (b, a)
            source = next((k for k, v in self.biasless.items() if v == x.node), None)
            if source is not None:  # MatMul + Add, or Conv + Add: the constant is a bias
                return self._fold_bias(label, x, np.asarray(c))
            raise ModelError(f"{label}: adds a constant to {x.node!r}; only biases of MatMul/Conv and sums of two "
                             "tensors (residual connections) are supported")
        return np.asarray(a) + np.asarray(b)

    def _fold_bias(self, label, x: Value, c: np.ndarray) -> Value:
        node = next(n for n in self.b.nodes if n.name == x.node)
        channels = node.shape[0]
        expected = {(channels,), (1, channels)} if node.op == "dense" else {(channels, 1, 1), (1, channels, 1, 1)}
        if c.size == channels and c.shape in expected:
            del self.biasless[next(k for k, v in self.biasless.items() if v == x.node)]
            node.params["bias"] = to_param(label, "bias", c.reshape(channels))
            value = self.b.values[node.name]
            shape = (1, channels) + (1,) * (value.dim() - 2)
            self.b.values[node.name] = value + node.params["bias"].view(shape)
            node.source = f"{node.source} + {label}"
            return x
        raise ModelError(f"{label}: a constant of shape {c.shape} is not a per-channel bias of {x.node!r}")

    def _BatchNormalization(self, label, base, args, attrs, node):
        if attrs.get("training_mode", 0):
            raise ModelError(f"{label}: training_mode=1 is not supported")
        if any(self.uses[name] for name in node.output[1:] if name):
            raise ModelError(f"{label}: running statistics outputs (training) are not supported")
        gamma, beta, mean, var = (self.constant(label, v, k) for v, k in
                                  zip(args[1:5], ("scale", "bias", "input_mean", "input_var")))
        return self.b.batchnorm(base, label, self.tensor(label, args[0]), gamma, beta, mean, var,
                                attrs.get("epsilon", 1e-5))

    def _Relu(self, label, base, args, attrs, node):
        return self.b.relu(base, label, self.tensor(label, args[0]))

    def _Clip(self, label, base, args, attrs, node):
        """Clip(x, 0, c): a clipped ReLU (ReLU6…); Clip(x, 0): a plain one. Bounds are inputs from
        opset 11, attributes before."""
        if self.opset < 11:
            low, high = attrs.get("min", -FLOAT_MAX), attrs.get("max", FLOAT_MAX)
        else:
            def bound(k, what, default):
                value = args[k] if len(args) > k else None
                return default if value is None else float(self.constant(label, value, what).reshape(-1)[0])

            low, high = bound(1, "min", -FLOAT_MAX), bound(2, "max", FLOAT_MAX)
        if not isinstance(args[0], Value):
            return np.clip(np.asarray(args[0]), low, high)
        if low != 0:
            shown = f"[{'-inf' if low <= -FLOAT_MAX else low}, {'inf' if high >= FLOAT_MAX else high}]"
            raise ModelError(f"{label}: clips to {shown}; only a lower bound of 0 (ReLU, ReLU6) can be converted: "
                             f"{IF_RATE}")
        return self.b.relu(base, label, args[0], None if high >= FLOAT_MAX else float(high))

    def _MaxPool(self, label, base, args, attrs, node):
        x = self.tensor(label, args[0])
        if len(node.output) > 1 and node.output[1] and self.uses[node.output[1]]:
            raise ModelError(f"{label}: its Indices output is used; max-pooling indices are not supported")
        if attrs.get("storage_order", 0):
            raise ModelError(f"{label}: storage_order={attrs['storage_order']} is not supported; only 0")
        kernel, stride, pads, extra = self._pool(label, x, attrs, "max pooling")
        return self.b.maxpool(base, label, x, kernel, stride, [p + e for p, e in zip(pads, extra)])

    def _GlobalMaxPool(self, label, base, args, attrs, node):
        return self.b.global_maxpool(base, label, self.tensor(label, args[0]))

    def _AveragePool(self, label, base, args, attrs, node):
        x = self.tensor(label, args[0])
        kernel, stride, pads, extra = self._pool(label, x, attrs, "average pooling")
        if any(extra):
            raise ModelError(f"{label}: ceil_mode=1 adds a partial window here, whose mean is taken over fewer "
                             "pixels; only ceil_mode=0 is supported")
        h, w = self.b.shape(x)[1:]  # padding after the last window changes nothing (exporters add such pads)
        pads[1] = used_padding(h, kernel[0], stride[0], pads[0], pads[1])
        pads[3] = used_padding(w, kernel[1], stride[1], pads[2], pads[3])
        if any(pads) and not attrs.get("count_include_pad", 0):
            raise ModelError(f"{label}: padding with count_include_pad=0 is not supported; only count_include_pad=1 "
                             "(padded zeros count in the mean)")
        return self.b.avgpool(base, label, x, kernel, stride, pads)

    def _GlobalAveragePool(self, label, base, args, attrs, node):
        return self.b.global_avgpool(base, label, self.tensor(label, args[0]))

    def _Pad(self, label, base, args, attrs, node):
        """Zero padding of the spatial axes: pads [x1_begin, x2_begin…, x1_end, x2_end…] (an input
        from opset 11, with an optional constant_value and, from opset 18, axes)."""
        x = self.tensor(label, args[0])
        mode = attrs.get("mode", "constant")
        if self.opset < 11:
            pads, value, axes = list(attrs["pads"]), attrs.get("value", 0.0), None
        else:
            pads = [int(p) for p in self.constant(label, args[1], "pads").reshape(-1)]
            value = (float(self.constant(label, args[2], "constant_value").reshape(-1)[0])
                     if len(args) > 2 and args[2] is not None else 0.0)
            axes = ([int(a) for a in self.constant(label, args[3], "axes").reshape(-1)]
                    if len(args) > 3 and args[3] is not None else None)
        if mode != "constant":
            raise ModelError(f"{label}: mode={mode!r} padding is not supported; only zero padding (mode='constant')")
        if value != 0:
            raise ModelError(f"{label}: padding with the value {value} is not supported; only zero padding")
        rank = len(self.torch_shape(x))
        axes = list(range(rank)) if axes is None else [a % rank for a in axes]
        if len(pads) != 2 * len(axes):
            raise ModelError(f"{label}: {len(pads)} pads do not fit {len(axes)} axes")
        begin, end = [0] * rank, [0] * rank
        for k, axis in enumerate(axes):
            begin[axis], end[axis] = pads[k], pads[k + len(axes)]
        if rank != 4 or any(begin[:2]) or any(end[:2]):
            raise ModelError(f"{label}: pads {pads} are not supported; only padding the height and width of an "
                             "(N, C, H, W) tensor")
        return self.b.pad(base, label, x, [begin[2], end[2], begin[3], end[3]])

    def _Flatten(self, label, base, args, attrs, node):
        x = self.tensor(label, args[0])
        axis = attrs.get("axis", 1)
        if axis % len(self.torch_shape(x)) != 1:
            raise ModelError(f"{label}: axis={axis} is not supported; only flattening all but the batch (axis=1)")
        return self.b.flatten(base, label, x)

    def _Reshape(self, label, base, args, attrs, node):
        x = args[0]
        target = [int(d) for d in self.constant(label, args[1], "shape").reshape(-1)]
        if not isinstance(x, Value):
            data = np.asarray(x)
            if not attrs.get("allowzero", 0):
                target = [data.shape[k] if d == 0 and k < data.ndim else d for k, d in enumerate(target)]
            return np.reshape(data, target)
        current = self.torch_shape(x)
        if not attrs.get("allowzero", 0):
            target = [current[k] if d == 0 and k < len(current) else d for k, d in enumerate(target)]
        count = int(np.prod(current[1:]))
        if target in ([self.batch, count], [self.batch, -1], [-1, count]):
            return self.b.flatten(base, label, x)
        raise ModelError(f"{label}: reshape of {tuple(current)} to {tuple(target)} is not supported; "
                         "only flattening (N, ...) to (N, -1)")

    def _Dropout(self, label, base, args, attrs, node):
        if len(args) > 2 and args[2] is not None and bool(np.asarray(self.constant(label, args[2], "training_mode"))):
            raise ModelError(f"{label}: training_mode=True is not supported")
        return self.b.dropout(base, label, self.tensor(label, args[0]))

    def _Softmax(self, label, base, args, attrs, node):
        return self.b.softmax(base, label, self.tensor(label, args[0]), attrs.get("axis", 1 if self.opset < 13 else -1))

    def _Identity(self, label, base, args, attrs, node):
        return args[0]

    # ---------------------------------------------------------------- shape arithmetic on constants

    def _Constant(self, label, base, args, attrs, node):
        onnx = _onnx()
        if "value" in attrs:
            return onnx.numpy_helper.to_array(attrs["value"])
        for key in ("value_float", "value_floats", "value_int", "value_ints"):
            if key in attrs:
                return np.asarray(attrs[key], dtype=np.float32 if "float" in key else np.int64)
        raise ModelError(f"{label}: only tensor, float and int constants are supported")

    def _Shape(self, label, base, args, attrs, node):
        shape = np.asarray(self.torch_shape(args[0]) if isinstance(args[0], Value) else np.shape(args[0]), np.int64)
        return shape[attrs.get("start", 0): attrs["end"] if "end" in attrs else None]

    def _Gather(self, label, base, args, attrs, node):
        data, indices = (self.constant(label, v, "input") for v in args[:2])
        return np.take(data, indices, axis=attrs.get("axis", 0))

    def _axes(self, label, args, attrs) -> list[int]:
        if "axes" in attrs:
            return list(attrs["axes"])
        return [int(a) for a in self.constant(label, args[1], "axes").reshape(-1)] if len(args) > 1 else []

    def _Unsqueeze(self, label, base, args, attrs, node):
        data = self.constant(label, args[0], "input")
        rank = data.ndim + len(self._axes(label, args, attrs))
        for axis in sorted(a % rank for a in self._axes(label, args, attrs)):
            data = np.expand_dims(data, axis)
        return data

    def _Squeeze(self, label, base, args, attrs, node):
        data = self.constant(label, args[0], "input")
        axes = self._axes(label, args, attrs)
        return np.squeeze(data, axis=tuple(a % data.ndim for a in axes) if axes else None)

    def _Concat(self, label, base, args, attrs, node):
        """Channels of tensors (axis 1), or constants (shape computations)."""
        if any(isinstance(v, Value) for v in args):
            if not all(isinstance(v, Value) for v in args):
                raise ModelError(f"{label}: concatenates a constant with tensors computed from the input; only "
                                 "tensors computed from the input can be concatenated")
            rank = len(self.torch_shape(args[0]))
            if int(attrs["axis"]) % rank != 1:
                raise ModelError(f"{label}: concatenation along axis {attrs['axis']} is not supported; only along "
                                 "channels (axis 1)")
            return self.b.concat(base, label, list(args))
        parts = [np.asarray(self.constant(label, v, "input")) for v in args]
        return np.concatenate(parts, axis=attrs.get("axis", 0))

    def _ConstantOfShape(self, label, base, args, attrs, node):
        shape = [int(d) for d in self.constant(label, args[0], "shape").reshape(-1)]
        fill = _onnx().numpy_helper.to_array(attrs["value"]) if "value" in attrs else np.zeros(1, np.float32)
        return np.full(shape, fill.reshape(-1)[0], dtype=fill.dtype)

    def _Transpose(self, label, base, args, attrs, node):
        """A transpose of constants; of a tensor, only one that leaves it as it is."""
        x = args[0]
        if not isinstance(x, Value):
            data = np.asarray(x)
            return np.transpose(data, attrs.get("perm"))
        shape = self.torch_shape(x)
        perm = [int(p) % len(shape) for p in attrs.get("perm", range(len(shape))[::-1])]
        moved = [p for p in perm if shape[p] != 1]
        if sorted(perm) == list(range(len(shape))) and [shape[p] for p in perm] == shape and moved == sorted(moved):
            return x
        raise ModelError(f"{label}: transposing the axes of a {len(shape)}-D tensor (perm {perm}) is not supported; "
                         "spkeras keeps tensors channels-first (N, C, H, W)")

    def _Cast(self, label, base, args, attrs, node):
        return self.constant(label, args[0], "input").astype(_onnx().helper.tensor_dtype_to_np_dtype(attrs["to"]))

    def _Slice(self, label, base, args, attrs, node):
        data = self.constant(label, args[0], "input")
        if "starts" in attrs:  # opset < 10
            starts, ends, axes, steps = attrs["starts"], attrs["ends"], attrs.get("axes"), None
        else:
            starts, ends = (self.constant(label, v, "bounds").reshape(-1) for v in args[1:3])
            axes = self.constant(label, args[3], "axes").reshape(-1) if len(args) > 3 and args[3] is not None else None
            steps = self.constant(label, args[4], "steps").reshape(-1) if len(args) > 4 and args[4] is not None else None
        axes = list(range(len(starts))) if axes is None else list(axes)
        steps = [1] * len(starts) if steps is None else list(steps)
        index = [slice(None)] * data.ndim
        for start, end, axis, step in zip(starts, ends, axes, steps):
            index[int(axis)] = slice(int(start), int(end), int(step))
        return data[tuple(index)]
