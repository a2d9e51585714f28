"""ONNX importer: a ``.onnx`` file (or an ``onnx.ModelProto``) → CNN graph, read with the ``onnx``
package alone (no onnxruntime).

Weights come from the graph's initializers (``onnx.numpy_helper``); external tensor data is
refused, so a model file can never make spkeras read other files. Operators: Conv, Gemm,
MatMul (+ Add of a bias), BatchNormalization, Relu, AveragePool, GlobalAveragePool,
Flatten/Reshape that flatten (N, …) to (N, -1), Dropout, Add of two tensors (residual),
Softmax on the output, Identity. The small shape computations exporters emit for
``x.view(x.size(0), -1)`` (Shape, Gather, Unsqueeze, Concat…) are evaluated on the way.
Convolution pads ``[top, left, bottom, right]`` map exactly to the graph's
(top, bottom, left, right), asymmetric ones included; ``auto_pad`` SAME_UPPER/SAME_LOWER too.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from ..errors import ModelError
from ..ir import Graph
from .common import RELU_HINT, GraphBuilder, Value, first_line, parse_input_shape, same_padding, to_param

SUPPORTED = ("Conv, Gemm, MatMul(+Add), BatchNormalization, Relu, AveragePool, GlobalAveragePool, "
             "Flatten/Reshape (flattening), Dropout, Add (residual), final Softmax, Identity")
SHAPE_OPS = ("Constant", "Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Cast", "Slice")
ACTIVATIONS = {"Sigmoid", "Tanh", "LeakyRelu", "Elu", "Selu", "Celu", "Gelu", "PRelu", "HardSigmoid", "HardSwish",
               "Softplus", "Softsign", "Mish", "ThresholdedRelu", "Clip", "LogSoftmax"}


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
            hint = ("; replace MaxPool by AveragePool and fine-tune" if "MaxPool" in op
                    else RELU_HINT if op in ACTIVATIONS else "")
            raise ModelError(f"unsupported operator {label}: supported are {SUPPORTED}{hint}")
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
        if attrs.get("group", 1) != 1:
            raise ModelError(f"{label}: group={attrs['group']} is not supported; only 1")
        if weight.ndim != 4:
            raise ModelError(f"{label}: only 2-D convolutions are supported")
        if any(d != 1 for d in attrs.get("dilations", [1, 1])):
            raise ModelError(f"{label}: dilations {attrs['dilations']} are not supported; only 1")
        kh, kw = weight.shape[2:]
        stride = list(attrs.get("strides", [1, 1]))
        pads = self._pads(label, x, attrs, (kh, kw), stride)
        out = self.b.conv2d(base, label, x, weight, bias, stride, pads)
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

    def _AveragePool(self, label, base, args, attrs, node):
        x = self.tensor(label, args[0])
        kernel = list(attrs["kernel_shape"])
        stride = list(attrs.get("strides", [1] * len(kernel)))
        if len(kernel) != 2:
            raise ModelError(f"{label}: only 2-D average pooling is supported")
        if attrs.get("ceil_mode", 0):
            raise ModelError(f"{label}: ceil_mode=1 is not supported")
        if any(d != 1 for d in attrs.get("dilations", [1, 1])):
            raise ModelError(f"{label}: dilations are not supported")
        if any(self._pads(label, x, attrs, kernel, stride)):
            raise ModelError(f"{label}: padding is not supported; only average pooling without padding")
        return self.b.avgpool(base, label, x, kernel, stride)

    def _GlobalAveragePool(self, label, base, args, attrs, node):
        return self.b.global_avgpool(base, label, self.tensor(label, args[0]))

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
            return np.reshape(np.asarray(x), target)
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
        parts = [np.asarray(self.constant(label, v, "input")) for v in args]
        return np.concatenate(parts, axis=attrs.get("axis", 0))

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
