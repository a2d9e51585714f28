"""Tests for spkeras.metrics: fan-out (Eq. 14), CNN operations (Eq. 13) and synaptic operations,
each against brute-force counting of connections with one-hot inputs."""

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import helpers  # noqa: E402
from helpers import one_thread  # noqa: E402,F401  (autouse fixture)

from spkeras.ir import Graph, Node  # noqa: E402
from spkeras.methods import get_method  # noqa: E402
from spkeras.methods.framework import convert  # noqa: E402
from spkeras.metrics import cnn_operations, fan_out, source_layers  # noqa: E402
from spkeras.passes import canonicalise  # noqa: E402
from spkeras.simulate import simulate  # noqa: E402

T = 12


# ------------------------------------------------------------------ brute force

def connect(node: Node, x: torch.Tensor) -> torch.Tensor:
    """``node`` applied to a batch of one-hot inputs with every weight 1 and no bias (one input of an
    add carries ``x``, the others are zero). Output units that are nonzero are connected."""
    if node.op == "conv2d":
        top, bottom, left, right = node.attrs["padding"]
        ones = torch.ones_like(node.params["weight"], dtype=torch.float64)
        return F.conv2d(F.pad(x, (left, right, top, bottom)), ones, stride=tuple(node.attrs["stride"]))
    if node.op == "dense":
        return x @ torch.ones_like(node.params["weight"], dtype=torch.float64).T
    if node.op == "avgpool":
        return F.avg_pool2d(x, tuple(node.attrs["kernel"]), tuple(node.attrs["stride"]))
    if node.op == "global_avgpool":
        return x.sum(dim=(2, 3))
    if node.op == "flatten":
        return x.reshape(x.shape[0], -1)
    if node.op == "add":
        return x
    raise AssertionError(node.op)


def paths(graph: Graph, name: str):
    """Every chain of stateless nodes from ``name`` to a spike node (a neuron feeding two layers,
    e.g. a conv and a residual add, has one chain through each)."""
    for consumer in graph.consumers(name):
        if consumer.op == "spike":
            yield []
            continue
        for rest in paths(graph, consumer.name):
            yield [consumer] + rest


def brute_fan_out(graph: Graph) -> dict[str, torch.Tensor]:
    """For every neuron of every source layer: the number of units of downstream spiking layers it
    reaches, summed over the paths it takes (one one-hot input per neuron)."""
    result = {}
    sources = [graph.input] + [n for n in graph.nodes if n.op == "spike"]
    for source in sources:
        count = 1
        for d in source.shape:
            count *= d
        eye = torch.eye(count, dtype=torch.float64).view(count, *source.shape)
        total = torch.zeros(count, dtype=torch.float64)
        for chain in paths(graph, source.name):
            value = eye
            for node in chain:
                value = connect(node, value)
            total += (value.reshape(count, -1) != 0).sum(1).double()
        result[source.name] = total.view(source.shape)
    return result


def brute_fan_in(node: Node, input_shape) -> torch.Tensor:
    """Number of input units connected to each output unit of one layer."""
    count = 1
    for d in input_shape:
        count *= d
    eye = torch.eye(count, dtype=torch.float64).view(count, *input_shape)
    connected = connect(node, eye).reshape(count, -1) != 0   # (inputs, outputs)
    return connected.sum(0).double()


# ------------------------------------------------------------------ networks

def spiking(kind, preset="ecc", **options):
    builders = {
        "chain": lambda: helpers.chain_cnn(),                                       # asymmetric stride-2, 'same'
        "valid": lambda: helpers.chain_cnn(size=17, conv2_padding=(0, 0, 0, 0)),    # 'valid' second conv
        "odd": lambda: helpers.chain_cnn(size=12, conv2_padding=(0, 2, 1, 0)),      # odd sizes, lopsided pads
        "residual": lambda: helpers.residual_cnn(),
        "residual2": lambda: helpers.residual_cnn(branch=2),
        "mlp": lambda: helpers.mlp(),
    }
    cnn = builders[kind]()
    net = convert(cnn, helpers.images(cnn, 24, seed=2), get_method(preset, **options), T)
    return cnn, net


NETS = [
    ("chain", {}), ("chain", {"spiking_pools": False}), ("valid", {}), ("odd", {"spiking_pools": False}),
    ("residual", {}), ("residual", {"spiking_pools": False}), ("residual2", {}), ("mlp", {}),
]


# ------------------------------------------------------------------ 1. fan-out

@pytest.mark.parametrize("kind,options", NETS, ids=[f"{k}-{o}" for k, o in NETS])
def test_fan_out_equals_brute_force(kind, options):
    _, net = spiking(kind, **options)
    library = fan_out(net.graph)
    expected = brute_fan_out(net.graph)
    assert set(library) == set(expected) == set(source_layers(net.graph))
    for name, value in expected.items():
        assert tuple(library[name].shape) == tuple(net.graph.node(name).shape)
        assert torch.equal(library[name].double(), value), f"fan-out of {name} differs"
    assert float(library[net.graph.output].sum()) == 0.0  # the output layer feeds nothing
    # borders matter: not every neuron of a conv's input has the same fan-out
    if kind in ("chain", "valid", "odd"):
        assert len(torch.unique(library["input"])) > 1


def test_fan_out_by_hand():
    """A 1×3×3 input, a 2×2 'valid' conv with 2 output channels, then a dense layer of 3."""
    weight = torch.randn((2, 1, 2, 2), dtype=torch.float64)
    nodes = [
        Node("input", "input", shape=(1, 3, 3)),
        Node("conv", "conv2d", ["input"], {"weight": weight}, {"stride": (1, 1), "padding": (0, 0, 0, 0)}, (2, 2, 2)),
        Node("s1", "spike", ["conv"], attrs={"threshold": 1.0, "reset": "subtract", "v_init": 0.0, "step_current": 0.0},
             shape=(2, 2, 2)),
        Node("flat", "flatten", ["s1"], shape=(8,)),
        Node("fc", "dense", ["flat"], {"weight": torch.randn((3, 8), dtype=torch.float64)}, shape=(3,)),
        Node("s2", "spike", ["fc"], attrs={"threshold": 1.0, "reset": "subtract", "v_init": 0.0, "step_current": 0.0},
             shape=(3,)),
    ]
    result = fan_out(Graph(nodes, "s2"))
    # pixel (i, j) lies under 1, 2 or 4 windows of the 2×2 output grid, times 2 output channels
    assert torch.equal(result["input"].double(), torch.tensor([[[2, 4, 2], [4, 8, 4], [2, 4, 2]]], dtype=torch.float64))
    assert torch.equal(result["s1"].double(), torch.full((2, 2, 2), 3.0, dtype=torch.float64))
    assert torch.equal(result["s2"].double(), torch.zeros(3, dtype=torch.float64))


# ------------------------------------------------------------------ 2. CNN operations (Eq. 13)

COUNTED = ("conv2d", "dense", "avgpool", "global_avgpool")


@pytest.mark.parametrize("kind", ["chain", "valid", "odd", "residual", "residual2", "mlp"])
def test_cnn_operations_equal_brute_force(kind):
    cnn, net = spiking(kind)
    graph = canonicalise(cnn)
    eq13, macs, per_layer = 0.0, 0.0, {}
    for node in graph.nodes:
        if node.op not in COUNTED:
            continue
        f_in = brute_fan_in(node, graph.node(node.inputs[0]).shape)
        assert f_in.numel() == torch.Size(node.shape).numel()
        per_layer[node.name] = float(f_in.sum())
        macs += float(f_in.sum())
        eq13 += float((2 * f_in + 1).sum())      # Σ (2 f_in + 1) M, with each unit's own f_in
    ops = cnn_operations(graph)
    assert ops.per_layer == per_layer
    assert ops.macs == macs
    assert ops.eq13 == eq13
    assert cnn_operations(net.cnn).eq13 == eq13   # the CNN kept in the converted network


def test_cnn_operations_by_hand():
    """dense 3→2: 2·(2·3+1) = 14; conv 1×3×3 → 2×2 kernel 'valid' → 1×2×2: 4·(2·4+1) = 36."""
    dense = Graph([Node("input", "input", shape=(3,)),
                   Node("fc", "dense", ["input"], {"weight": torch.ones((2, 3)), "bias": torch.ones(2)}, shape=(2,))],
                  "fc")
    assert cnn_operations(dense).eq13 == 14.0
    assert cnn_operations(dense).macs == 6.0
    conv = Graph([Node("input", "input", shape=(1, 3, 3)),
                  Node("c", "conv2d", ["input"], {"weight": torch.ones((1, 1, 2, 2))},
                       {"stride": (1, 1), "padding": (0, 0, 0, 0)}, (1, 2, 2))], "c")
    assert cnn_operations(conv).eq13 == 36.0
    # 'same' padding: the four corner outputs see 4 inputs, edges 6, the centre 9 → Σ f_in = 4·4 + 4·6 + 9 = 49
    same = Graph([Node("input", "input", shape=(1, 3, 3)),
                  Node("c", "conv2d", ["input"], {"weight": torch.ones((1, 1, 3, 3))},
                       {"stride": (1, 1), "padding": (1, 1, 1, 1)}, (1, 3, 3))], "c")
    assert cnn_operations(same).macs == 49.0
    assert cnn_operations(same).eq13 == 2 * 49.0 + 9


# ------------------------------------------------------------------ 3. synaptic operations

@pytest.mark.parametrize("kind,options", [
    ("chain", {}), ("residual", {"spiking_pools": False}), ("residual2", {}), ("mlp", {"readout": "potential"}),
    ("chain", {"encoding": "analog"}), ("valid", {"encoding": "poisson"}),
])
def test_synaptic_operations_are_spikes_times_fan_out(kind, options):
    cnn, net = spiking(kind, **options)
    images = helpers.images(cnn, 5, seed=3)
    record = helpers.simulate_counting(net, images, T, batch_size=2, chunk=5)
    fanouts = brute_fan_out(net.graph)
    encoding = net.method.encoding
    for index, name in enumerate(record.layers):
        counts = record.neuron_counts[name].double()
        if name == net.graph.input.name:
            if encoding == "analog":
                assert float(record.synops[-1, index]) == 0.0  # analog input is not spikes
                continue
            if encoding == "algorithm1":
                counts = helpers.algorithm1_counts(images, net.method.kappa0, T)
                assert torch.equal(record.neuron_counts[name].double(), counts)
        expected = float((counts * fanouts[name].unsqueeze(0)).sum())   # Σ images Σ neurons count × fan-out
        assert float(record.synops[-1, index]) == expected, f"synops of {name}"
        assert float(record.spikes[-1, index]) == float(counts.sum())
    assert float(record.synops[-1].sum()) > 0
    # cumulative over time: the first t steps of a longer run are a run of t steps
    short = simulate(net, images, 5, batch_size=5, chunk=2)
    assert torch.equal(short.synops[-1], record.synops[4])
    assert bool((record.synops[1:] >= record.synops[:-1]).all())
