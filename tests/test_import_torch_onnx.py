"""PyTorch and ONNX importers, and the faithfulness of the three import routes.

One network saved as Keras, PyTorch (nn.Module, TorchScript) and ONNX must convert to the same
spiking network: the same weights within float tolerance and identical spikes, neuron by neuron,
on test images. Checked on the demo network and on a small ResNet-style network with Add.
The torch modules are built by copying the Keras weights; ONNX files come from
``torch.onnx.export`` (the TorchScript-based exporter, which needs only the onnx package).
"""

import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from tests.helpers import randomize_keras, simulate_counting
from spkeras import api, cli
from spkeras.demo import asset
from spkeras.errors import ModelError
from spkeras.importers import load_model
from spkeras.importers.keras import import_keras
from spkeras.methods import get_method
from spkeras.methods.framework import convert
from spkeras.ops import run_graph, to_channels_first
from spkeras.simulate import simulate

from .helpers import one_thread  # noqa: F401  (autouse fixture: tiny tensors, one thread)

onnx = pytest.importorskip("onnx")
keras = import_keras()
layers = keras.layers
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")

T = 32


# ------------------------------------------------------------------ copying Keras weights into torch

def conv_from(layer, conv: nn.Conv2d) -> None:
    kernel, bias = (torch.from_numpy(np.asarray(v)) for v in layer.get_weights())
    conv.weight.data = kernel.permute(3, 2, 0, 1).contiguous()
    conv.bias.data = bias.clone()


def bn_from(layer, bn) -> None:
    gamma, beta, mean, var = (torch.from_numpy(np.asarray(v)) for v in layer.get_weights())
    bn.weight.data, bn.bias.data, bn.running_mean.data, bn.running_var.data = gamma, beta, mean, var
    bn.eps = float(layer.epsilon)


def dense_from(layer, linear: nn.Linear, hwc=None) -> None:
    """Keras kernel (in, out) → torch (out, in); after Flatten, reorder columns from HWC to CHW."""
    kernel, bias = (torch.from_numpy(np.asarray(v)) for v in layer.get_weights())
    weight = kernel.T
    if hwc:
        h, w, c = hwc
        weight = weight[:, torch.arange(h * w * c).reshape(h, w, c).permute(2, 0, 1).reshape(-1)]
    linear.weight.data, linear.bias.data = weight.contiguous(), bias.clone()


class DemoNet(nn.Module):
    """spkeras/demo/mnist_cnn.keras written in PyTorch."""

    input_shape = (1, 28, 28)

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.pool1 = nn.AvgPool2d(2)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.pool2 = nn.AvgPool2d(2)
        self.conv3 = nn.Conv2d(16, 16, 3, stride=2, padding=1)  # Keras 'same' on 7×7, stride 2: (1, 1)
        self.drop = nn.Dropout(0.3)
        self.fc1, self.bn2 = nn.Linear(256, 32), nn.BatchNorm1d(32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        x = self.pool1(F.relu(self.bn1(self.conv1(x))))
        x = self.pool2(torch.relu(self.conv2(x)))
        x = F.relu(self.conv3(x))
        x = self.drop(x.view(x.size(0), -1))
        x = F.relu(self.bn2(self.fc1(x)))
        return torch.softmax(self.fc2(x), dim=1)


def demo_torch(model) -> DemoNet:
    net = DemoNet()
    get = model.get_layer
    conv_from(get("conv2d"), net.conv1)
    bn_from(get("batch_normalization"), net.bn1)
    conv_from(get("conv2d_1"), net.conv2)
    conv_from(get("conv2d_2"), net.conv3)
    dense_from(get("dense"), net.fc1, hwc=(4, 4, 16))
    bn_from(get("batch_normalization_1"), net.bn2)
    dense_from(get("dense_1"), net.fc2)
    return net.eval()


def resnet_keras():
    """A small ResNet-style network: stem, a residual block with Add, pooling, global pooling."""
    inputs = keras.Input((8, 8, 2))
    x = layers.Conv2D(4, 3, padding="same", name="stem")(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    y = layers.Conv2D(4, 3, padding="same", activation="relu", name="block_c1")(x)
    y = layers.Conv2D(4, 3, padding="same", name="block_c2")(y)
    y = layers.BatchNormalization(name="block_bn")(y)
    z = layers.Add(name="block_add")([y, x])
    z = layers.ReLU(name="block_relu")(z)
    z = layers.AveragePooling2D(2, name="pool")(z)
    z = layers.Conv2D(6, 3, padding="same", activation="relu", name="head")(z)
    z = layers.GlobalAveragePooling2D(name="gap")(z)
    outputs = layers.Dense(5, activation="softmax", name="fc")(z)
    model = keras.Model(inputs, outputs, name="resnet_small")
    randomize_keras(model, 0, kernel_gain=1.5, bias_mean=0.05, bias_std=0.2)
    return model


class ResNet(nn.Module):
    input_shape = (2, 8, 8)

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.c1 = nn.Conv2d(4, 4, 3, padding="same")
        self.c2, self.bn = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.pool = nn.AvgPool2d(2)
        self.head = nn.Conv2d(4, 6, 3, padding=1)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 5)

    def forward(self, x):
        x = self.stem(x)
        y = self.bn(self.c2(F.relu(self.c1(x))))
        z = torch.relu(y + x)
        z = F.relu(self.head(self.pool(z)))
        return F.softmax(self.fc(torch.flatten(self.gap(z), 1)), dim=1)


def resnet_torch(model) -> ResNet:
    net = ResNet()
    get = model.get_layer
    conv_from(get("stem"), net.stem[0])
    bn_from(get("stem_bn"), net.stem[1])
    conv_from(get("block_c1"), net.c1)
    conv_from(get("block_c2"), net.c2)
    bn_from(get("block_bn"), net.bn)
    conv_from(get("head"), net.head)
    dense_from(get("fc"), net.fc)
    return net.eval()


def export_onnx(module, path, shape):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(1, *shape),), str(path), dynamo=False,
                          training=torch.onnx.TrainingMode.PRESERVE,  # keep BN: no conv-BN fusion by torch
                          input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    return path


# ------------------------------------------------------------------ the faithfulness check

def assert_same_snn(graphs: dict, calibration: torch.Tensor, images: torch.Tensor):
    """Every graph converts to the same SNN: weights within tolerance, identical spikes per neuron."""
    method = get_method("ecc")
    nets = {route: convert(graph, calibration, method, T) for route, graph in graphs.items()}
    reference_route, reference = next(iter(nets.items()))
    records = {route: simulate_counting(net, images, T) for route, net in nets.items()}
    expected = records[reference_route]
    for route, net in nets.items():
        ops = [n.op for n in net.graph.nodes]
        assert ops == [n.op for n in reference.graph.nodes], route
        for mine, theirs in zip(net.graph.nodes, reference.graph.nodes):
            assert mine.shape == theirs.shape, (route, mine.name)
            assert mine.params.keys() == theirs.params.keys(), (route, mine.name)
            for key in mine.params:
                torch.testing.assert_close(mine.params[key], theirs.params[key], rtol=1e-5, atol=1e-6)
            if mine.op == "spike":
                assert mine.attrs["threshold"] == pytest.approx(theirs.attrs["threshold"])
        assert list(net.lambdas.values()) == pytest.approx(list(reference.lambdas.values()), rel=1e-5)
        record = records[route]
        assert len(record.layers) == len(expected.layers)
        for mine, theirs in zip(record.layers, expected.layers):
            assert torch.equal(record.neuron_counts[mine], expected.neuron_counts[theirs]), (route, mine)
        assert torch.equal(record.predictions, expected.predictions), route
    assert float(expected.spikes[-1].sum()) > 0


@pytest.fixture(scope="module")
def demo():
    model = keras.saving.load_model(asset("mnist_cnn.keras"), compile=False, safe_mode=True)
    return model, demo_torch(model)


def demo_images(name, n):
    dataset = api.as_dataset(asset(name), n)
    return to_channels_first(torch.from_numpy(dataset.x)).clone(memory_format=torch.contiguous_format)


def test_demo_network_agrees_across_keras_pytorch_onnx(demo, tmp_path):
    model, module = demo
    x = demo_images("mnist_test.npz", 20)
    expected = model.predict(x.permute(0, 2, 3, 1).numpy(), verbose=0)
    with torch.no_grad():
        np.testing.assert_allclose(module(x).numpy(), expected, atol=1e-5)  # the copy is right
    script = tmp_path / "demo.pt"
    torch.jit.script(module).save(str(script))
    graphs = {
        "keras": load_model(asset("mnist_cnn.keras")),
        "torch.fx": load_model(module),  # input shape from the module's input_shape attribute
        "torchscript": load_model(script, input_shape=(1, 28, 28)),
        "onnx": load_model(export_onnx(module, tmp_path / "demo.onnx", (1, 28, 28))),
    }
    for graph in graphs.values():
        np.testing.assert_allclose(run_graph(graph, x).detach().numpy(), expected, atol=1e-5)
    assert_same_snn(graphs, demo_images("mnist_calib.npz", 100), x)


def test_resnet_with_add_agrees_across_keras_pytorch_onnx(tmp_path):
    model = resnet_keras()
    module = resnet_torch(model)
    keras_path = tmp_path / "resnet.keras"
    model.save(keras_path)
    generator = torch.Generator().manual_seed(3)
    calibration, images = torch.rand((60, 2, 8, 8), generator=generator), torch.rand((20, 2, 8, 8), generator=generator)
    expected = model.predict(images.permute(0, 2, 3, 1).numpy(), verbose=0)
    with torch.no_grad():
        np.testing.assert_allclose(module(images).numpy(), expected, atol=1e-5)
    traced = tmp_path / "resnet_traced.ts"
    torch.jit.trace(module, torch.zeros(1, 2, 8, 8)).save(str(traced))
    graphs = {
        "keras": load_model(keras_path),
        "torch.fx": load_model(module, input_shape=(2, 8, 8)),
        "torchscript (traced)": load_model(traced, input_shape=(2, 8, 8)),
        "onnx": load_model(export_onnx(module, tmp_path / "resnet.onnx", (2, 8, 8))),
    }
    for route, graph in graphs.items():
        assert [n.op for n in graph.nodes].count("add") == 1, route
        np.testing.assert_allclose(run_graph(graph, images).detach().numpy(), expected, atol=1e-5)
    assert_same_snn(graphs, calibration, images)


# ------------------------------------------------------------------ PyTorch details

def test_torch_padding_forms_map_exactly():
    class Pads(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(1, 2, (3, 5), padding=(1, 2))
            self.b = nn.Conv2d(2, 2, 4, padding="same")  # even kernel: torch pads (1, 2) per axis
            self.c = nn.Conv2d(2, 2, 3, padding="valid", bias=False)
            self.fc = nn.Linear(2 * 5 * 5, 3)

        def forward(self, x):
            return self.fc(torch.flatten(F.relu(self.c(F.relu(self.b(F.relu(self.a(x)))))), 1))

    graph = load_model(Pads(), input_shape=(1, 7, 7))
    pads = [n.attrs["padding"] for n in graph.nodes if n.op == "conv2d"]
    assert pads == [[1, 1, 2, 2], [1, 2, 1, 2], [0, 0, 0, 0]]


def test_torch_input_shape_is_required_and_checked():
    with pytest.raises(ModelError, match="input shape"):
        load_model(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))
    with pytest.raises(ModelError, match="fails"):
        load_model(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), input_shape=(1, 3, 3))
    graph = load_model(nn.Sequential(nn.Flatten(), nn.Linear(9, 2)), input_shape=(1, 3, 3))
    assert graph.input.shape == (1, 3, 3)


@pytest.mark.parametrize("module, shape, pattern", [
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2, dilation=2)), (1, 8, 8), r"MaxPool2d.*dilation"),
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.Sigmoid()), (1, 8, 8), r"Sigmoid.*hidden activations must be ReLU"),
    (nn.Sequential(nn.Conv2d(1, 2, 3, dilation=2)), (1, 8, 8), r"dilation"),
    (nn.Sequential(nn.Conv2d(2, 2, 3), nn.Upsample(scale_factor=2)), (2, 6, 6), r"Upsample.*supported are"),
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.AvgPool2d(3, padding=1, count_include_pad=False)), (1, 8, 8),
     r"count_include_pad"),
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveMaxPool2d(4)), (1, 8, 8), r"AdaptiveMaxPool2d.*divide"),
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2, track_running_stats=False)), (1, 8, 8),
     r"track_running_stats"),
    (nn.Sequential(nn.Flatten(), nn.Softmax(1), nn.Linear(2 * 6 * 6, 2)), (2, 6, 6),
     r"softmax is only supported on the final"),
])
def test_torch_unsupported_modules_are_one_line_errors(module, shape, pattern):
    with pytest.raises(ModelError, match=pattern) as info:
        load_model(module, input_shape=shape)
    assert "\n" not in str(info.value)


def test_torch_functions_that_are_not_supported_are_named():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)

        def forward(self, x):
            return torch.tanh(self.conv(x)).flatten(1)

    with pytest.raises(ModelError, match=r"torch.tanh.*ReLU"):
        load_model(Odd(), input_shape=(1, 5, 5))
    with pytest.raises(ModelError, match=r"torch.tanh.*ReLU"):
        load_model(torch.jit.script(Odd()), input_shape=(1, 5, 5))


def test_torchscript_control_flow_is_refused(tmp_path):
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            if x.sum() > 0:
                x = torch.relu(x)
            return self.fc(x)

    with pytest.raises(ModelError, match="control flow"):
        load_model(torch.jit.script(Branchy()), input_shape=(4,))


def test_state_dict_with_class_through_the_cli(tmp_path, monkeypatch, capsys):
    (tmp_path / "tiny_net_for_spkeras.py").write_text(
        "import torch.nn as nn\n"
        "class Net(nn.Sequential):\n"
        "    def __init__(self):\n"
        "        super().__init__(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    net = importlib.import_module("tiny_net_for_spkeras").Net()
    torch.save(net.state_dict(), tmp_path / "weights.pt")
    assert cli.main(["info", "weights.pt", "--torch-class", "tiny_net_for_spkeras:Net", "--input-shape", "1,6,6"]) == 0
    assert "conv2d" in capsys.readouterr().out
    assert cli.main(["info", "weights.pt", "--input-shape", "1,6,6"]) == 2
    assert "--torch-class" in capsys.readouterr().err


# ------------------------------------------------------------------ ONNX details

def onnx_model(nodes, initializers, input_shape, output_shape, opset=13):
    helper = onnx.helper
    graph = helper.make_graph(
        nodes, "handmade",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", *input_shape])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", *output_shape])],
        [onnx.numpy_helper.from_array(np.asarray(v, np.float32) if np.asarray(v).dtype.kind == "f" else np.asarray(v),
                                      k) for k, v in initializers.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_onnx_asymmetric_pads_matmul_add_and_reshape():
    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(3, 2, 3, 3)), rng.normal(size=3)
    fc, fc_b = rng.normal(size=(3 * 2 * 2, 4)), rng.normal(size=4)
    helper = onnx.helper
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[0, 1, 1, 2], strides=[2, 2]),  # t, l, b, r
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("AveragePool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Reshape", ["p", "shape"], ["f"]),
        helper.make_node("MatMul", ["f", "fc"], ["m"]),
        helper.make_node("Add", ["m", "fc_b"], ["y0"]),
        helper.make_node("Softmax", ["y0"], ["y"], axis=1),
    ]
    model = onnx_model(nodes, {"w": w, "b": b, "fc": fc, "fc_b": fc_b, "shape": np.array([-1, 12], np.int64)},
                       (2, 8, 7), (4,))
    graph = load_model(model)
    conv = graph.nodes[1]
    assert conv.attrs["padding"] == [0, 1, 1, 2]  # (top, bottom, left, right)
    assert [n.op for n in graph.nodes] == ["input", "conv2d", "relu", "avgpool", "flatten", "dense", "softmax"]
    x = torch.rand(3, 2, 8, 7)
    ref = F.conv2d(F.pad(x, (1, 2, 0, 1)), torch.tensor(w, dtype=torch.float32), torch.tensor(b, dtype=torch.float32),
                   stride=2)
    ref = F.avg_pool2d(torch.relu(ref), 2).flatten(1) @ torch.tensor(fc, dtype=torch.float32)
    ref = torch.softmax(ref + torch.tensor(fc_b, dtype=torch.float32), 1)
    torch.testing.assert_close(run_graph(graph, x), ref, rtol=1e-5, atol=1e-6)


def test_onnx_auto_pad_same_upper_matches_keras_stride_2():
    w = np.random.default_rng(1).normal(size=(2, 1, 3, 3))
    nodes = [onnx.helper.make_node("Conv", ["x", "w"], ["y"], auto_pad="SAME_UPPER", strides=[2, 2])]
    graph = load_model(onnx_model(nodes, {"w": w}, (1, 8, 8), (2, 4, 4)))
    assert graph.nodes[1].attrs["padding"] == [0, 1, 0, 1]  # as Keras 'same' with stride 2 on 8×8


@pytest.mark.parametrize("op, pattern", [
    ("MaxPool", "dilations"),
    ("Sigmoid", "hidden activations must be ReLU"),
    ("LRN", "supported are Conv"),
])
def test_onnx_unsupported_operators_are_one_line_errors(op, pattern):
    attrs = {"kernel_shape": [2, 2], "dilations": [2, 2]} if op == "MaxPool" else {"size": 3} if op == "LRN" else {}
    model = onnx_model([onnx.helper.make_node(op, ["x"], ["y"], **attrs)], {}, (1, 4, 4), (1, 2, 2))
    with pytest.raises(ModelError, match=pattern) as info:
        load_model(model)
    assert "\n" not in str(info.value) and op in str(info.value)


def test_onnx_file_round_trip_and_corrupt_files(tmp_path):
    w = np.ones((1, 1, 1, 1))
    model = onnx_model([onnx.helper.make_node("Conv", ["x", "w"], ["y"])], {"w": w}, (1, 2, 2), (1, 2, 2))
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    assert load_model(path).nodes[1].op == "conv2d"
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(ModelError, match="cannot load ONNX model|holds no operators"):
        load_model(path)
