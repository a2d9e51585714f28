"""Tests for spkeras.importers: Keras 3 models (in memory, .keras, legacy .h5) → CNN graph."""

import os
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the package is not installed in the venv
    sys.path.insert(0, str(ROOT))

from tests.helpers import randomize_keras
from spkeras.errors import ModelError  # noqa: E402
from spkeras.importers import load_model  # noqa: E402
from spkeras.importers.keras import import_keras  # noqa: E402
from spkeras.ops import run_graph, to_channels_first  # noqa: E402

keras = import_keras()
# Keras' torch backend converts tensors with np.array(x), which NumPy 2 flags (not ours to fix)
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
layers = keras.layers


# ------------------------------------------------------------------ helpers

def randomize(model, seed=0):
    """Give every variable random values of sensible size, BN moving statistics included."""
    randomize_keras(model, seed)
    return model


def sample(model, n=3, seed=1):
    """Random NHWC (or NF) inputs for the model."""
    shape = (n,) + tuple(model.inputs[0].shape[1:])
    return np.random.default_rng(seed).uniform(0.0, 1.0, shape).astype(np.float32)


def assert_well_formed(graph):
    """Input first, topological order, float32 CPU params, and node shapes equal to the values computed."""
    assert graph.nodes[0].name == "input" and graph.nodes[0].op == "input"
    assert graph.nodes[-1].name == graph.output
    seen = set()
    for node in graph.nodes:
        assert all(name in seen for name in node.inputs), node.name
        assert node.source, node.name
        seen.add(node.name)
        for tensor in node.params.values():
            assert tensor.dtype == torch.float32 and tensor.device.type == "cpu"
    x = torch.zeros((1,) + graph.input.shape)
    run_graph(graph, x, observe=lambda node, y: _assert_shape(node, y))


def _assert_shape(node, value):
    assert tuple(value.shape[1:]) == node.shape, node.name


def assert_matches(graph, model, x, atol=1e-5):
    """run_graph on NCHW equals model.predict on NHWC."""
    expected = model.predict(x, verbose=0)
    actual = run_graph(graph, to_channels_first(torch.from_numpy(x))).numpy()
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=atol)


def check(model, tmp_path=None, suffix=None):
    """Import the model (from memory, or saved with ``suffix``), check it and return the graph."""
    randomize(model)
    source = model
    if suffix:
        source = tmp_path / f"model{suffix}"
        model.save(source)
    graph = load_model(source)
    assert_well_formed(graph)
    assert_matches(graph, model, sample(model))
    assert graph.name == model.name
    return graph


def message(source):
    """The one-line ModelError raised when importing ``source`` (a model or a path)."""
    with pytest.raises(ModelError) as info:
        load_model(source)
    text = str(info.value)
    assert "\n" not in text and text
    return text


# ------------------------------------------------------------------ supported models

def seq_mixed():
    """Odd input; 'same' stride 1 and 2, the three ReLU forms, BN after conv and dense, final Activation softmax."""
    return keras.Sequential([
        keras.Input((9, 9, 3)),
        layers.Conv2D(4, 3, padding="same", activation="relu", name="c1"),
        layers.BatchNormalization(name="bn1"),
        layers.Activation("relu", name="a1"),
        layers.Conv2D(6, 3, strides=2, padding="same", name="c2"),
        layers.ReLU(name="r2"),
        layers.AveragePooling2D(2, name="pool"),
        layers.Conv2D(5, 2, padding="valid", name="c3"),
        layers.Flatten(name="flat"),
        layers.Dense(8, name="d1"),
        layers.BatchNormalization(name="bn2"),
        layers.Activation("relu", name="a2"),
        layers.Dropout(0.5, name="drop"),
        layers.Dense(5, name="d2"),
        layers.Activation("softmax", name="out"),
    ], name="seq_mixed")


def seq_flatten():
    """Even input, stride-2 'same' (asymmetric padding), Flatten → Dropout → Dense (column permutation)."""
    return keras.Sequential([
        keras.Input((8, 8, 3)),
        layers.Conv2D(4, 3, strides=2, padding="same", name="c1"),
        layers.ReLU(),
        layers.AveragePooling2D(2, strides=1, name="pool"),
        layers.Flatten(name="flat"),
        layers.Dropout(0.3, name="drop"),
        layers.Dense(6, activation="relu", name="d1"),
        layers.Dense(4, activation="softmax", name="d2"),
    ], name="seq_flatten")


def seq_plain():
    """No biases, BN without centre/scale, linear activation, AveragePooling2D 'same' needing no padding, no softmax."""
    return keras.Sequential([
        keras.Input((8, 8, 2)),
        layers.Conv2D(3, 3, use_bias=False, name="c1"),
        layers.BatchNormalization(center=False, scale=False, epsilon=0.01, name="bn"),
        layers.Activation("linear", name="lin"),
        layers.AveragePooling2D(3, padding="same", name="pool"),
        layers.GlobalAveragePooling2D(name="gap"),
        layers.Dense(4, use_bias=False, name="d"),
    ], name="seq_plain")


def dense_only():
    """Flat input: Dense → BN → ReLU → Dropout → Dense softmax."""
    return keras.Sequential([
        keras.Input((10,)),
        layers.Dense(8, activation="relu", name="d1"),
        layers.BatchNormalization(name="bn"),
        layers.Dropout(0.2, name="drop"),
        layers.Dense(3, activation="softmax", name="d2"),
    ], name="dense_only")


def residual():
    """Functional model with a residual Add block and a final Softmax layer."""
    inputs = keras.Input((8, 8, 3), name="img")
    stem = layers.Conv2D(4, 3, padding="same", activation="relu", name="stem")(inputs)
    x = layers.Conv2D(4, 3, padding="same", name="c1")(stem)
    x = layers.BatchNormalization(name="bn1")(x)
    x = layers.ReLU(name="r1")(x)
    x = layers.Conv2D(4, 3, padding="same", name="c2")(x)
    x = layers.Add(name="sum")([stem, x])
    x = layers.Activation("relu", name="a")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dense(5, name="d")(x)
    outputs = layers.Softmax(name="prob")(x)
    return keras.Model(inputs, outputs, name="residual")


MODELS = [seq_mixed, seq_flatten, seq_plain, dense_only, residual]


@pytest.mark.parametrize("build", MODELS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("suffix", [None, ".keras", ".h5"], ids=["memory", "keras", "h5"])
def test_supported_models_match_keras(build, suffix, tmp_path):
    check(build(), tmp_path, suffix)


def test_mixed_model_nodes():
    graph = check(seq_mixed())
    ops = [(n.name, n.op) for n in graph.nodes]
    assert ops[:4] == [("input", "input"), ("c1", "conv2d"), ("c1_relu", "relu"), ("bn1", "batchnorm")]
    assert graph.output == "out" and graph.node("out").op == "softmax"
    assert graph.node("a1").op == "relu" and graph.node("r2").op == "relu"
    assert graph.input.shape == (3, 9, 9)
    assert graph.node("c1").attrs == {"stride": [1, 1], "padding": [1, 1, 1, 1]}
    assert graph.node("c2").attrs["padding"] == [1, 1, 1, 1]  # odd input: symmetric
    assert graph.node("c3").attrs["padding"] == [0, 0, 0, 0]
    assert graph.node("c2").shape == (6, 5, 5) and graph.node("flat").shape == (5,)
    assert graph.node("pool").attrs == {"kernel": [2, 2], "stride": [2, 2]}
    assert graph.node("c1").source == "c1 (Conv2D)" and graph.node("c1_relu").source == "c1 (Conv2D)"
    bn = graph.node("bn1")
    assert set(bn.params) == {"gamma", "beta", "mean", "var"} and bn.attrs["eps"] == pytest.approx(1e-3)
    assert not torch.allclose(bn.params["mean"], torch.zeros(4))


def test_stride2_same_padding_is_asymmetric_on_even_input():
    model = seq_flatten()
    graph = check(model)
    conv = graph.node("c1")
    assert conv.attrs == {"stride": [2, 2], "padding": [0, 1, 0, 1]}
    assert conv.params["weight"].shape == (4, 3, 3, 3)
    assert [n.op for n in graph.nodes][-3:] == ["relu", "dense", "softmax"]
    assert graph.output == "d2_softmax"


def test_flatten_permutes_the_following_dense_columns():
    model = seq_flatten()
    graph = check(model)
    kernel = keras.ops.convert_to_numpy(model.get_layer("d1").kernel)  # (H*W*C, O) in HWC order
    weight = graph.node("d1").params["weight"].numpy()  # (O, C*H*W) in CHW order
    assert graph.node("flat").shape == (4 * 3 * 3,)
    assert not np.allclose(weight, kernel.T)
    np.testing.assert_array_equal(weight.reshape(6, 4, 3, 3), kernel.T.reshape(6, 3, 3, 4).transpose(0, 3, 1, 2))


def test_linear_activation_and_optional_params():
    graph = check(seq_plain())
    assert "lin" not in [n.name for n in graph.nodes]
    assert "bias" not in graph.node("c1").params and "bias" not in graph.node("d").params
    bn = graph.node("bn")
    assert torch.equal(bn.params["gamma"], torch.ones(3)) and torch.equal(bn.params["beta"], torch.zeros(3))
    assert graph.node("pool").attrs == {"kernel": [3, 3], "stride": [3, 3]}
    assert graph.node("gap").op == "global_avgpool" and graph.node("gap").shape == (3,)


def test_residual_add_keeps_both_inputs():
    graph = check(residual())
    assert graph.node("sum").inputs == ["stem_relu", "c2"]
    assert graph.input.source == "img (InputLayer)"
    assert graph.output == "prob"


def test_node_names_do_not_collide():
    model = keras.Sequential([
        keras.Input((6,)),
        layers.Dense(4, activation="relu", name="d"),
        layers.Dense(4, name="d_relu"),
        layers.Dense(2, name="input"),
    ])
    graph = check(model)
    assert [n.name for n in graph.nodes] == ["input", "d", "d_relu_1", "d_relu", "input_1"]


# ------------------------------------------------------------------ unsupported models

def seq(*body, shape=(8, 8, 3)):
    """A Sequential model on the given input."""
    return lambda: keras.Sequential([keras.Input(shape), *body])


def functional(make):
    """A functional model whose body ``make(input)`` returns the output tensor."""
    def build():
        inputs = keras.Input((8, 8, 3))
        return keras.Model(inputs, make(inputs))
    return build


UNSUPPORTED = {
    "upsampling": (seq(layers.UpSampling2D(name="up"), layers.Flatten(), layers.Dense(2)),
                   ["'up' (UpSampling2D)", "supported layers are Conv2D"]),
    "lambda": (seq(layers.Lambda(lambda x: x * 2, name="lam"), layers.Flatten(), layers.Dense(2)),
               ["'lam' (Lambda)", "supported layers are Conv2D"]),
    "sigmoid": (seq(layers.Conv2D(2, 3, name="c"), layers.Activation("sigmoid", name="sig"), layers.Flatten(),
                    layers.Dense(2)), ["'sig' (Activation)", "hidden activations must be ReLU"]),
    "tanh": (seq(layers.Flatten(), layers.Dense(4, activation="tanh", name="d"), layers.Dense(2)),
             ["'d' (Dense)", "'tanh'", "hidden activations must be ReLU"]),
    "leaky": (seq(layers.Conv2D(2, 3), layers.LeakyReLU(name="lr"), layers.Flatten(), layers.Dense(2)),
              ["'lr' (LeakyReLU)", "hidden activations must be ReLU"]),
    "relu_slope": (seq(layers.ReLU(negative_slope=0.1, name="r"), layers.Flatten(), layers.Dense(2)),
                   ["'r' (ReLU)", "negative_slope"]),
    "concat": (functional(lambda x: layers.Dense(2)(layers.Flatten()(layers.Concatenate(axis=1, name="cat")([
        layers.Conv2D(2, 1)(x), layers.Conv2D(2, 1)(x)])))), ["'cat' (Concatenate)", "channel axis"]),
    "dilation": (seq(layers.Conv2D(2, 3, dilation_rate=2, name="c"), layers.Flatten(), layers.Dense(2)),
                 ["'c' (Conv2D)", "dilation_rate"]),
    "depthwise_dilation": (seq(layers.DepthwiseConv2D(3, dilation_rate=2, name="dw"), layers.Flatten(),
                               layers.Dense(2)), ["'dw' (DepthwiseConv2D)", "dilation_rate"]),
    "pool_same_padded": (seq(layers.AveragePooling2D(2, padding="same", name="p"), layers.Flatten(),
                             layers.Dense(2), shape=(5, 5, 3)), ["'p' (AveragePooling2D)", "padding='same'"]),
    "hidden_softmax": (seq(layers.Flatten(), layers.Dense(4, name="d"), layers.Activation("softmax", name="s"),
                           layers.Dense(2)), ["'s' (Activation)", "final layer"]),
    "hidden_dense_softmax": (seq(layers.Flatten(), layers.Dense(4, activation="softmax", name="d"),
                                 layers.Dense(2)), ["'d' (Dense)", "final layer"]),
    "dense_4d": (seq(layers.Dense(4, name="d")), ["'d' (Dense)", "4-D input"]),
    "bn_axis": (seq(layers.BatchNormalization(axis=1, name="bn"), layers.Flatten(), layers.Dense(2)),
                ["'bn' (BatchNormalization)", "axis"]),
    "flatten_then_bn": (seq(layers.Flatten(name="f"), layers.BatchNormalization(name="bn"), layers.Dense(2)),
                        ["'bn' (BatchNormalization)", "Flatten 'f'"]),
    "ends_with_flatten": (seq(layers.Flatten(name="f")), ["Flatten 'f'"]),
    "python_operator": (functional(lambda x: layers.Flatten()(x + x)), ["(Add)", "keras.ops"]),
    "nested": (functional(lambda x: keras.Sequential([layers.Flatten(), layers.Dense(2)], name="inner")(x)),
               ["'inner' (Sequential)", "nested models"]),
    "shared": (functional(lambda x: (lambda c: layers.Flatten()(c(c(x))))(layers.Conv2D(3, 1, name="c"))),
               ["'c' (Conv2D)", "shared layers"]),
    "two_outputs": (functional(lambda x: [layers.Flatten()(x), layers.GlobalAveragePooling2D()(x)]),
                    ["2 outputs"]),
    "unbuilt": (lambda: keras.Sequential([layers.Dense(2)]), ["not built"]),
    "subclassed": (lambda: Subclassed(), ["'sub' (Subclassed)", "subclassed"]),
    "variable_size": (lambda: keras.Sequential([keras.Input((None, None, 3)), layers.GlobalAveragePooling2D()]),
                      ["(None, None, 3)", "fixed-size"]),
    "quantized": (lambda: quantized(seq(layers.Flatten(), layers.Dense(2, name="d"))()), ["'d' (Dense)", "quantized"]),
}


def quantized(model):
    """The model with int8 weights (Keras warns about the layers it leaves alone)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model.quantize("int8")
    return model


class Subclassed(keras.Model):
    """A model defined by its call method, which has no layer graph to read."""

    def __init__(self):
        super().__init__(name="sub")
        self.dense = layers.Dense(2)

    def call(self, x):
        return self.dense(x)


@pytest.mark.parametrize("case", list(UNSUPPORTED))
def test_unsupported_models_give_one_line(case):
    build, expected = UNSUPPORTED[case]
    text = message(build())
    for fragment in expected:
        assert fragment in text


def test_unsupported_layer_message_lists_supported_layers():
    text = message(UNSUPPORTED["upsampling"][0]())
    assert text == (
        "unsupported layer 'up' (UpSampling2D): supported layers are Conv2D (groups), DepthwiseConv2D, "
        "SeparableConv2D, Dense, BatchNormalization, ReLU/ReLU(max_value)/Activation('relu' or 'relu6'), "
        "final softmax, AveragePooling2D, MaxPooling2D, GlobalAveragePooling2D, GlobalMaxPooling2D, ZeroPadding2D, "
        "Flatten, Reshape (to 1-D), Dropout, Add, Concatenate (channels), Rescaling, Normalization"
    )


def test_channels_first_conv_is_refused():
    model = keras.Sequential([keras.Input((3, 8, 8)), layers.Conv2D(2, 3, data_format="channels_first", name="c"),
                              layers.Flatten(), layers.Dense(2)])
    text = message(model)
    assert "'c' (Conv2D)" in text and "channels_first" in text


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_saved_lambda_is_never_executed(tmp_path, suffix):
    marker = tmp_path / "marker"
    body = eval(f"lambda x: (__import__('pathlib').Path({str(marker)!r}).touch(), x)[1]")
    model = seq(layers.Lambda(body, name="lam"), layers.Flatten(), layers.Dense(2))()
    path = tmp_path / f"lambda{suffix}"
    model.save(path)
    marker.unlink()  # building the model ran the lambda once
    text = message(path)
    assert str(path) in text and "Lambda" in text
    assert not marker.exists()


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_weights_are_refused(value):
    model = randomize(seq(layers.Conv2D(2, 3, name="c"), layers.Flatten(), layers.Dense(2, name="d"))())
    kernel = keras.ops.convert_to_numpy(model.get_layer("d").kernel)
    kernel[0, 0] = value
    model.get_layer("d").kernel.assign(kernel)
    text = message(model)
    assert "'d' (Dense)" in text and "NaN or infinite" in text


# ------------------------------------------------------------------ bad files

def saved(tmp_path, name="good.keras"):
    """A small valid model saved under ``name``."""
    path = tmp_path / name
    randomize(dense_only()).save(path)
    return path


def truncated(tmp_path):
    data = saved(tmp_path).read_bytes()
    path = tmp_path / "truncated.keras"
    path.write_bytes(data[: len(data) // 2])
    return path


def random_bytes(suffix):
    def make(tmp_path):
        path = tmp_path / f"random{suffix}"
        path.write_bytes(np.random.default_rng(0).bytes(4096))
        return path
    return make


def empty_h5(tmp_path):
    path = tmp_path / "empty.h5"
    with h5py.File(path, "w") as f:
        f.create_group("nothing")
    return path


def weights_only_h5(tmp_path):
    weights = tmp_path / "w.weights.h5"
    randomize(dense_only()).save_weights(weights)
    return weights.rename(tmp_path / "weights.h5")


def h5_without_weights(tmp_path):
    path = saved(tmp_path, "noweights.h5")
    with h5py.File(path, "a") as f:
        del f["model_weights"]
    return path


def zip_without_config(tmp_path):
    path = tmp_path / "other.keras"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("readme.txt", "not a model")
    return path


def custom_layer(tmp_path):
    @keras.saving.register_keras_serializable(package="spkeras_tests")
    class Echo(layers.Layer):
        def call(self, x):
            return x

    path = tmp_path / "custom.keras"
    keras.Sequential([keras.Input((3,)), Echo(), layers.Dense(2)]).save(path)
    del keras.saving.get_custom_objects()["spkeras_tests>Echo"]  # the loading program lacks the class
    return path


def directory(tmp_path):
    path = tmp_path / "folder.keras"
    path.mkdir()
    return path


BAD_FILES = {
    "truncated": (truncated, "not a .keras zip archive"),
    "random_keras": (random_bytes(".keras"), "not a .keras zip archive"),
    "random_h5": (random_bytes(".h5"), "not an HDF5 file"),
    "empty_h5": (empty_h5, "No model config"),
    "weights_only_h5": (weights_only_h5, "No model config"),
    "h5_without_weights": (h5_without_weights, "model_weights"),
    "zip_without_config": (zip_without_config, "config.json"),
    "custom_layer": (custom_layer, "custom class 'Echo'"),
    "missing": (lambda tmp_path: tmp_path / "missing.keras", "does not exist"),
    "directory": (directory, "is not a file"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_files_give_one_line(case, tmp_path):
    make, expected = BAD_FILES[case]
    path = make(tmp_path)
    text = message(path)
    assert str(path) in text and expected in text


@pytest.mark.parametrize("name", ["model.tflite", "model.pb", "model", "model.hdf5"])  # .onnx, .pt: other importers
def test_unsupported_extension(tmp_path, name):
    from spkeras.importers import SUPPORTED_FORMATS

    path = tmp_path / name
    path.write_bytes(b"x")
    assert message(str(path)) == f"unsupported model file {path}: supported formats are {SUPPORTED_FORMATS}"


def test_unsupported_object():
    assert "cannot import a dict" in message({"weights": 1})


def test_backend_defaults_to_torch_and_import_is_lazy():
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    code = (
        "import sys; import spkeras.importers as i; assert 'keras' not in sys.modules;"
        "from spkeras.importers.keras import import_keras; print(import_keras().backend.backend())"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ("tensorflow" if _has_tensorflow() else "torch")


def _has_tensorflow():
    import importlib.util

    return importlib.util.find_spec("tensorflow") is not None


# ------------------------------------------------------------------ reference model

def test_vgg16_reference_model_matches_keras(shared):
    path = shared / "models" / "vgg16_cifar10.keras"
    graph = load_model(path)
    model = keras.saving.load_model(path, compile=False)
    x = (np.load(shared / "data" / "cifar10_test.npz")["x"][:4] / 255.0).astype(np.float32)
    assert_well_formed(graph)
    assert_matches(graph, model, x, atol=1e-4)
    assert graph.input.shape == (3, 32, 32) and graph.node(graph.output).op == "softmax"
    assert len(graph.nodes_of("conv2d")) == 13 and len(graph.nodes_of("avgpool")) == 5
