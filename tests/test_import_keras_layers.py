"""Tests for the Keras importer's layers of real-world networks: max pooling, clipped ReLU, grouped,
depthwise and separable convolutions, concatenation, zero padding, preprocessing (Rescaling,
Normalization), keepdims pooling, flattening Reshape, and the refusal of activations that an
integrate-and-fire neuron cannot represent.

Every supported case builds a tiny Keras model with random weights, imports it, runs the IR on random
images (channels-first) and compares with Keras on the same images (channels-last).
"""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the package is not installed in the venv
    sys.path.insert(0, str(ROOT))

from tests.helpers import one_thread, randomize_keras  # noqa: E402,F401 (one_thread: autouse fixture)
from tests.test_import_keras import assert_well_formed, message  # noqa: E402
from spkeras.importers import load_model  # noqa: E402
from spkeras.importers.keras import import_keras, keras_to_graph  # noqa: E402
from spkeras.ops import run_graph, to_channels_first  # noqa: E402

keras = import_keras()
# Keras' torch backend converts tensors with np.array(x), which NumPy 2 flags (not ours to fix)
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
layers = keras.layers


# ------------------------------------------------------------------ helpers

def images(model, n=3, seed=1, low=-1.0, high=1.0):
    """Random NHWC (or NF) inputs for the model, of both signs (max pooling must see negative values)."""
    shape = (n,) + tuple(model.inputs[0].shape[1:])
    return np.random.default_rng(seed).uniform(low, high, shape).astype(np.float32)


def keras_output(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


def check(model, x=None, gain=1.0, seed=0, randomize=True):
    """Randomize the model's variables, import it, and assert the IR computes what Keras computes."""
    if randomize:
        randomize_keras(model, seed, kernel_gain=gain)
    graph = keras_to_graph(model)
    assert_well_formed(graph)
    x = images(model) if x is None else x
    actual = run_graph(graph, to_channels_first(torch.from_numpy(x))).numpy()
    if actual.ndim == 4:  # a model ending with a map: back to channels-last
        actual = actual.transpose(0, 2, 3, 1)
    expected = keras_output(model, x)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)
    return graph


def seq(*body, shape=(8, 8, 3), name=None):
    """A Sequential model on the given input."""
    return keras.Sequential([keras.Input(shape), *body], name=name)


def outputs_of(graph, x):
    """Every node's output on channels-last images ``x``."""
    values = {}
    run_graph(graph, to_channels_first(torch.from_numpy(x)), observe=lambda node, y: values.__setitem__(node.name, y))
    return values


def assert_clips(graph, x, name, cap):
    """Node ``name`` is a relu clipped at ``cap`` and clips some of its inputs on ``x``."""
    node = graph.node(name)
    assert node.op == "relu" and node.attrs == {"max_value": cap}
    value = outputs_of(graph, x)[name]
    assert (value == cap).any() and ((value > 0) & (value < cap)).any()


# ------------------------------------------------------------------ max pooling

@pytest.mark.parametrize("shape, pool, strides, padding, expected", [
    ((8, 8, 3), 2, None, "valid", [0, 0, 0, 0]),
    ((9, 9, 3), 3, 2, "valid", [0, 0, 0, 0]),  # overlapping 3×3/2 windows
    ((8, 7, 3), (2, 3), (1, 2), "valid", [0, 0, 0, 0]),  # stride ≠ kernel, rectangular
    ((8, 8, 3), 3, 2, "same", [0, 1, 0, 1]),  # even input: TF pads after only
    ((9, 9, 3), 3, 2, "same", [1, 1, 1, 1]),
    ((7, 6, 3), 2, None, "same", [0, 1, 0, 0]),
    ((6, 6, 3), 3, 1, "same", [1, 1, 1, 1]),
], ids=["2x2", "3x3s2_overlap", "rect_stride", "same_even", "same_odd", "same_2x2_odd", "same_s1"])
def test_maxpool_matches_keras(shape, pool, strides, padding, expected):
    model = seq(layers.Conv2D(4, 3, padding="same", name="c"),
                layers.MaxPooling2D(pool, strides=strides, padding=padding, name="mp"),
                layers.Flatten(), layers.Dense(5), shape=shape)
    graph = check(model)
    node = graph.node("mp")
    kernel = [pool, pool] if isinstance(pool, int) else list(pool)
    stride = kernel if strides is None else ([strides] * 2 if isinstance(strides, int) else list(strides))
    assert node.op == "maxpool" and node.attrs == {"kernel": kernel, "stride": stride, "padding": expected}
    assert node.shape == (4,) + tuple(model.get_layer("mp").output.shape[1:3])


def test_same_maxpool_on_negative_maps_never_picks_the_padding():
    """All inputs negative: a zero-padded pool would output 0 at the border, Keras (−∞ padding) does not."""
    model = seq(layers.MaxPooling2D(3, strides=2, padding="same", name="mp"), shape=(6, 6, 2))
    graph = check(model, x=images(model, low=-2.0, high=-1.0))
    assert graph.node("mp").attrs["padding"] == [0, 1, 0, 1]


@pytest.mark.parametrize("keepdims", [False, True])
def test_global_maxpool(keepdims):
    tail = [layers.Flatten(name="f")] if keepdims else []
    model = seq(layers.Conv2D(4, 3, name="c"), layers.GlobalMaxPooling2D(keepdims=keepdims, name="gmp"), *tail,
                layers.Dense(3, name="d"), shape=(7, 6, 3))
    graph = check(model)
    pool = graph.node("gmp")
    assert pool.op == "maxpool" and pool.shape == (4, 1, 1)
    assert pool.attrs == {"kernel": [5, 4], "stride": [5, 4], "padding": [0, 0, 0, 0]}
    flatten = graph.node("f" if keepdims else "gmp_flatten")
    assert flatten.op == "flatten" and flatten.inputs == ["gmp"] and flatten.shape == (4,)
    assert graph.node("d").inputs == [flatten.name]


# ------------------------------------------------------------------ clipped ReLU

def test_relu_max_value_and_relu6_layers():
    model = seq(layers.Conv2D(4, 3, padding="same", name="c1"), layers.ReLU(max_value=0.5, name="r"),
                layers.Conv2D(4, 3, name="c2"), layers.Activation("relu6", name="a6"),
                layers.Conv2D(4, 1, name="c3"), layers.ReLU(name="plain"),
                layers.Flatten(), layers.Dense(3))
    randomize_keras(model, 0, kernel_gain=6.0)
    x = images(model)
    graph = check(model, x, randomize=False)
    assert_clips(graph, x, "r", 0.5)
    assert_clips(graph, x, "a6", 6.0)
    assert graph.node("plain").op == "relu" and graph.node("plain").attrs == {}


@pytest.mark.parametrize("layer", [
    lambda: layers.Conv2D(4, 3, activation="relu6", name="l"),
    lambda: layers.DepthwiseConv2D(3, depth_multiplier=2, activation="relu6", name="l"),
    lambda: layers.SeparableConv2D(4, 3, activation="relu6", name="l"),
], ids=["Conv2D", "DepthwiseConv2D", "SeparableConv2D"])
def test_fused_relu6(layer):
    model = seq(layer(), layers.Flatten(), layers.Dense(5, activation="relu6", name="d"), layers.Dense(2))
    randomize_keras(model, 0, kernel_gain=8.0)
    x = images(model, high=3.0)
    graph = check(model, x, randomize=False)
    assert_clips(graph, x, "l_relu6", 6.0)
    assert graph.node("l_relu6").inputs == ["l"]
    assert graph.node("d_relu6").attrs == {"max_value": 6.0}


# ------------------------------------------------------------------ grouped, depthwise, separable convolutions

@pytest.mark.parametrize("groups, filters, strides, padding", [
    (2, 8, 1, "same"), (3, 9, 2, "same"), (3, 6, 1, "valid"),
])
def test_grouped_conv(groups, filters, strides, padding):
    model = seq(layers.Conv2D(6, 3, name="c0"),
                layers.Conv2D(filters, 3, strides=strides, padding=padding, groups=groups, name="g"),
                layers.Flatten(), layers.Dense(3), shape=(9, 8, 3))
    graph = check(model)
    node = graph.node("g")
    assert node.attrs["groups"] == groups and node.params["weight"].shape == (filters, 6 // groups, 3, 3)
    assert "groups" not in graph.node("c0").attrs


@pytest.mark.parametrize("multiplier, strides, padding, bias", [
    (1, 1, "same", True), (2, 1, "valid", False), (2, 2, "same", True), (3, (2, 1), "valid", True),
])
def test_depthwise_conv(multiplier, strides, padding, bias):
    model = seq(layers.Conv2D(4, 1, name="c0"),
                layers.DepthwiseConv2D(3, strides=strides, padding=padding, depth_multiplier=multiplier,
                                       use_bias=bias, name="dw"),
                layers.Flatten(), layers.Dense(3), shape=(8, 9, 3))
    graph = check(model)
    node = graph.node("dw")
    assert node.op == "conv2d" and node.attrs["groups"] == 4
    assert node.params["weight"].shape == (4 * multiplier, 1, 3, 3) and ("bias" in node.params) == bias
    # Keras output channel c·M + m is input channel c through its m-th kernel
    kernel = keras.ops.convert_to_numpy(model.get_layer("dw").kernel)  # (kh, kw, C, M)
    np.testing.assert_array_equal(node.params["weight"][1 * multiplier + multiplier - 1, 0].numpy(),
                                  kernel[:, :, 1, multiplier - 1])


@pytest.mark.parametrize("multiplier, strides, padding, bias", [
    (1, 1, "same", True), (2, 2, "same", False), (2, 1, "valid", True),
])
def test_separable_conv(multiplier, strides, padding, bias):
    model = seq(layers.SeparableConv2D(5, 3, strides=strides, padding=padding, depth_multiplier=multiplier,
                                       use_bias=bias, activation="relu", name="sep"),
                layers.Flatten(), layers.Dense(3), shape=(8, 8, 3))
    graph = check(model)
    depthwise, pointwise = graph.node("sep_depthwise"), graph.node("sep")
    out_h, out_w = model.get_layer("sep").output.shape[1:3]
    assert depthwise.attrs["groups"] == 3 and "bias" not in depthwise.params
    assert depthwise.params["weight"].shape == (3 * multiplier, 1, 3, 3)
    assert depthwise.shape == (3 * multiplier, out_h, out_w)
    assert pointwise.inputs == [depthwise.name] and pointwise.params["weight"].shape == (5, 3 * multiplier, 1, 1)
    assert pointwise.attrs == {"stride": [1, 1], "padding": [0, 0, 0, 0]} and ("bias" in pointwise.params) == bias
    assert pointwise.shape == (5, out_h, out_w)
    assert graph.node("sep_relu").inputs == ["sep"]
    assert depthwise.source == pointwise.source == "sep (SeparableConv2D)"


# ------------------------------------------------------------------ concatenate, padding

@pytest.mark.parametrize("axis", [-1, 3])
def test_concatenate_channels(axis):
    inputs = keras.Input((8, 8, 3))
    a = layers.Conv2D(2, 3, padding="same", activation="relu", name="a")(inputs)
    b = layers.Conv2D(3, 1, name="b")(inputs)
    x = layers.Concatenate(axis=axis, name="cat")([a, b, inputs])
    x = layers.Conv2D(4, 3, name="c")(x)
    outputs = layers.Dense(2)(layers.Flatten()(x))
    graph = check(keras.Model(inputs, outputs))
    cat = graph.node("cat")
    assert cat.op == "concat" and cat.inputs == ["a_relu", "b", "input"] and cat.shape == (8, 8, 8)


def test_concatenate_flat():
    inputs = keras.Input((8, 8, 3))
    features = layers.GlobalAveragePooling2D(name="gap")(layers.Conv2D(4, 3, name="c")(inputs))
    x = layers.Concatenate(name="cat")([layers.Dense(3, name="d1")(features), features])
    graph = check(keras.Model(inputs, layers.Dense(2, name="out")(x)))
    assert graph.node("cat").inputs == ["d1", "gap"] and graph.node("cat").shape == (7,)


@pytest.mark.parametrize("padding, expected", [(1, [1, 1, 1, 1]), (((0, 1), (2, 3)), [0, 1, 2, 3])])
def test_zero_padding(padding, expected):
    model = seq(layers.ZeroPadding2D(padding, name="pad"), layers.Conv2D(3, 3, strides=2, name="c"),
                layers.Flatten(), layers.Dense(2), shape=(7, 6, 2))
    graph = check(model)
    node = graph.node("pad")
    assert node.op == "pad" and node.attrs == {"padding": expected}
    assert node.shape == (2, 7 + expected[0] + expected[1], 6 + expected[2] + expected[3])


# ------------------------------------------------------------------ preprocessing

@pytest.mark.parametrize("scale, offset", [
    (1 / 255.0, 0.0), (1 / 127.5, -1.0), (np.array([0.5, 2.0, -1.0]), np.array([0.1, 0.0, -0.3])),
    (np.array([[[2.0, 3.0, 4.0]]]), 1.0),
], ids=["scale", "scale_offset", "per_channel", "per_channel_3d"])
def test_rescaling(scale, offset):
    model = seq(layers.Rescaling(scale, offset=offset, name="rs"), layers.Conv2D(3, 3, name="c"),
                layers.Flatten(), layers.Dense(2))
    x = images(model, low=0.0, high=255.0)
    graph = check(model, x)
    node = graph.node("rs")
    assert node.op == "affine" and node.inputs == ["input"]
    np.testing.assert_allclose(node.params["weight"].numpy(), np.broadcast_to(np.float32(scale), (1, 1, 3)).ravel())
    np.testing.assert_allclose(node.params["bias"].numpy(), np.broadcast_to(np.float32(offset), (3,)))


def test_rescaling_flat_input():
    model = seq(layers.Rescaling(np.arange(1.0, 6.0), offset=-0.5, name="rs"), layers.Dense(2), shape=(5,))
    graph = check(model)
    assert graph.node("rs").params["weight"].shape == (5,)


def adapted(layer, shape, seed=3):
    """The layer adapted to random data of per-channel mean and spread."""
    rng = np.random.default_rng(seed)
    channels = shape[-1]
    layer.adapt(rng.normal(rng.uniform(-2, 2, channels), rng.uniform(0.1, 3.0, channels), (32,) + shape)
                .astype(np.float32))
    return layer


@pytest.mark.parametrize("make", [
    lambda: adapted(layers.Normalization(name="norm"), (6, 6, 3)),
    lambda: adapted(layers.Normalization(axis=None, name="norm"), (6, 6, 3)),
    lambda: adapted(layers.Normalization(invert=True, name="norm"), (6, 6, 3)),
    lambda: layers.Normalization(mean=[0.485, 0.456, 0.406], variance=[0.052, 0.05, 0.057], name="norm"),
    lambda: layers.Normalization(mean=2.0, variance=4.0, name="norm"),
], ids=["adapted", "axis_none", "invert", "given", "given_scalar"])
def test_normalization(make):
    norm = make()
    model = seq(norm, layers.Conv2D(3, 3, name="c"), layers.Flatten(), layers.Dense(2), shape=(6, 6, 3))
    for k, layer in enumerate(model.layers[1:]):  # keep the adapted statistics
        randomize_keras(layer, k)
    x = images(model, low=0.0, high=1.0)
    graph = check(model, x, randomize=False)
    node = graph.node("norm")
    assert node.op == "affine" and node.params["weight"].shape == node.params["bias"].shape == (3,)


def test_normalization_epsilon_and_flat_input():
    """Keras divides by max(√variance, ε): a zero-variance feature is scaled by 1/ε, not by infinity."""
    norm = layers.Normalization(mean=[0.0, 1.0, 2.0, 3.0], variance=[1.0, 4.0, 0.25, 0.0], name="norm")
    model = seq(norm, shape=(4,))
    x = images(model)
    graph = check(model, x, randomize=False)
    weight = graph.node("norm").params["weight"]
    np.testing.assert_allclose(weight.numpy(), [1.0, 0.5, 2.0, 1.0 / keras.config.epsilon()], rtol=1e-6)


# ------------------------------------------------------------------ keepdims pooling, flattening Reshape

def test_mobilenet_head_keepdims_gap_conv_reshape():
    """GlobalAveragePooling2D(keepdims=True) → Dropout → 1×1 Conv2D → Reshape((classes,)) → softmax."""
    model = seq(layers.Conv2D(6, 3, activation="relu", name="c"),
                layers.GlobalAveragePooling2D(keepdims=True, name="gap"), layers.Dropout(0.2, name="drop"),
                layers.Conv2D(4, 1, name="logits"), layers.Reshape((4,), name="rs"),
                layers.Activation("softmax", name="prob"), shape=(7, 8, 3))
    graph = check(model)
    gap = graph.node("gap")
    assert gap.op == "avgpool" and gap.attrs == {"kernel": [5, 6], "stride": [5, 6]} and gap.shape == (6, 1, 1)
    assert graph.node("rs").op == "flatten" and graph.node("rs").shape == (4,)
    assert graph.output == "prob"


@pytest.mark.parametrize("target", [(-1,), (48,)])
def test_reshape_to_1d_is_a_flatten(target):
    """A Reshape to 1-D of an (H, W, C) map is a Flatten: the next Dense's columns are permuted to CHW."""
    model = seq(layers.Conv2D(3, 3, name="c"), layers.Reshape(target, name="rs"), layers.Dropout(0.1),
                layers.Dense(4, name="d"), shape=(6, 6, 2))
    graph = check(model)
    assert graph.node("rs").op == "flatten" and graph.node("rs").shape == (48,)
    kernel = keras.ops.convert_to_numpy(model.get_layer("d").kernel)  # (H*W*C, O)
    np.testing.assert_array_equal(graph.node("d").params["weight"].numpy().reshape(4, 3, 4, 4),
                                  kernel.T.reshape(4, 4, 4, 3).transpose(0, 3, 1, 2))


def test_flatten_then_reshape_keeps_the_permutation():
    model = seq(layers.Conv2D(3, 3, name="c"), layers.Flatten(name="f"), layers.Reshape((48,), name="rs"),
                layers.Dense(4, name="d"), shape=(6, 6, 2))
    check(model)


# ------------------------------------------------------------------ refusals

def functional(make, shape=(8, 8, 3)):
    """A functional model whose body ``make(input)`` returns the output tensor."""
    inputs = keras.Input(shape)
    return keras.Model(inputs, make(inputs))


IF_REASON = "hidden activations must be ReLU or clipped ReLU (ReLU6, ReLU(max_value))"

REFUSED = {
    "leaky_relu": (lambda: seq(layers.Conv2D(2, 3), layers.LeakyReLU(name="lr"), layers.Flatten(), layers.Dense(2)),
                   ["layer 'lr' (LeakyReLU)", "cannot be negative", IF_REASON]),
    "prelu": (lambda: seq(layers.Conv2D(2, 3), layers.PReLU(name="pr"), layers.Flatten(), layers.Dense(2)),
              ["layer 'pr' (PReLU)", "cannot be negative"]),
    "elu_layer": (lambda: seq(layers.Conv2D(2, 3), layers.ELU(name="e"), layers.Flatten(), layers.Dense(2)),
                  ["layer 'e' (ELU)", "cannot be negative"]),
    "hard_swish": (lambda: seq(layers.Conv2D(2, 3), layers.Activation("hard_swish", name="hs"), layers.Flatten(),
                               layers.Dense(2)), ["layer 'hs' (Activation)", "'hard_silu'", "not monotone", IF_REASON]),
    "fused_hard_swish": (lambda: seq(layers.Conv2D(2, 3, activation="hard_swish", name="c"), layers.Flatten(),
                                     layers.Dense(2)), ["layer 'c' (Conv2D)", "not monotone"]),
    "swish": (lambda: seq(layers.Flatten(), layers.Dense(4, activation="swish", name="d"), layers.Dense(2)),
              ["layer 'd' (Dense)", "'silu'", "not monotone"]),
    "gelu": (lambda: seq(layers.DepthwiseConv2D(3, activation="gelu", name="dw"), layers.Flatten(), layers.Dense(2)),
             ["layer 'dw' (DepthwiseConv2D)", "'gelu'", "not monotone"]),
    "sigmoid": (lambda: seq(layers.Conv2D(2, 3), layers.Activation("sigmoid", name="s"), layers.Flatten(),
                            layers.Dense(2)), ["layer 's' (Activation)", "'sigmoid'", "saturating"]),
    "tanh": (lambda: seq(layers.SeparableConv2D(2, 3, activation="tanh", name="sep"), layers.Flatten(),
                         layers.Dense(2)), ["layer 'sep' (SeparableConv2D)", "'tanh'", "cannot be negative"]),
    "elu": (lambda: seq(layers.Flatten(), layers.Dense(4, activation="elu", name="d"), layers.Dense(2)),
            ["layer 'd' (Dense)", "'elu'", "cannot be negative"]),
    "relu_slope": (lambda: seq(layers.ReLU(negative_slope=0.1, name="r"), layers.Flatten(), layers.Dense(2)),
                   ["layer 'r' (ReLU)", "negative_slope=0.1", "cannot be negative"]),
    "relu_threshold": (lambda: seq(layers.ReLU(threshold=0.5, name="r"), layers.Flatten(), layers.Dense(2)),
                       ["layer 'r' (ReLU)", "threshold=0.5"]),
    "permute": (lambda: seq(layers.Permute((3, 1, 2), name="p"), layers.Flatten(), layers.Dense(2)),
                ["layer 'p' (Permute)", "only pure flattening"]),
    "reshape_2d": (lambda: seq(layers.Reshape((64, 3), name="rs"), layers.Flatten(), layers.Dense(2)),
                   ["layer 'rs' (Reshape)", "(64, 3)", "only pure flattening"]),
    "reshape_to_map": (lambda: seq(layers.Reshape((1, 1, 4), name="rs"), layers.Flatten(), layers.Dense(2),
                                   shape=(4,)), ["layer 'rs' (Reshape)", "only pure flattening"]),
    "concat_spatial": (lambda: functional(lambda x: layers.Dense(2)(layers.Flatten()(
        layers.Concatenate(axis=1, name="cat")([layers.Conv2D(2, 1)(x), layers.Conv2D(2, 1)(x)])))),
        ["layer 'cat' (Concatenate)", "axis 1", "channel axis"]),
    "concat_width": (lambda: functional(lambda x: layers.Dense(2)(layers.Flatten()(
        layers.Concatenate(axis=-2, name="cat")([x, x])))), ["layer 'cat' (Concatenate)", "axis -2"]),
    "concat_after_flatten": (lambda: functional(lambda x: layers.Dense(2)(layers.Concatenate(name="cat")([
        layers.Flatten(name="f")(x), layers.GlobalAveragePooling2D()(x)]))), ["'cat' (Concatenate)", "Flatten 'f'"]),
    "depthwise_dilation": (lambda: seq(layers.DepthwiseConv2D(3, dilation_rate=2, name="dw"), layers.Flatten(),
                                       layers.Dense(2)), ["layer 'dw' (DepthwiseConv2D)", "dilation_rate"]),
    "separable_dilation": (lambda: seq(layers.SeparableConv2D(2, 3, dilation_rate=2, name="sep"), layers.Flatten(),
                                       layers.Dense(2)), ["layer 'sep' (SeparableConv2D)", "dilation_rate"]),
    "rescaling_spatial": (lambda: seq(layers.Rescaling(np.arange(1.0, 9.0).reshape(8, 1, 1), name="rs"),
                                      layers.Flatten(), layers.Dense(2)),
                          ["layer 'rs' (Rescaling)", "scale varies", "per-channel"]),
    "normalization_spatial": (lambda: seq(adapted(layers.Normalization(axis=(1, 3), name="n"), (8, 8, 3)),
                                          layers.Flatten(), layers.Dense(2)),
                              ["layer 'n' (Normalization)", "axis=(1, 3)"]),
    "maxpool_channels_first": (lambda: seq(layers.MaxPooling2D(data_format="channels_first", name="mp"),
                                           layers.Flatten(), layers.Dense(2), shape=(3, 8, 8)),
                               ["layer 'mp' (MaxPooling2D)", "channels_first"]),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refusals_give_one_line_naming_the_layer(case):
    build, expected = REFUSED[case]
    text = message(build())
    for fragment in expected:
        assert fragment in text, text


# ------------------------------------------------------------------ files

def kitchen_sink():
    """Every new layer in one functional model, to check that saved configs load and import alike."""
    inputs = keras.Input((9, 9, 3), name="img")
    x = layers.Rescaling(np.array([0.5, 1.0, 2.0]), offset=-0.25, name="rs")(inputs)
    x = layers.Normalization(mean=[0.1, 0.2, 0.3], variance=[1.0, 2.0, 0.5], name="norm")(x)
    x = layers.ZeroPadding2D(((0, 1), (1, 0)), name="pad")(x)
    x = layers.Conv2D(6, 3, groups=3, activation="relu6", name="g")(x)
    a = layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw")(x)
    a = layers.ReLU(max_value=4.0, name="r4")(a)
    b = layers.SeparableConv2D(4, 3, padding="same", activation="relu", name="sep")(x)
    x = layers.Concatenate(name="cat")([a, b])
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="mp")(x)
    x = layers.GlobalMaxPooling2D(keepdims=True, name="gmp")(x)
    x = layers.Conv2D(5, 1, name="logits")(x)
    x = layers.Reshape((5,), name="flat")(x)
    return keras.Model(inputs, layers.Softmax(name="prob")(x), name="kitchen_sink")


@pytest.mark.parametrize("suffix", [None, ".keras", ".h5"], ids=["memory", "keras", "h5"])
def test_kitchen_sink_saved_and_loaded(suffix, tmp_path):
    model = kitchen_sink()
    randomize_keras(model, 0, kernel_gain=3.0)
    source = model
    if suffix:
        source = tmp_path / f"model{suffix}"
        model.save(source)
    graph = load_model(source)
    assert_well_formed(graph)
    x = images(model)
    np.testing.assert_allclose(run_graph(graph, to_channels_first(torch.from_numpy(x))).numpy(),
                               keras_output(model, x), rtol=1e-4, atol=1e-6)
    assert [n.op for n in graph.nodes].count("affine") == 2 and graph.output == "prob"
