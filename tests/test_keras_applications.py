"""Keras Applications imported whole: every architecture below builds at 32×32 (no larger input was
needed), imports without refusal, and the IR computes the logits Keras computes.

The models are built with ``weights=None`` (nothing is downloaded) and ``classifier_activation=None``
so that the logits, not saturated softmax probabilities, are compared. Every variable is then
randomized, so that a misplaced parameter cannot hide behind Keras's identity-like initial values
(zero means, unit variances); kernels get He's gain √2, so that the signal survives VGG's 16 ReLUs.
The batch-norm moving statistics are then set from the layers' inputs on a calibration batch, as
training would leave them: with random statistics the signal of these deep networks fades layer after
layer until every image gives the same logits, and the comparison would check the biases only. The
variances are divided by 3², so that batch-norm outputs spread about 3 and the ReLU6 of the MobileNets
clip some of their inputs.
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
from tests.test_import_keras import assert_well_formed  # noqa: E402
from spkeras.importers.keras import import_keras, keras_to_graph  # noqa: E402
from spkeras.ops import apply_cnn, run_graph, to_channels_first  # noqa: E402

keras = import_keras()
# Keras' torch backend converts tensors with np.array(x), which NumPy 2 flags (not ours to fix)
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

# architecture → (op or (op, attr, value)) → number of such nodes the import must produce
STRUCTURE = {
    "VGG16": {"conv2d": 13, "maxpool": 5, "dense": 3},
    "VGG19": {"conv2d": 16, "maxpool": 5, "dense": 3},
    "ResNet50": {"conv2d": 53, "add": 16, "maxpool": 1, "pad": 2, "global_avgpool": 1},
    "ResNet50V2": {"conv2d": 53, "add": 16, "maxpool": 4, "pad": 18, "global_avgpool": 1},  # 3 are 1×1/2 shortcuts
    "MobileNet": {("conv2d", "groups", None): 15, ("conv2d", "groups", "depthwise"): 13,
                  ("relu", "max_value", 6.0): 27, "avgpool": 1, "flatten": 1},
    "MobileNetV2": {("conv2d", "groups", "depthwise"): 17, ("relu", "max_value", 6.0): 35, "add": 10},
    "DenseNet121": {"conv2d": 120, "concat": 58, "avgpool": 3, "maxpool": 1, "batchnorm": 121},
}


def count(graph, key) -> int:
    """Nodes of an op, or of an op whose attribute has a value ('depthwise': groups > 1; None: absent)."""
    if isinstance(key, str):
        return len(graph.nodes_of(key))
    op, attr, value = key
    nodes = graph.nodes_of(op)
    if value == "depthwise":
        return sum(node.attrs.get(attr, 1) > 1 for node in nodes)
    return sum(node.attrs.get(attr) == value for node in nodes)


def images(n, seed):
    return np.random.default_rng(seed).uniform(0.0, 1.0, (n, 32, 32, 3)).astype(np.float32)


def calibrate_batchnorm(model, x, spread=3.0):
    """Set every BatchNormalization layer's moving mean and variance (the variance divided by
    ``spread``²) to the statistics of its input on ``x``, layer after layer in one pass over an
    imported graph, whose batchnorm nodes are updated as they are reached."""

    def apply(node, inputs):
        if node.op == "batchnorm":
            axes = [0, 2, 3] if inputs[0].dim() == 4 else [0]
            node.params["mean"] = inputs[0].mean(axes)
            node.params["var"] = inputs[0].var(axes) / spread**2
            layer = model.get_layer(node.source.split(" ")[0])
            layer.moving_mean.assign(node.params["mean"].numpy())
            layer.moving_variance.assign(node.params["var"].numpy())
        return apply_cnn(node, inputs)

    run_graph(keras_to_graph(model), to_channels_first(torch.from_numpy(x)), apply=apply)


@pytest.fixture(scope="module", params=list(STRUCTURE))
def application(request):
    """(name, randomized and calibrated Keras model, its imported graph), built once per architecture."""
    build = getattr(keras.applications, request.param)
    model = build(weights=None, input_shape=(32, 32, 3), classes=10, classifier_activation=None)
    randomize_keras(model, seed=0, kernel_gain=2**0.5, bias_std=0.1)  # He gain: VGG has no batch norm
    calibrate_batchnorm(model, images(4, seed=2))
    return request.param, model, keras_to_graph(model)


def test_application_matches_keras(application):
    name, model, graph = application
    x = images(2, seed=1)
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    clipped = []  # per clipped relu: whether it clips anything

    def observe(node, y):
        if node.op == "relu" and "max_value" in node.attrs:
            clipped.append(bool((y == node.attrs["max_value"]).any()))

    actual = run_graph(graph, to_channels_first(torch.from_numpy(x)), observe=observe).numpy()
    assert actual.shape == expected.shape == (2, 10)
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4 * scale, err_msg=name)
    assert np.abs(expected[0] - expected[1]).max() > 0.01 * scale  # the logits depend on the image (100 × atol)
    assert not clipped or sum(clipped) > len(clipped) // 2  # most ReLU6 clip: the cap is exercised


def test_application_structure(application):
    name, model, graph = application
    assert_well_formed(graph)
    assert graph.input.shape == (3, 32, 32) and graph.node(graph.output).shape == (10,)
    found = {key: count(graph, key) for key in STRUCTURE[name]}
    assert found == STRUCTURE[name]


def test_softmax_classifier_is_the_graph_output():
    """With the default classifier_activation the graph ends in softmax (MobileNet: Reshape → Activation)."""
    model = keras.applications.MobileNet(weights=None, input_shape=(32, 32, 3), classes=10, alpha=0.25)
    randomize_keras(model, seed=0)
    calibrate_batchnorm(model, images(4, seed=2))
    graph = keras_to_graph(model)
    assert graph.node(graph.output).op == "softmax"
    x = images(2, seed=1)
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    actual = run_graph(graph, to_channels_first(torch.from_numpy(x))).numpy()
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-6)


def test_application_snn_closed_form_matches_the_cnn(application):
    """The converted network's closed form at large T predicts what the CNN predicts (λ from the
    same images, so that nothing is clipped by calibration; the output read from its potential,
    since logits may be negative)."""
    from spkeras.closed_form import closed_form
    from spkeras.methods import get_method
    from spkeras.methods.framework import convert

    name, model, graph = application
    x = to_channels_first(torch.from_numpy(images(4, seed=3)))
    net = convert(graph, x, get_method("ecc", readout="potential"), 100_000)  # ECC's TRE current depends on T
    record = closed_form(net, x, [100_000])
    assert torch.equal(record.predictions[0], run_graph(graph, x).argmax(1)), name
