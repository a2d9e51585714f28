"""Keras Applications imported whole: every architecture below builds at 32×32 (no larger input was
needed), imports without refusal, and the IR computes the logits Keras computes.

The models are built with ``weights=None`` (nothing is downloaded) and ``classifier_activation=None``
so that the logits, not saturated softmax probabilities, are compared; every variable, the batch-norm
statistics included, is then randomized so that a misplaced parameter cannot hide behind Keras's
identity-like initial values (zero means, unit variances).
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
from spkeras.ops import run_graph, to_channels_first  # noqa: E402

keras = import_keras()
# Keras' torch backend converts tensors with np.array(x), which NumPy 2 flags (not ours to fix)
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

# architecture → (op or (op, attr, value)) → number of such nodes the import must produce
STRUCTURE = {
    "VGG16": {"conv2d": 13, "maxpool": 5, "dense": 3},
    "VGG19": {"conv2d": 16, "maxpool": 5, "dense": 3},
    "ResNet50": {"conv2d": 53, "add": 16, "maxpool": 1, "pad": 2, "global_avgpool": 1},
    "ResNet50V2": {"conv2d": 53, "add": 16, "maxpool": 4, "pad": 5, "global_avgpool": 1},  # 3 are 1×1/2 shortcuts
    "MobileNet": {("conv2d", "groups", None): 14, ("conv2d", "groups", "depthwise"): 13,
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


@pytest.fixture(scope="module", params=list(STRUCTURE))
def application(request):
    """(name, randomized Keras model, imported graph), built once per architecture."""
    build = getattr(keras.applications, request.param)
    model = build(weights=None, input_shape=(32, 32, 3), classes=10, classifier_activation=None)
    randomize_keras(model, seed=0)
    return request.param, model, keras_to_graph(model)


def test_application_matches_keras(application):
    name, model, graph = application
    x = np.random.default_rng(1).uniform(0.0, 1.0, (2, 32, 32, 3)).astype(np.float32)
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    actual = run_graph(graph, to_channels_first(torch.from_numpy(x))).numpy()
    assert actual.shape == expected.shape == (2, 10)
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4 * scale, err_msg=name)
    assert not np.allclose(expected[0], expected[1])  # the images are told apart


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
    graph = keras_to_graph(model)
    assert graph.node(graph.output).op == "softmax"
    x = np.random.default_rng(1).uniform(0.0, 1.0, (2, 32, 32, 3)).astype(np.float32)
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    actual = run_graph(graph, to_channels_first(torch.from_numpy(x))).numpy()
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-6)
