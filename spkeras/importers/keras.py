"""Keras 3 importer: a Sequential or Functional ``keras.Model`` (or a .keras / .h5 file) → CNN graph.

Files are always loaded with ``safe_mode=True``, so no Python code stored in them
(Lambda layers, pickled functions) ever runs. Keras tensors are channels-last; the
graph is channels-first, so weights are transposed and the columns of a Dense layer
that reads a Flatten output are permuted from (H, W, C) to (C, H, W) order.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..backend import choose_keras_backend
from ..errors import ModelError
from ..ir import Graph, Node
from .common import ACTIVATION_PROBLEMS, NEGATIVE, activation_key, same_padding

SUPPORTED_LAYERS = (
    "Conv2D (groups), DepthwiseConv2D, SeparableConv2D, Dense, BatchNormalization, "
    "ReLU/ReLU(max_value)/Activation('relu' or 'relu6'), final softmax, AveragePooling2D, MaxPooling2D, "
    "GlobalAveragePooling2D, GlobalMaxPooling2D, ZeroPadding2D, Flatten, Reshape (to 1-D), Dropout, Add, "
    "Concatenate (channels), Rescaling, Normalization"
)
RELU_HINT = "; hidden activations must be ReLU or clipped ReLU (ReLU6, ReLU(max_value))"
CLIPPED_RELUS = {"relu": None, "relu6": 6.0}  # activation name → max_value of the relu node


def import_keras():
    """Import Keras, choosing the torch backend when none is set and TensorFlow is absent."""
    choose_keras_backend()
    import keras

    return keras


def load_keras(path) -> Graph:
    """Load a .keras or legacy .h5 model file in safe mode and import it."""
    path = Path(path)
    _check_file(path)
    keras = import_keras()
    try:
        model = keras.saving.load_model(str(path), compile=False, safe_mode=True)
    except Exception as exc:  # keras raises many types for bad files; report one line
        raise ModelError(f"cannot load Keras model {path}: {_describe(exc)}") from None
    if not isinstance(model, keras.Model):
        raise ModelError(f"cannot load Keras model {path}: it holds a {type(model).__name__}, not a model")
    return keras_to_graph(model)


def _check_file(path: Path) -> None:
    """Refuse missing files, other extensions and files that are not zip (.keras) or HDF5 (.h5)."""
    if path.suffix not in (".keras", ".h5"):
        raise ModelError(f"unsupported model file {path}: supported formats are .keras and .h5 (Keras)")
    if not path.is_file():
        problem = "is not a file" if path.exists() else "does not exist"
        raise ModelError(f"model file {path} {problem}")
    if path.suffix == ".keras" and not zipfile.is_zipfile(path):
        raise ModelError(f"cannot load Keras model {path}: not a .keras zip archive (truncated or corrupt file?)")
    if path.suffix == ".h5":
        import h5py

        if not h5py.is_hdf5(path):
            raise ModelError(f"cannot load Keras model {path}: not an HDF5 file (truncated or corrupt file?)")


def _describe(exc: Exception) -> str:
    """A one-line reason for a Keras loading failure."""
    text = " ".join(str(exc).split())
    if "safe_mode" in text:
        return "it contains Python code (a Lambda layer or pickled function), which spkeras never executes"
    custom = re.search(r"Could not locate (class|function) '([^']+)'", text)
    if custom:
        return f"it uses the custom {custom[1]} {custom[2]!r}; only built-in Keras layers are supported"
    if isinstance(exc, KeyError):
        detail = str(exc.args[0]) if exc.args else ""
        return f"incomplete or corrupt file ({detail if ' ' in detail else f'no {detail!r} entry'})"
    if len(text) > 200:
        cut = text.find(". ")
        text = text[: cut + 1] if 0 < cut < 200 else text[:200] + "…"
    return text or type(exc).__name__


def keras_to_graph(model) -> Graph:
    """Translate a built Sequential or Functional Keras model into a channels-first CNN graph."""
    keras = import_keras()
    if not isinstance(model, keras.Model):
        raise ModelError(f"expected a keras.Model, got {type(model).__name__}")
    input_name, input_shape, steps, output = _topology(keras, model)
    builder = _Builder(keras, input_name, input_shape, {layer.name for layer, _ in steps})
    for layer, inbound in steps:
        builder.add(layer, inbound, is_output=layer.name == output)
    return builder.finish(model.name, output)


def _topology(keras, model):
    """(input layer name, input shape, [(layer, inbound layer names)] in topological order, output layer name)."""
    input_shape = _single_input_shape(keras, model)
    config = model.get_config()
    if isinstance(model, keras.Sequential):
        first = config["layers"][0]
        input_name = first["config"]["name"] if first["class_name"] == "InputLayer" else "input_layer"
        names = [input_name] + [layer.name for layer in model.layers]
        steps = [(layer, [names[k]]) for k, layer in enumerate(model.layers)]
        return input_name, input_shape, steps, names[-1]
    operations = {op.name: op for op in model.operations}
    input_name = _layer_refs(config["input_layers"])[0]
    steps = [
        (operations[entry["name"]], _inbound(operations[entry["name"]], entry["inbound_nodes"]))
        for entry in config["layers"]
        if entry["name"] != input_name
    ]
    return input_name, input_shape, steps, _layer_refs(config["output_layers"])[0]


def _single_input_shape(keras, model) -> tuple[int, ...]:
    """The input shape of a built single-input, single-output Sequential or Functional model."""
    from keras.src.models.functional import Functional  # not exported; Keras 3 has no public alias

    if not isinstance(model, (keras.Sequential, Functional)):
        raise ModelError(
            f"model {model.name!r} ({type(model).__name__}) is a subclassed model; "
            "only Sequential and Functional models are supported"
        )
    inputs, outputs = getattr(model, "inputs", None), getattr(model, "outputs", None)
    if not inputs or not outputs:
        raise ModelError(f"model {model.name!r} is not built: give it an input shape with keras.Input(...)")
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelError(
            f"model {model.name!r} has {len(inputs)} inputs and {len(outputs)} outputs; "
            "only single-input, single-output models are supported"
        )
    return _shape(inputs[0].shape)


def _layer_refs(refs) -> list[str]:
    """Layer names in a config's ``input_layers`` / ``output_layers`` ([name, 0, 0] or a list of them)."""
    refs = [refs] if refs and isinstance(refs[0], str) else refs
    return [ref[0] for ref in refs]


def _inbound(layer, inbound_nodes) -> list[str]:
    """Names of the layers whose outputs feed ``layer`` (which must be called once)."""
    if len(inbound_nodes) != 1:
        raise ModelError(
            f"layer {layer.name!r} ({type(layer).__name__}) is called {len(inbound_nodes)} times; "
            "shared layers are not supported"
        )
    return _tensor_sources(inbound_nodes[0])


def _tensor_sources(value) -> list[str]:
    """Producers of the Keras tensors referenced anywhere in a serialized call."""
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            return [value["config"]["keras_history"][0]]
        return [name for item in value.values() for name in _tensor_sources(item)]
    if isinstance(value, (list, tuple)):
        return [name for item in value for name in _tensor_sources(item)]
    return []


def _shape(keras_shape) -> tuple[int, ...]:
    """A Keras shape without its batch axis; refuses unknown sizes and ranks other than 1 and 3."""
    shape = tuple(keras_shape[1:])
    if len(shape) not in (1, 3) or not all(isinstance(d, int) for d in shape):
        raise ModelError(f"input shape {shape} is not supported: expected fixed-size (H, W, C) images or (F,) vectors")
    return shape


def _channels_first(shape: tuple[int, ...]) -> tuple[int, ...]:
    """(H, W, C) → (C, H, W); other shapes unchanged."""
    return (shape[2], shape[0], shape[1]) if len(shape) == 3 else tuple(shape)


@dataclass
class _Call:
    """One Keras layer call being translated."""

    layer: object
    inputs: list[str]  # IR node names
    shapes: list[tuple[int, ...]]  # Keras (channels-last) input shapes, batch omitted
    is_output: bool
    name: str = ""  # IR name of the layer's main node

    @property
    def label(self) -> str:
        return f"{self.layer.name!r} ({type(self.layer).__name__})"

    def error(self, problem: str) -> ModelError:
        return ModelError(f"layer {self.label}: {problem}")

    def unsupported(self, hint: str = "") -> ModelError:
        return ModelError(f"unsupported layer {self.label}: supported layers are {SUPPORTED_LAYERS}{hint}")


class _Builder:
    """Accumulates graph nodes while Keras layers are visited in topological order."""

    def __init__(self, keras, input_name: str, input_shape: tuple[int, ...], reserved: set[str]):
        self.keras = keras
        self.handlers = _handlers(keras)
        self.nodes = [Node("input", "input", shape=_channels_first(input_shape), source=f"{input_name} (InputLayer)")]
        self.produced = {input_name: "input"}  # Keras layer → IR node holding its output
        self.shapes = {input_name: input_shape}  # Keras layer → Keras output shape
        self.flattened: dict[str, tuple[int, int, int]] = {}  # IR node → (H, W, C) before Flatten
        self.reserved, self.used = reserved, {"input"}

    def claim(self, base: str, own: str | None = None) -> str:
        """A fresh node name: ``base`` unless used or another layer's name, else ``base_1``…"""
        name, k = base, 0
        while name in self.used or (name in self.reserved and name != own):
            k += 1
            name = f"{base}_{k}"
        self.used.add(name)
        return name

    def param(self, call: _Call, variable) -> torch.Tensor:
        """A Keras variable as a float32 CPU tensor (a copy); refuses NaN and infinities."""
        value = variable.value
        if not isinstance(value, torch.Tensor):  # Keras backends other than torch
            value = torch.from_numpy(np.asarray(self.keras.ops.convert_to_numpy(value)))
        if not value.is_floating_point():
            raise call.error(f"weight {variable.path!r} has dtype {value.dtype}; quantized layers are not supported")
        tensor = value.detach().to("cpu", torch.float32).clone()
        if not torch.isfinite(tensor).all():
            raise call.error(f"weight {variable.path!r} contains NaN or infinite values")
        return tensor

    def add(self, layer, inbound: list[str], is_output: bool) -> None:
        """Translate one layer call and record its output node and shape."""
        handler = self.handlers.get(type(layer))
        inputs = [self.produced[name] for name in inbound]
        call = _Call(layer, inputs, [self.shapes[name] for name in inbound], is_output)
        if handler is None:
            raise call.unsupported(_hint(self.keras, layer))
        call.name = self.claim(layer.name, own=layer.name)
        nodes = handler(self, call)
        self._track_flatten(call, nodes)
        shape = self.output_shape(call)
        for node in nodes:  # handlers set the shapes of inner nodes (a separable conv's depthwise half)
            node.shape = node.shape or _channels_first(shape)
            node.source = f"{layer.name} ({type(layer).__name__})"
        self.nodes += nodes
        self.produced[layer.name] = nodes[-1].name if nodes else inputs[0]
        self.shapes[layer.name] = shape

    def _track_flatten(self, call: _Call, nodes: list[Node]) -> None:
        """Follow Flatten outputs (and Reshapes to 1-D, which are flattens) through Dropout and further
        flattens to the Dense layers that must permute their columns."""
        carried = [name for name in call.inputs if name in self.flattened]
        if carried and nodes and nodes[0].op not in ("dense", "dropout", "flatten"):
            raise call.error(
                f"reads the output of Flatten {carried[0]!r}; only Dense (optionally after Dropout) may follow Flatten"
            )
        if nodes and nodes[0].op in ("dropout", "flatten") and carried:
            self.flattened[nodes[0].name] = self.flattened[carried[0]]
        shape = call.shapes[0]
        if nodes and nodes[0].op == "flatten" and len(shape) == 3 and shape[:2] != (1, 1):
            self.flattened[nodes[0].name] = shape

    def output_shape(self, call: _Call) -> tuple[int, ...]:
        """The layer's Keras output shape, batch omitted."""
        shapes = [(None,) + shape for shape in call.shapes]
        shape = call.layer.compute_output_shape(shapes if len(shapes) > 1 else shapes[0])
        return tuple(shape[1:])

    def finish(self, name: str, output_layer: str) -> Graph:
        """The graph ending at the output layer's node."""
        output = self.produced[output_layer]
        if output in self.flattened:
            raise ModelError(f"the model ends with the output of Flatten {output!r}; add a Dense layer after it")
        return Graph(nodes=self.nodes, output=output, name=name)


def _hint(keras, layer) -> str:
    """Advice appended to the unsupported-layer message."""
    if isinstance(layer, keras.Model):
        return "; nested models are not supported"
    if not isinstance(layer, keras.layers.Layer):
        return "; build the model from Keras layers, not keras.ops calls or Python operators"
    return ""


def _handlers(keras) -> dict:
    """Keras layer class (exact) → function(builder, call) returning the layer's nodes."""
    layers = keras.layers
    return {
        layers.Conv2D: _conv2d,
        layers.DepthwiseConv2D: _depthwise_conv2d,
        layers.SeparableConv2D: _separable_conv2d,
        layers.Dense: _dense,
        layers.BatchNormalization: _batchnorm,
        layers.Activation: _activation_layer,
        layers.ReLU: _relu_layer,
        layers.LeakyReLU: _unrepresentable_layer,
        layers.PReLU: _unrepresentable_layer,
        layers.ELU: _unrepresentable_layer,
        layers.Softmax: _softmax_layer,
        layers.AveragePooling2D: _avgpool,
        layers.MaxPooling2D: _maxpool,
        layers.GlobalAveragePooling2D: _global_avgpool,
        layers.GlobalMaxPooling2D: _global_maxpool,
        layers.ZeroPadding2D: _zero_padding,
        layers.Flatten: _flatten,
        layers.Reshape: _reshape,
        layers.Permute: _permute,
        layers.Dropout: _dropout,
        layers.Add: _add,
        layers.Concatenate: _concatenate,
        layers.Rescaling: _rescaling,
        layers.Normalization: _normalization,
    }


def _activation_name(layer) -> str:
    """The activation of a layer as a name ('relu', 'linear', …) or a description of a custom one."""
    value = layer.get_config()["activation"]
    return value if isinstance(value, str) else "a custom function"


def _relu_node(name: str, source: str, max_value) -> Node:
    """A relu node, clipped at ``max_value`` unless it is None."""
    attrs = {} if max_value is None else {"max_value": float(max_value)}
    return Node(name, "relu", [source], attrs=attrs)


def _activation_error(c: _Call, act: str) -> ModelError:
    """Why the activation ``act`` (a name, or 'a custom function') of the layer cannot be converted."""
    problem = ACTIVATION_PROBLEMS.get(activation_key(act))
    what = act if act == "a custom function" else repr(act)
    if problem:
        return c.error(f"activation {what} cannot be converted: {problem}{RELU_HINT}")
    return c.error(f"unsupported activation {what}{RELU_HINT} (softmax only on the final layer)")


def _fused_activation(b: _Builder, c: _Call, main: Node) -> list[Node]:
    """``main`` followed by the node of the layer's ``activation=`` argument, if any."""
    act = _activation_name(c.layer)
    if act == "linear":
        return [main]
    if act in CLIPPED_RELUS:
        return [main, _relu_node(b.claim(f"{c.layer.name}_{act}"), main.name, CLIPPED_RELUS[act])]
    if act == "softmax" and c.is_output:
        return [main, Node(b.claim(f"{c.layer.name}_{act}"), act, [main.name])]
    if act == "softmax":
        raise c.error("softmax is only supported on the final layer")
    raise _activation_error(c, act)


def _require_channels_last(c: _Call) -> None:
    """Refuse layers configured for channels-first tensors."""
    if getattr(c.layer, "data_format", "channels_last") != "channels_last":
        raise c.error(f"data_format {c.layer.data_format!r} is not supported; use channels_last")


def _window_padding(c: _Call, kernel, strides) -> list[int]:
    """The (top, bottom, left, right) padding of a conv or pooling layer's ``padding`` argument."""
    (h, w, _), (kh, kw), (sh, sw) = c.shapes[0], kernel, strides
    return same_padding(h, kh, sh) + same_padding(w, kw, sw) if c.layer.padding == "same" else [0, 0, 0, 0]


def _check_conv(c: _Call) -> None:
    """Refuse channels-first and dilated convolutions."""
    _require_channels_last(c)
    if tuple(c.layer.dilation_rate) != (1, 1):
        raise c.error(f"dilation_rate {tuple(c.layer.dilation_rate)} is not supported; only 1")


def _conv_attrs(c: _Call, groups: int = 1) -> dict:
    """stride, padding and (when not 1) groups of a conv2d node for this layer."""
    attrs = {"stride": list(c.layer.strides), "padding": _window_padding(c, c.layer.kernel_size, c.layer.strides)}
    if groups != 1:
        attrs["groups"] = groups
    return attrs


def _conv2d(b: _Builder, c: _Call) -> list[Node]:
    """Conv2D → conv2d, grouped when ``groups`` > 1 (+ fused activation)."""
    layer = c.layer
    _check_conv(c)
    params = {"weight": b.param(c, layer.kernel).permute(3, 2, 0, 1).contiguous()}  # (O, I/groups, kh, kw)
    if layer.use_bias:
        params["bias"] = b.param(c, layer.bias)
    node = Node(c.name, "conv2d", [c.inputs[0]], params, _conv_attrs(c, layer.groups))
    return _fused_activation(b, c, node)


def _depthwise_weight(b: _Builder, c: _Call, variable) -> torch.Tensor:
    """A Keras depthwise kernel (kh, kw, C, M) as a grouped conv2d weight (C·M, 1, kh, kw): output channel
    c·M + m is input channel c filtered by its m-th kernel, Keras's channel order."""
    kernel = b.param(c, variable)
    kh, kw, channels, multiplier = kernel.shape
    return kernel.permute(2, 3, 0, 1).reshape(channels * multiplier, 1, kh, kw).contiguous()


def _depthwise_conv2d(b: _Builder, c: _Call) -> list[Node]:
    """DepthwiseConv2D → conv2d with groups = input channels (+ fused activation)."""
    layer = c.layer
    _check_conv(c)
    params = {"weight": _depthwise_weight(b, c, layer.kernel)}
    if layer.use_bias:
        params["bias"] = b.param(c, layer.bias)
    node = Node(c.name, "conv2d", [c.inputs[0]], params, _conv_attrs(c, c.shapes[0][2]))
    return _fused_activation(b, c, node)


def _separable_conv2d(b: _Builder, c: _Call) -> list[Node]:
    """SeparableConv2D → depthwise conv2d (no bias) → pointwise 1×1 conv2d (the bias) (+ fused activation)."""
    layer = c.layer
    _check_conv(c)
    weight = _depthwise_weight(b, c, layer.depthwise_kernel)
    h, w, _ = b.output_shape(c)
    depthwise = Node(b.claim(f"{layer.name}_depthwise"), "conv2d", [c.inputs[0]], {"weight": weight},
                     _conv_attrs(c, c.shapes[0][2]), shape=(weight.shape[0], h, w))
    params = {"weight": b.param(c, layer.pointwise_kernel).permute(3, 2, 0, 1).contiguous()}
    if layer.use_bias:
        params["bias"] = b.param(c, layer.bias)
    pointwise = Node(c.name, "conv2d", [depthwise.name], params, {"stride": [1, 1], "padding": [0, 0, 0, 0]})
    return [depthwise] + _fused_activation(b, c, pointwise)


def _dense(b: _Builder, c: _Call) -> list[Node]:
    """Dense → dense (+ fused activation); columns reordered to CHW after a Flatten."""
    layer = c.layer
    if len(c.shapes[0]) != 1:
        rank = len(c.shapes[0]) + 1
        raise c.error(f"a {rank}-D input is not supported; put Flatten or GlobalAveragePooling2D before Dense")
    weight = b.param(c, layer.kernel).T
    hwc = b.flattened.get(c.inputs[0])
    if hwc:
        h, w, ch = hwc
        weight = weight[:, torch.arange(h * w * ch).reshape(h, w, ch).permute(2, 0, 1).reshape(-1)]
    params = {"weight": weight.contiguous()}
    if layer.use_bias:
        params["bias"] = b.param(c, layer.bias)
    return _fused_activation(b, c, Node(c.name, "dense", [c.inputs[0]], params))


def _batchnorm(b: _Builder, c: _Call) -> list[Node]:
    """BatchNormalization over the channel axis → batchnorm (inference statistics)."""
    layer, rank = c.layer, len(c.shapes[0]) + 1
    if layer.axis % rank != rank - 1:
        raise c.error(f"axis={layer.axis} is not supported; only the channel axis (-1)")
    mean = b.param(c, layer.moving_mean)
    params = {
        "gamma": b.param(c, layer.gamma) if layer.scale else torch.ones_like(mean),
        "beta": b.param(c, layer.beta) if layer.center else torch.zeros_like(mean),
        "mean": mean,
        "var": b.param(c, layer.moving_variance),
    }
    return [Node(c.name, "batchnorm", [c.inputs[0]], params, {"eps": float(layer.epsilon)})]


def _activation_layer(b: _Builder, c: _Call) -> list[Node]:
    """Activation('relu') → relu, Activation('relu6') → relu clipped at 6, final Activation('softmax') → softmax,
    Activation('linear') → nothing."""
    act = _activation_name(c.layer)
    if act == "linear":
        return []
    if act in CLIPPED_RELUS:
        return [_relu_node(c.name, c.inputs[0], CLIPPED_RELUS[act])]
    if act == "softmax":
        return _softmax_layer(b, c)
    raise _activation_error(c, act)


def _relu_layer(b: _Builder, c: _Call) -> list[Node]:
    """ReLU() → relu; ReLU(max_value=c) → relu clipped at c. A negative slope or a threshold is refused."""
    config = c.layer.get_config()
    if config["negative_slope"] != 0:
        raise c.error(f"negative_slope={config['negative_slope']} cannot be converted: {NEGATIVE}{RELU_HINT}")
    if config["threshold"] != 0:
        raise c.error(f"threshold={config['threshold']} cannot be converted: the output jumps from 0 to the "
                      f"threshold, which an IF neuron's rate cannot follow{RELU_HINT}")
    return [_relu_node(c.name, c.inputs[0], config["max_value"])]


def _unrepresentable_layer(b: _Builder, c: _Call) -> list[Node]:
    """LeakyReLU, PReLU, ELU: refused, saying why."""
    raise c.error(f"cannot be converted: {NEGATIVE}{RELU_HINT}")


def _softmax_layer(b: _Builder, c: _Call) -> list[Node]:
    """Softmax over channels producing the model output → softmax."""
    if not c.is_output:
        raise c.error("softmax is only supported on the final layer")
    axis = c.layer.get_config().get("axis", -1)
    if axis not in (-1, len(c.shapes[0])):
        raise c.error(f"softmax over axis {axis} is not supported; only the channel axis (-1)")
    return [Node(c.name, "softmax", [c.inputs[0]])]


def _avgpool(b: _Builder, c: _Call) -> list[Node]:
    """AveragePooling2D without padding → avgpool."""
    layer = c.layer
    _require_channels_last(c)
    (h, w, _), (kh, kw), (sh, sw) = c.shapes[0], layer.pool_size, layer.strides
    if layer.padding == "same" and any(same_padding(h, kh, sh) + same_padding(w, kw, sw)):
        raise c.error("padding='same' pads this input, which is not supported; use padding='valid'")
    return [Node(c.name, "avgpool", [c.inputs[0]], attrs={"kernel": [kh, kw], "stride": [sh, sw]})]


def _maxpool(b: _Builder, c: _Call) -> list[Node]:
    """MaxPooling2D → maxpool; 'same' padding is TensorFlow's, with −∞ padded taps."""
    layer = c.layer
    _require_channels_last(c)
    attrs = {"kernel": list(layer.pool_size), "stride": list(layer.strides),
             "padding": _window_padding(c, layer.pool_size, layer.strides)}
    return [Node(c.name, "maxpool", [c.inputs[0]], attrs=attrs)]


def _global_avgpool(b: _Builder, c: _Call) -> list[Node]:
    """GlobalAveragePooling2D → global_avgpool, or with keepdims=True an avgpool over the whole map."""
    _require_channels_last(c)
    if c.layer.keepdims:
        h, w, _ = c.shapes[0]
        return [Node(c.name, "avgpool", [c.inputs[0]], attrs={"kernel": [h, w], "stride": [h, w]})]
    return [Node(c.name, "global_avgpool", [c.inputs[0]])]


def _global_maxpool(b: _Builder, c: _Call) -> list[Node]:
    """GlobalMaxPooling2D → maxpool over the whole map, then (unless keepdims=True) flatten."""
    _require_channels_last(c)
    h, w, channels = c.shapes[0]
    pool = Node(c.name, "maxpool", [c.inputs[0]], attrs={"kernel": [h, w], "stride": [h, w], "padding": [0, 0, 0, 0]})
    if c.layer.keepdims:
        return [pool]
    pool.shape = (channels, 1, 1)
    return [pool, Node(b.claim(f"{c.layer.name}_flatten"), "flatten", [pool.name])]


def _zero_padding(b: _Builder, c: _Call) -> list[Node]:
    """ZeroPadding2D → pad (top, bottom, left, right)."""
    _require_channels_last(c)
    (top, bottom), (left, right) = c.layer.padding
    return [Node(c.name, "pad", [c.inputs[0]], attrs={"padding": [top, bottom, left, right]})]


def _flatten(b: _Builder, c: _Call) -> list[Node]:
    """Flatten → flatten (channels-first order; the next Dense is permuted to match)."""
    _require_channels_last(c)
    return [Node(c.name, "flatten", [c.inputs[0]])]


FLATTEN_ONLY = "only pure flattening (a Reshape to a 1-D shape, like Flatten) is supported"


def _reshape(b: _Builder, c: _Call) -> list[Node]:
    """Reshape to a 1-D shape → flatten, exactly like Flatten; other reshapes are refused."""
    shape = b.output_shape(c)
    if len(shape) != 1:
        raise c.error(f"reshaping {c.shapes[0]} to {shape} is not supported; {FLATTEN_ONLY}")
    return [Node(c.name, "flatten", [c.inputs[0]])]


def _permute(b: _Builder, c: _Call) -> list[Node]:
    """Permute: refused."""
    raise c.error(f"permuting axes {tuple(c.layer.dims)} is not supported; {FLATTEN_ONLY}")


def _dropout(b: _Builder, c: _Call) -> list[Node]:
    """Dropout → dropout (an identity at inference, removed by a later pass)."""
    return [Node(c.name, "dropout", [c.inputs[0]])]


def _add(b: _Builder, c: _Call) -> list[Node]:
    """Add → add over all inputs."""
    return [Node(c.name, "add", list(c.inputs))]


def _concatenate(b: _Builder, c: _Call) -> list[Node]:
    """Concatenate along the channel (last) axis → concat."""
    rank, axis = len(c.shapes[0]) + 1, c.layer.axis
    if axis % rank != rank - 1:
        raise c.error(f"concatenation along axis {axis} of {rank}-D tensors is not supported; "
                      "only the channel axis (-1)")
    return [Node(c.name, "concat", list(c.inputs))]


def _per_channel(b: _Builder, c: _Call, value, what: str) -> torch.Tensor:
    """A scalar or array that Keras broadcasts over the layer's input, as one float32 value per channel
    (the last Keras axis); refuses values that vary along another axis, NaN and infinities."""
    shape = c.shapes[0]
    array = np.asarray(b.keras.ops.convert_to_numpy(value), dtype=np.float32)
    try:
        full = np.broadcast_to(array, (1,) + shape)
    except ValueError:
        raise c.error(f"{what} of shape {array.shape} does not broadcast over the input shape {shape}") from None
    rows = full.reshape(-1, shape[-1])
    if not (rows == rows[0]).all():
        raise c.error(f"{what} varies along an axis other than the channel axis; only per-channel values are supported")
    if not np.isfinite(rows[0]).all():
        raise c.error(f"{what} contains NaN or infinite values")
    return torch.from_numpy(rows[0].copy())


def _rescaling(b: _Builder, c: _Call) -> list[Node]:
    """Rescaling(scale, offset), scalars or per-channel → affine x·scale + offset."""
    params = {"weight": _per_channel(b, c, c.layer.scale, "scale"),
              "bias": _per_channel(b, c, c.layer.offset, "offset")}
    return [Node(c.name, "affine", [c.inputs[0]], params)]


def _normalization(b: _Builder, c: _Call) -> list[Node]:
    """Normalization over the channel axis (or a scalar one, axis=None) → affine.

    Keras computes (x − mean) / max(√variance, ε) with ε = ``keras.config.epsilon()``, or with
    invert=True mean + x · max(√variance, ε); the affine weight and bias are computed in float64.
    """
    layer, rank = c.layer, len(c.shapes[0]) + 1
    if any(axis % rank != rank - 1 for axis in layer.axis):
        raise c.error(f"axis={layer.axis} is not supported; only the channel axis (-1) or None")
    mean = _per_channel(b, c, layer.mean, "mean").double()
    std = _per_channel(b, c, layer.variance, "variance").double().sqrt().clamp(min=b.keras.config.epsilon())
    if layer.invert:
        weight, bias = std, mean
    else:
        weight = 1.0 / std
        bias = -mean * weight
    return [Node(c.name, "affine", [c.inputs[0]], {"weight": weight.float(), "bias": bias.float()})]
