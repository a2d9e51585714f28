"""The PyTorch (torch.fx, TorchScript) and ONNX importers on the layers of torchvision-style networks.

Max pooling (ceil mode included), clipped ReLU (ReLU6, Hardtanh, clamp, ONNX Clip), grouped and
depthwise convolutions, concatenation, adaptive average pooling, zero padding, padded average
pooling and the flatten/reshape forms each get a tiny module with random weights. Its graph must
reproduce the module's own output (the importer checks it on its example batch; the tests again on
a fresh one), through torch.fx, TorchScript where it has its own code path, and the ONNX file
``torch.onnx.export`` writes (the TorchScript-based exporter, as in test_import_torch_onnx.py).
Activations an IF neuron cannot represent are refused in one line naming the layer. Finally
torchvision layouts, written out module for module (ResNet-18, VGG-11, a MobileNetV2
inverted-residual net, a DenseNet-style net), import at 32×32 with random weights.
"""

import io
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from spkeras.errors import ModelError
from spkeras.importers import load_model
from spkeras.importers.common import ceil_mode_extra
from spkeras.importers.torch import module_to_graph
from spkeras.ops import run_graph

from .helpers import one_thread  # noqa: F401  (autouse fixture: tiny tensors, one thread)
from .test_import_torch_onnx import onnx_model

onnx = pytest.importorskip("onnx")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")


# ------------------------------------------------------------------ helpers

def randomize(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights everywhere and non-trivial batch-norm statistics; eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=generator) * 0.1)
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.weight.copy_(1 + 0.2 * torch.randn(n, generator=generator))
                m.bias.copy_(0.1 * torch.randn(n, generator=generator))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
                m.running_var.copy_(0.5 + torch.rand(n, generator=generator))
    return module.eval()


def onnx_of(module: nn.Module, shape, opset: int | None = None):
    """The module exported by torch.onnx.export (TorchScript-based), as an onnx.ModelProto."""
    buffer = io.BytesIO()
    options = {} if opset is None else {"opset_version": opset}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(1, *shape),), buffer, dynamo=False,
                          training=torch.onnx.TrainingMode.PRESERVE,  # keep BN: no conv-BN fusion by torch
                          input_names=["x"], dynamic_axes={"x": {0: "batch"}}, **options)
    return onnx.load_from_string(buffer.getvalue())


def assert_reproduces(graph, module, shape, seed=1):
    x = torch.rand((4, *shape), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected = module(x)
        torch.testing.assert_close(run_graph(graph, x), expected.reshape(4, -1), rtol=1e-4, atol=1e-5)


def import_all(module, shape, routes=("fx", "onnx"), opset=None) -> dict:
    """Import ``module`` through each route and check every graph against the module itself."""
    module = module.eval()
    graphs = {}
    for route in routes:
        if route == "fx":
            graphs[route] = module_to_graph(module, input_shape=shape)
        elif route == "script":
            graphs[route] = module_to_graph(torch.jit.script(module), input_shape=shape)
        elif route == "trace":
            graphs[route] = module_to_graph(torch.jit.trace(module, torch.rand(1, *shape)), input_shape=shape)
        elif route == "onnx":
            from spkeras.importers.onnx import onnx_to_graph

            graphs[route] = onnx_to_graph(onnx_of(module, shape, opset))
        else:
            raise AssertionError(route)
        assert_reproduces(graphs[route], module, shape)
    return graphs


def ops_of(graph, op):
    return [n for n in graph.nodes if n.op == op]


class Net(nn.Module):
    """body(x) → flatten → Linear(classes): a network with the layer under test in ``body``."""

    def __init__(self, body, features: int, classes: int = 3):
        super().__init__()
        self.body, self.fc = body, nn.Linear(features, classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.body(x), 1))


class Lambda(nn.Module):
    """A module whose forward is a function (torch.fx traces it; TorchScript can't script it)."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def refused(module, shape, *patterns, route="fx"):
    """Import must fail with a one-line ModelError matching every pattern."""
    module = module.eval()
    if route == "script":
        module = torch.jit.script(module)
    elif route == "trace":
        module = torch.jit.trace(module, torch.rand(1, *shape))
    with pytest.raises(ModelError) as info:
        module_to_graph(module, input_shape=shape)
    message = str(info.value)
    assert "\n" not in message
    for pattern in patterns:
        assert pattern in message, (pattern, message)
    return message


def onnx_refused(model, *patterns):
    from spkeras.importers.onnx import onnx_to_graph

    with pytest.raises(ModelError) as info:
        onnx_to_graph(model)
    message = str(info.value)
    assert "\n" not in message
    for pattern in patterns:
        assert pattern in message, (pattern, message)


def onnx_run(model, x):
    from spkeras.importers.onnx import onnx_to_graph

    graph = onnx_to_graph(model)
    return graph, run_graph(graph, x)


# ------------------------------------------------------------------ max pooling

def test_ceil_mode_extra_matches_pytorch_output_sizes():
    """The ceil-mode rule against PyTorch's own output size, on every small configuration."""
    changed = dropped = 0
    for size in range(1, 13):
        for kernel in range(1, 5):
            for stride in range(1, 5):
                for pad in range(kernel // 2 + 1):
                    if size + 2 * pad < kernel:
                        continue
                    x = torch.zeros(1, 1, size, 1)
                    out = F.max_pool2d(x, (kernel, 1), (stride, 1), (pad, 0), ceil_mode=True).shape[2]
                    floor = (size + 2 * pad - kernel) // stride + 1
                    extra = ceil_mode_extra(size, kernel, stride, pad, pad)
                    assert (size + 2 * pad + extra - kernel) // stride + 1 == out, (size, kernel, stride, pad)
                    changed += out > floor
                    naive = -(-(size + 2 * pad - kernel) // stride) + 1  # ceil without PyTorch's rule
                    dropped += naive > out
    assert changed > 50 and dropped > 10  # both cases are exercised


@pytest.mark.parametrize("kernel, stride, padding, ceil_mode, size", [
    (2, None, 0, False, (8, 8)),
    (3, 2, 1, False, (9, 9)),            # ResNet's stem pool
    (3, 2, 0, True, (8, 8)),             # ceil mode adds a row and a column: 4×4, not 3×3
    (2, 2, 0, True, (7, 5)),             # odd sizes: 4×3, not 3×2
    (2, 3, 1, True, (5, 5)),             # the rule drops a window that would start in the right padding
    ((2, 3), (1, 2), (1, 1), True, (7, 8)),
])
def test_maxpool2d_module_all_routes(kernel, stride, padding, ceil_mode, size):
    pool = nn.MaxPool2d(kernel, stride, padding, ceil_mode=ceil_mode)
    body = nn.Sequential(nn.Conv2d(2, 3, 1), pool, nn.ReLU())
    features = body(torch.zeros(1, 2, *size)).numel()
    module = randomize(Net(body, features))
    graphs = import_all(module, (2, *size), routes=("fx", "script", "trace", "onnx"))
    for graph in graphs.values():
        (maxpool,) = ops_of(graph, "maxpool")
        assert maxpool.shape == tuple(pool(torch.zeros(1, 3, *size)).shape[1:])
    if (kernel, stride, size) == (3, 2, (8, 8)):
        assert graphs["fx"].nodes[2].attrs == {"kernel": [3, 3], "stride": [2, 2], "padding": [0, 1, 0, 1]}
    if (kernel, stride, size) == (2, 3, (5, 5)):
        assert maxpool.attrs["padding"] == [1, 1, 1, 1]  # no extra padding: the dropped window stays dropped


def test_maxpool_functional_forms_and_global_max_pooling():
    def forward(x):
        x = F.max_pool2d(x, 2, ceil_mode=True)           # 9×9 → 5×5
        x = torch.max_pool2d(x, 3, 1, 1)                 # 5×5 → 5×5
        y = F.adaptive_max_pool2d(x, 1)                  # (C, 1, 1)
        return torch.cat([y, F.adaptive_max_pool2d(torch.relu(x), (1, 1))], dim=1)

    body = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), Lambda(forward))
    module = randomize(Net(body, 6))
    graphs = import_all(module, (2, 9, 9))
    for graph in graphs.values():
        pools = ops_of(graph, "maxpool")
        assert [p.attrs["kernel"] for p in pools] == [[2, 2], [3, 3], [5, 5], [5, 5]]
        assert pools[0].attrs["padding"] == [0, 1, 0, 1] and pools[-1].shape == (3, 1, 1)


def test_adaptive_max_pool_module_through_torchscript():
    module = randomize(nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.AdaptiveMaxPool2d(1), nn.Flatten(),
                                     nn.Linear(4, 3)))
    graphs = import_all(module, (2, 6, 6), routes=("fx", "script", "trace", "onnx"))
    for graph in graphs.values():
        (pool,) = ops_of(graph, "maxpool")
        assert pool.attrs == {"kernel": [4, 4], "stride": [4, 4], "padding": [0, 0, 0, 0]}


def test_maxpool_refusals_name_the_layer():
    refused(nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2, dilation=2)), (1, 9, 9), "'1' (MaxPool2d)", "dilation")

    class Indices(nn.Module):
        def __init__(self):
            super().__init__()
            self.pool = nn.MaxPool2d(2, return_indices=True)

        def forward(self, x):
            return self.pool(x)[0].flatten(1)

    refused(Indices(), (1, 4, 4), "'pool' (MaxPool2d)", "return_indices")
    refused(nn.Sequential(nn.MaxPool1d(2)), (8,), "MaxPool1d", "supported pooling")


def test_onnx_maxpool_attributes():
    x = torch.rand(3, 2, 7, 6)
    helper = onnx.helper

    def maxpool(**attrs):
        model = onnx_model([helper.make_node("MaxPool", ["x"], ["y"], **attrs)], {}, (2, 7, 6), (2, "h", "w"))
        return onnx_run(model, x)

    _, y = maxpool(kernel_shape=[3, 2], strides=[2, 2], pads=[1, 0, 1, 0], ceil_mode=1)
    torch.testing.assert_close(y, F.max_pool2d(x, (3, 2), 2, (1, 0), ceil_mode=True))
    _, y = maxpool(kernel_shape=[2, 2], strides=[3, 3], pads=[1, 1, 1, 1], ceil_mode=1)  # a dropped window
    torch.testing.assert_close(y, F.max_pool2d(x, 2, 3, 1, ceil_mode=True))
    graph, y = maxpool(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER")
    assert graph.nodes[1].attrs["padding"] == [1, 1, 0, 1] and y.shape[2:] == (4, 3)
    graph, _ = maxpool(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_LOWER")
    assert graph.nodes[1].attrs["padding"] == [1, 1, 1, 0]
    _, y = maxpool(kernel_shape=[2, 2], auto_pad="VALID")
    torch.testing.assert_close(y, F.max_pool2d(x, 2, 1))
    _, y = onnx_run(onnx_model([helper.make_node("GlobalMaxPool", ["x"], ["y"])], {}, (2, 7, 6), (2, 1, 1)), x)
    torch.testing.assert_close(y, x.amax(dim=(2, 3), keepdim=True))
    for attrs, pattern in [({"storage_order": 1}, "storage_order"), ({"dilations": [2, 2]}, "dilations")]:
        node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], **attrs)
        onnx_refused(onnx_model([node], {}, (2, 7, 6), (2, 3, 3)), "MaxPool", pattern)
    nodes = [helper.make_node("MaxPool", ["x"], ["p", "i"], kernel_shape=[2, 2], name="pool"),
             helper.make_node("Cast", ["i"], ["y"], to=onnx.TensorProto.FLOAT)]
    onnx_refused(onnx_model(nodes, {}, (2, 4, 4), (2, 2, 2)), "pool (MaxPool)", "Indices")


# ------------------------------------------------------------------ clipped ReLU

class ClippedReLUs(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.relu6, self.hardtanh = nn.ReLU6(), nn.Hardtanh(0.0, 4.0)
        self.fc = nn.Linear(4 * 5 * 5, 3)

    def forward(self, x):
        x = self.hardtanh(self.relu6(self.conv(x)))
        x = F.relu6(x)
        x = F.hardtanh(x, 0.0, 3.0)
        x = torch.clamp(x, 0, 2.5)
        x = x.clamp(min=0, max=2)
        x = x.clamp(min=0)
        return self.fc(torch.flatten(x, 1))


@pytest.mark.parametrize("opset", [None, 9])  # Clip bounds as inputs (opset ≥ 11) and as attributes
def test_clipped_relus_become_relu_with_max_value(opset):
    routes = ("fx", "script", "trace", "onnx") if opset is None else ("onnx",)
    graphs = import_all(randomize(ClippedReLUs()), (2, 5, 5), routes=routes, opset=opset)
    for route, graph in graphs.items():
        caps = [n.attrs.get("max_value") for n in ops_of(graph, "relu")]
        assert caps == [6.0, 4.0, 6.0, 3.0, 2.5, 2.0, None], route


@pytest.mark.parametrize("layer, pattern", [
    (nn.Hardtanh(), "clips to [-1.0, 1.0]"),
    (Lambda(lambda x: torch.clamp(x, -1, 1)), "clips to [-1, 1]"),
    (Lambda(lambda x: x.clamp(max=3)), "clips to [-inf, 3]"),
    (Lambda(lambda x: x.clamp(min=0.5)), "clips to [0.5, inf]"),
])
def test_clamps_not_starting_at_zero_are_refused(layer, pattern):
    message = refused(nn.Sequential(nn.Conv2d(1, 2, 3), layer, nn.Flatten()), (1, 5, 5), pattern,
                      "only a lower bound of 0")
    assert "Hardtanh" in message or "clamp" in message


def test_onnx_clip_forms():
    helper = onnx.helper
    x = torch.randn(3, 2, 4, 4)
    low, high = np.array(0, np.float32), np.array(6, np.float32)
    for nodes, initializers, cap in [
        ([helper.make_node("Clip", ["x", "lo", "hi"], ["y"])], {"lo": low, "hi": high}, 6.0),
        ([helper.make_node("Clip", ["x", "lo"], ["y"])], {"lo": low}, None),
        ([helper.make_node("Clip", ["x", "lo", ""], ["y"])], {"lo": low}, None),
    ]:
        graph, y = onnx_run(onnx_model(nodes, initializers, (2, 4, 4), (2, 4, 4)), x)
        assert graph.nodes[1].attrs.get("max_value") == cap
        torch.testing.assert_close(y, torch.clamp(x, 0, cap))
    graph, y = onnx_run(onnx_model([helper.make_node("Clip", ["x"], ["y"], min=0.0, max=2.0)], {}, (2, 4, 4),
                                   (2, 4, 4), opset=9), x)
    torch.testing.assert_close(y, torch.clamp(x, 0, 2))
    onnx_refused(onnx_model([helper.make_node("Clip", ["x", "lo", "hi"], ["y"], name="clip")],
                            {"lo": np.array(-1, np.float32), "hi": high}, (2, 4, 4), (2, 4, 4)),
                 "clip (Clip)", "clips to [-1.0, 6.0]")
    onnx_refused(onnx_model([helper.make_node("Clip", ["x", "", "hi"], ["y"], name="clip")], {"hi": high},
                            (2, 4, 4), (2, 4, 4)), "clip (Clip)", "clips to [-inf, 6.0]")


# ------------------------------------------------------------------ grouped and depthwise convolutions

class Grouped(nn.Module):
    def __init__(self):
        super().__init__()
        self.grouped = nn.Conv2d(4, 6, 3, padding=1, groups=2)
        self.depthwise = nn.Conv2d(6, 6, 3, stride=2, padding=1, groups=6, bias=False)
        self.multiplier = nn.Conv2d(6, 12, 3, groups=6)  # depthwise with channel multiplier 2
        self.fc = nn.Linear(12, 3)

    def forward(self, x):
        x = F.relu(self.grouped(x))
        x = F.relu(self.depthwise(x))
        x = F.relu(self.multiplier(x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def test_grouped_and_depthwise_convolutions_all_routes():
    graphs = import_all(randomize(Grouped()), (4, 8, 8), routes=("fx", "script", "trace", "onnx"))
    for route, graph in graphs.items():
        convs = ops_of(graph, "conv2d")
        assert [c.attrs.get("groups", 1) for c in convs] == [2, 6, 6], route
        assert [tuple(c.params["weight"].shape) for c in convs] == [(6, 2, 3, 3), (6, 1, 3, 3), (12, 1, 3, 3)]


# ------------------------------------------------------------------ concatenation

class Concats(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(2, 3, 3, padding=1), nn.Conv2d(2, 2, 1), nn.Conv2d(5, 4, 3, padding=1)
        self.fc1, self.fc2 = nn.Linear(9 * 16, 5), nn.Linear(9 * 16, 4)
        self.fc = nn.Linear(9, 3)

    def forward(self, x):
        a, b = F.relu(self.a(x)), F.relu(self.b(x))
        y = torch.cat([a, b], dim=1)
        z = torch.cat((y, F.relu(self.c(y))), 1)
        z = F.avg_pool2d(z, 2)
        flat = torch.flatten(z, 1)
        h = torch.concat([F.relu(self.fc1(flat)), F.relu(self.fc2(flat))], 1)  # flat (N, F) tensors
        return self.fc(h)


def test_concatenation_along_channels_all_routes():
    graphs = import_all(randomize(Concats()), (2, 8, 8), routes=("fx", "script", "trace", "onnx"))
    for route, graph in graphs.items():
        assert [n.shape for n in ops_of(graph, "concat")] == [(5, 8, 8), (9, 8, 8), (9,)], route


@pytest.mark.parametrize("forward, pattern", [
    (lambda x: torch.cat([x, F.relu(x)], dim=2), "dim=2"),
    (lambda x: torch.cat([x, F.relu(x)], -1), "dim=-1"),
    (lambda x: torch.stack([x, F.relu(x)], 1), "torch.stack"),
])
def test_concatenation_along_other_axes_is_refused(forward, pattern):
    refused(nn.Sequential(nn.Conv2d(1, 2, 3), Lambda(forward), nn.Flatten()), (1, 5, 5), pattern)


def test_onnx_concat_refusals_and_shape_concat():
    helper = onnx.helper
    onnx_refused(onnx_model([helper.make_node("Concat", ["x", "x"], ["y"], axis=2, name="cat")], {}, (2, 4, 4),
                            (2, 8, 4)), "cat (Concat)", "axis 2")
    onnx_refused(onnx_model([helper.make_node("Concat", ["x", "c"], ["y"], axis=1, name="cat")],
                            {"c": np.zeros((1, 1, 4, 4), np.float32)}, (2, 4, 4), (3, 4, 4)),
                 "cat (Concat)", "constant")
    # the shape computation of x.view(x.size(0), -1) concatenates constants: still evaluated on the way
    module = randomize(nn.Sequential(nn.Conv2d(2, 3, 3), Lambda(lambda x: x.view(x.size(0), -1)), nn.Linear(12, 2)))
    graph = import_all(module, (2, 4, 4), routes=("onnx",))["onnx"]
    assert [n.op for n in graph.nodes] == ["input", "conv2d", "flatten", "dense"]


# ------------------------------------------------------------------ adaptive average pooling

@pytest.mark.parametrize("output_size, size, op, attrs", [
    (2, (8, 8), "avgpool", {"kernel": [4, 4], "stride": [4, 4]}),
    ((3, None), (6, 5), "avgpool", {"kernel": [2, 1], "stride": [2, 1]}),
    ((2, 3), (6, 6), "avgpool", {"kernel": [3, 2], "stride": [3, 2]}),
    (3, (8, 8), "adaptive_avgpool", {"output_size": [3, 3]}),
    ((7, 7), (1, 1), "adaptive_avgpool", {"output_size": [7, 7]}),  # VGG's pool on a 32×32 input
    ((1, 1), (5, 5), "global_avgpool", {}),
])
def test_adaptive_avgpool(output_size, size, op, attrs):
    pool = nn.AdaptiveAvgPool2d(output_size)
    body = nn.Sequential(nn.Conv2d(2, 3, 1), nn.ReLU(), pool)
    module = randomize(Net(body, body(torch.zeros(1, 2, *size)).numel()))
    routes = ("fx", "trace")
    if not isinstance(output_size, tuple) or None not in output_size:  # TorchScript and the exporter can't
        routes += ("script",) + (("onnx",) if op != "adaptive_avgpool" else ())  # the exporter can't do uneven
    for route, graph in import_all(module, (2, *size), routes=routes).items():
        (node,) = ops_of(graph, op)
        assert node.attrs == attrs, route


def test_adaptive_avgpool_to_the_input_size_adds_nothing():
    module = randomize(Net(nn.Sequential(nn.Conv2d(2, 3, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(4)), 48))
    graph = import_all(module, (2, 4, 4), routes=("fx",))["fx"]
    assert [n.op for n in graph.nodes] == ["input", "conv2d", "relu", "flatten", "dense"]


# ------------------------------------------------------------------ padding and padded average pooling

class Pads(nn.Module):
    def __init__(self):
        super().__init__()
        self.zero = nn.ZeroPad2d((1, 2, 0, 3))    # (left, right, top, bottom)
        self.constant = nn.ConstantPad2d(1, 0.0)
        self.conv = nn.Conv2d(2, 3, 3)
        self.pool = nn.AvgPool2d(3, 2, padding=1)  # count_include_pad=True: a pad node, then the pool
        self.fc = nn.Linear(3 * 4 * 4, 3)

    def forward(self, x):
        x = self.constant(self.zero(x))
        x = F.relu(self.conv(x))
        x = F.pad(x, (1, 1))
        x = F.pad(x, (0, 1, 2, 0), mode="constant", value=0.0)
        x = F.avg_pool2d(self.pool(x), 2, padding=1, ceil_mode=True)  # ceil mode that changes nothing
        return self.fc(x.flatten(1))


@pytest.mark.parametrize("opset", [None, 9])  # Pad with pads as an input (opset ≥ 11) and as attributes
def test_zero_padding_and_padded_average_pooling(opset):
    routes = ("fx", "script", "trace", "onnx") if opset is None else ("onnx",)
    graphs = import_all(randomize(Pads()), (2, 7, 6), routes=routes, opset=opset)
    for route, graph in graphs.items():
        pads = [n.attrs["padding"] for n in ops_of(graph, "pad")]  # (top, bottom, left, right)
        # the pools' bottom and right padding that no window reaches is left out, unless the exporter
        # wrote it as a Pad node of its own (opset 9)
        pool_pads = [[1, 1, 1, 1], [1, 1, 1, 1]] if opset == 9 else [[1, 0, 1, 0], [1, 1, 1, 1]]
        assert pads == [[0, 3, 1, 2], [1, 1, 1, 1], [0, 0, 1, 1], [2, 0, 0, 1]] + pool_pads, route
        assert [n.inputs[0] for n in ops_of(graph, "avgpool")] == [n.name for n in ops_of(graph, "pad")[-2:]], route


@pytest.mark.parametrize("layer, pattern", [
    (nn.ConstantPad2d(1, 0.5), "value 0.5"),
    (Lambda(lambda x: F.pad(x, (1, 1, 1, 1), mode="reflect")), "mode='reflect'"),
    (Lambda(lambda x: F.pad(x, (1, 1, 1, 1, 1, 0))), "last two axes"),
    (Lambda(lambda x: F.pad(x, (-1, 0, 0, 0))), "cropping"),
    (nn.ReflectionPad2d(1), "only zero padding"),
    (nn.AvgPool2d(3, 2, padding=1, count_include_pad=False), "count_include_pad"),
    (nn.AvgPool2d(2, ceil_mode=True), "ceil_mode"),
])
def test_padding_refusals(layer, pattern):
    refused(nn.Sequential(nn.Conv2d(1, 2, 1), layer, nn.Flatten()), (1, 5, 5), pattern)


def test_onnx_pad_and_average_pool_refusals():
    helper = onnx.helper
    pads = np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)
    onnx_refused(onnx_model([helper.make_node("Pad", ["x", "p"], ["y"], mode="reflect", name="pad")], {"p": pads},
                            (2, 4, 4), (2, 6, 6)), "pad (Pad)", "mode='reflect'")
    onnx_refused(onnx_model([helper.make_node("Pad", ["x", "p", "v"], ["y"], name="pad")],
                            {"p": pads, "v": np.array(1.0, np.float32)}, (2, 4, 4), (2, 6, 6)),
                 "pad (Pad)", "value 1.0")
    onnx_refused(onnx_model([helper.make_node("Pad", ["x", "p"], ["y"], name="pad")],
                            {"p": np.array([0, 1, 0, 0, 0, 0, 0, 0], np.int64)}, (2, 4, 4), (3, 4, 4)),
                 "pad (Pad)", "height and width")
    onnx_refused(onnx_model([helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                                              name="pool")], {}, (2, 4, 4), (2, 4, 4)), "pool (AveragePool)",
                 "count_include_pad=0")
    x = torch.rand(2, 2, 4, 4)
    node = helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], pads=[0, 1, 2, 1], count_include_pad=1)
    graph, y = onnx_run(onnx_model([node], {}, (2, 4, 4), (2, 4, 4)), x)  # pads [top, left, bottom, right]
    assert [n.op for n in graph.nodes] == ["input", "pad", "avgpool"]
    torch.testing.assert_close(y, F.avg_pool2d(F.pad(x, (1, 1, 0, 2)), 3, 1))


# ------------------------------------------------------------------ flatten and reshape forms

@pytest.mark.parametrize("flatten", [
    lambda x: torch.flatten(x, 1),
    lambda x: x.flatten(1),
    lambda x: x.view(x.size(0), -1),
    lambda x: x.reshape(x.shape[0], -1),
    lambda x: x.view(-1, 3 * 4 * 4),
    lambda x: x.permute(0, 1, 2, 3).flatten(1),  # an identity permutation
    nn.Flatten(),
], ids=["torch.flatten", "x.flatten", "view(size(0))", "reshape(shape[0])", "view(-1, CHW)", "permute-identity",
        "nn.Flatten"])
def test_flatten_forms(flatten):
    layer = flatten if isinstance(flatten, nn.Module) else Lambda(flatten)
    module = randomize(nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), layer, nn.Linear(48, 2)))
    for graph in import_all(module, (2, 6, 6)).values():
        assert [n.op for n in graph.nodes] == ["input", "conv2d", "relu", "flatten", "dense"]


def test_flatten_forms_through_torchscript():
    class Views(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(2, 3, 3), nn.Linear(48, 2)

        def forward(self, x):
            x = F.relu(self.conv(x))
            return self.fc(x.reshape(x.shape[0], -1))

    import_all(randomize(Views()), (2, 6, 6), routes=("script", "trace"))


class Permuted(nn.Module):
    """Channels-last flattening, as a network ported from Keras might do it."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(2, 3, 3), nn.Linear(48, 2)

    def forward(self, x):
        x = self.conv(x)
        return self.fc(x.permute(0, 2, 3, 1).reshape(x.size(0), -1))


class Transposed(Permuted):
    def forward(self, x):
        return self.fc(self.conv(x).transpose(2, 3).flatten(1))


@pytest.mark.parametrize("route", ["fx", "script", "trace"])
@pytest.mark.parametrize("cls, shown", [(Permuted, "permute"), (Transposed, "transpose")])
def test_permute_and_transpose_are_refused(cls, shown, route):
    refused(randomize(cls()), (2, 6, 6), shown, "channels-first", route=route)


def test_onnx_transpose_is_refused():
    module = randomize(nn.Sequential(nn.Conv2d(2, 3, 3), Lambda(lambda x: x.permute(0, 2, 3, 1).flatten(1)),
                                     nn.Linear(48, 2)))
    onnx_refused(onnx_of(module, (2, 6, 6)), "(Transpose)", "channels-first")


# ------------------------------------------------------------------ activations an IF neuron cannot represent

ACTIVATION_MODULES = [nn.LeakyReLU(), nn.PReLU(), nn.ELU(), nn.Hardswish(), nn.SiLU(), nn.GELU(), nn.Sigmoid(),
                      nn.Tanh(), nn.Mish()]


@pytest.mark.parametrize("route", ["fx", "script", "trace"])
@pytest.mark.parametrize("activation", ACTIVATION_MODULES, ids=lambda m: type(m).__name__)
def test_activation_modules_are_refused_with_the_reason(activation, route):
    name = type(activation).__name__
    module = nn.Sequential(nn.Conv2d(1, 2, 3), activation, nn.Flatten(), nn.Linear(18, 2))
    refused(module, (1, 5, 5), f"layer '1' ({name})", "cannot be converted", "IF neuron", "non-negative", "ReLU6",
            route=route)


@pytest.mark.parametrize("function, shown", [
    (F.leaky_relu, "F.leaky_relu"), (F.elu, "F.elu"), (F.hardswish, "F.hardswish"), (F.silu, "F.silu"),
    (F.gelu, "F.gelu"), (F.mish, "F.mish"), (torch.sigmoid, "torch.sigmoid"), (torch.tanh, "torch.tanh"),
    (lambda x: x.sigmoid(), "Tensor.sigmoid"),
], ids=lambda f: getattr(f, "__name__", None))
def test_activation_functions_are_refused_with_the_reason(function, shown):
    module = nn.Sequential(nn.Conv2d(1, 2, 3), Lambda(function), nn.Flatten(), nn.Linear(18, 2))
    refused(module, (1, 5, 5), shown, "cannot be converted", "IF neuron")


@pytest.mark.parametrize("activation", ACTIVATION_MODULES, ids=lambda m: type(m).__name__)
def test_onnx_activations_are_refused_with_the_reason(activation):
    model = onnx_of(nn.Sequential(nn.Conv2d(1, 2, 3), activation).eval(), (1, 5, 5))
    op = next(n.op_type for n in model.graph.node if n.op_type != "Conv")  # SiLU: Sigmoid (·Mul), Mish: Softplus…
    onnx_refused(model, f"({op})", "cannot be converted", "IF neuron")


# ------------------------------------------------------------------ torchvision layouts

class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet18(nn.Module):
    """torchvision.models.resnet18(num_classes=10), module for module (``width`` 64 is torchvision's)."""

    def __init__(self, num_classes=10, width=64):
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(width, 2)
        self.layer2 = self._make_layer(2 * width, 2, stride=2)
        self.layer3 = self._make_layer(4 * width, 2, stride=2)
        self.layer4 = self._make_layer(8 * width, 2, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(8 * width, num_classes)

    def _make_layer(self, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.fc(x)


class VGG11(nn.Module):
    """torchvision.models.vgg11 layout ('A': 64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M), widths
    divided by ``shrink`` and a smaller classifier."""

    def __init__(self, num_classes=10, shrink=8, hidden=64):
        super().__init__()
        layers, channels = [], 3
        for v in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"):
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(channels, v // shrink, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                channels = v // shrink
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(channels * 7 * 7, hidden), nn.ReLU(True), nn.Dropout(p=0.5),
            nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(p=0.5),
            nn.Linear(hidden, num_classes))

    def forward(self, x):
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


class ConvBNReLU6(nn.Sequential):
    """torchvision's Conv2dNormActivation(…, activation_layer=nn.ReLU6)."""

    def __init__(self, cin, cout, kernel=3, stride=1, groups=1):
        super().__init__(nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    def __init__(self, inp, oup, stride, expand_ratio):
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers = [ConvBNReLU6(inp, hidden, kernel=1)] if expand_ratio != 1 else []
        layers += [ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden),  # depthwise
                   nn.Conv2d(hidden, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2Blocks(nn.Module):
    """The MobileNetV2 layout (stem, inverted residuals t/c/n/s, 1×1 head, pooling, dropout, fc), narrowed."""

    def __init__(self, num_classes=10):
        super().__init__()
        setting = [(1, 8, 1, 1), (6, 12, 2, 2), (6, 16, 2, 2)]  # t, c, n, s
        layers, channels = [ConvBNReLU6(3, 16, stride=2)], 16
        for t, c, n, s in setting:
            for i in range(n):
                layers.append(InvertedResidual(channels, c, s if i == 0 else 1, t))
                channels = c
        layers.append(ConvBNReLU6(channels, 64, kernel=1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(p=0.2), nn.Linear(64, num_classes))

    def forward(self, x):
        x = self.features(x)
        x = nn.functional.adaptive_avg_pool2d(x, (1, 1))
        x = torch.flatten(x, 1)
        return self.classifier(x)


class DenseLayer(nn.Module):
    def __init__(self, cin, growth, bn_size=2):
        super().__init__()
        self.norm1, self.relu1 = nn.BatchNorm2d(cin), nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(cin, bn_size * growth, 1, bias=False)
        self.norm2, self.relu2 = nn.BatchNorm2d(bn_size * growth), nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)

    def forward(self, features):
        out = self.conv1(self.relu1(self.norm1(features)))
        return self.conv2(self.relu2(self.norm2(out)))


class DenseBlock(nn.Module):
    def __init__(self, layers, cin, growth):
        super().__init__()
        self.layers = nn.ModuleList(DenseLayer(cin + i * growth, growth) for i in range(layers))

    def forward(self, x):
        features = [x]
        for layer in self.layers:
            features.append(layer(torch.cat(features, 1)))
        return torch.cat(features, 1)


class SmallDenseNet(nn.Module):
    """The DenseNet layout (stem conv/BN/ReLU/max pool, dense blocks joined by transitions, final BN,
    F.relu, adaptive pooling, classifier), small."""

    def __init__(self, num_classes=10, growth=4):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 7, 2, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
                                  nn.MaxPool2d(3, 2, 1))
        self.block1 = DenseBlock(3, 8, growth)
        c = 8 + 3 * growth
        self.transition = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.Conv2d(c, c // 2, 1, bias=False),
                                        nn.AvgPool2d(2, 2))
        self.block2 = DenseBlock(3, c // 2, growth)
        c = c // 2 + 3 * growth
        self.norm = nn.BatchNorm2d(c)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x):
        features = self.block2(self.transition(self.block1(self.stem(x))))
        out = F.relu(self.norm(features), inplace=True)
        out = F.adaptive_avg_pool2d(out, (1, 1))
        return self.classifier(torch.flatten(out, 1))


def test_resnet18_layout():
    graphs = import_all(randomize(ResNet18(), seed=2), (3, 32, 32), routes=("fx", "onnx"))
    for route, graph in graphs.items():
        (pool,) = ops_of(graph, "maxpool")
        assert pool.attrs == {"kernel": [3, 3], "stride": [2, 2], "padding": [1, 1, 1, 1]} and pool.shape == (64, 8, 8)
        assert len(ops_of(graph, "add")) == 8 and len(ops_of(graph, "conv2d")) == 20, route
        assert graph.node(graph.output).shape == (10,)


def test_vgg11_layout():
    graph = import_all(randomize(VGG11(), seed=3), (3, 32, 32), routes=("fx", "script"))["fx"]
    assert len(ops_of(graph, "maxpool")) == 5
    (pool,) = ops_of(graph, "adaptive_avgpool")
    assert pool.attrs == {"output_size": [7, 7]} and pool.shape == (64, 7, 7)


def test_mobilenet_v2_blocks_layout(tmp_path):
    module = randomize(MobileNetV2Blocks(), seed=4)
    graphs = import_all(module, (3, 32, 32), routes=("fx", "onnx"))
    path = tmp_path / "mobilenet.pt"
    torch.jit.script(module).save(str(path))
    graphs["torchscript file"] = load_model(path, input_shape=(3, 32, 32))
    assert_reproduces(graphs["torchscript file"], module, (3, 32, 32))
    for route, graph in graphs.items():
        depthwise = [c for c in ops_of(graph, "conv2d") if c.attrs.get("groups", 1) > 1]
        assert len(depthwise) == 5 and all(c.params["weight"].shape[1] == 1 for c in depthwise), route
        assert {n.attrs.get("max_value") for n in ops_of(graph, "relu")} == {6.0}, route
        assert len(ops_of(graph, "add")) == 2, route


def test_densenet_layout():
    graphs = import_all(randomize(SmallDenseNet(), seed=5), (3, 32, 32), routes=("fx", "onnx"))
    for route, graph in graphs.items():
        assert len(ops_of(graph, "concat")) == 6, route  # per block: before layers 2 and 3, and at its end
        assert ops_of(graph, "maxpool") and ops_of(graph, "avgpool"), route
