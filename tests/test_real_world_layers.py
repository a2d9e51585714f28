"""Max pooling (over currents, or as a spike gate), clipped ReLU, grouped and depthwise convolutions,
concatenation, zero padding, per-channel affine maps and uneven adaptive pooling through the
whole pipeline: canonical passes, conversion, the simulator against the naive reference, the
closed form, exact fan-out against brute force, and NIR export."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import helpers  # noqa: E402
from helpers import one_thread  # noqa: E402,F401  (autouse fixture)
from test_simulation import T, assert_same_as_reference  # noqa: E402

from spkeras.calibrate import calibrate  # noqa: E402
from spkeras.closed_form import closed_form  # noqa: E402
from spkeras.errors import ModelError  # noqa: E402
from spkeras.ir import Graph, Node  # noqa: E402
from spkeras.methods import get_method  # noqa: E402
from spkeras.methods.framework import convert  # noqa: E402
from spkeras.metrics import fan_in, fan_out  # noqa: E402
from spkeras.ops import run_graph  # noqa: E402
from spkeras.passes import canonicalise  # noqa: E402
from spkeras.simulate import simulate  # noqa: E402

BUILDERS = {"maxpool": helpers.maxpool_cnn, "grouped_concat": helpers.grouped_concat_cnn}
_NETS = {}


def converted(kind, preset, timesteps=T, **options):
    """A converted network (cached) and six test images that are not its calibration images."""
    key = (kind, preset, timesteps, tuple(sorted(options.items())))
    if key not in _NETS:
        cnn = BUILDERS[kind]()
        net = convert(cnn, helpers.images(cnn, 48, seed=11), get_method(preset, **options), timesteps)
        _NETS[key] = (net, helpers.images(cnn, 6, seed=12))
    return _NETS[key]


CONFIGS = [
    ("ecc", {}),
    ("ecc", {"maxpool": "current"}),
    ("ecc", {"maxpool": "gate"}),
    ("rueckauer2017", {"maxpool": "gate"}),
    ("rueckauer2017", {"encoding": "poisson", "maxpool": "current", "tre": "initial"}),
    ("ecc", {"spiking_pools": False, "reset": "zero", "readout": "potential"}),
    ("ecc+", {"potential_share": 0.5}),
    ("ecc+", {"potential_share": 0.5, "maxpool": "gate"}),
]


@pytest.mark.parametrize("preset,options", CONFIGS, ids=[f"{p}-{'-'.join(f'{k}={v}' for k, v in o.items())}" for p, o in CONFIGS])
@pytest.mark.parametrize("kind", list(BUILDERS))
def test_simulation_matches_naive_reference(kind, preset, options):
    net, images = converted(kind, preset, **options)
    gates = [n for n in net.graph.nodes_of("maxpool") if n.attrs["gate"]]
    if kind == "maxpool":
        assert len(gates) == (2 if net.method.maxpool == "gate" else 0)
    assert_same_as_reference(net, images, runs=[(3, 4), (8, 6)])


def test_event_driven_grouped_convolutions_match_reference(monkeypatch):
    import spkeras.event_conv as event_conv

    net, images = converted("grouped_concat", "ecc")
    for bar, value in (("DENSITY_WORTH_SCATTERING", 1.01), ("MIN_OUTPUT_CHANNELS", 1), ("MIN_WEIGHTS_PER_OUTPUT", 1)):
        monkeypatch.setattr(event_conv, bar, value)
    record = assert_same_as_reference(net, images, runs=[(3, 4)])
    assert record.event_conv_share == 1.0


def test_the_max_pool_modes_rewrite_the_graph_as_documented():
    current, _ = converted("maxpool", "ecc")
    gate, _ = converted("maxpool", "ecc", maxpool="gate")
    # accumulated (default) and current: the pool reads the conv, and one neuron per pooled unit follows it
    assert current.graph.node("pool1").inputs == ["conv1"] and current.graph.consumers("pool1")[0].op == "spike"
    assert "relu1" not in {n.name for n in current.graph.nodes}
    assert current.graph.node("pool1").attrs["accumulate"] is True
    per_step, _ = converted("maxpool", "ecc", maxpool="current")
    assert per_step.graph.node("pool1").attrs == {**current.graph.node("pool1").attrs, "accumulate": False}
    # gate: the neurons stay below the pool, which passes their spikes
    assert gate.graph.node("pool1").inputs == ["relu1"] and gate.graph.node("relu1").op == "spike"
    assert gate.graph.node("pool1").attrs["gate"] is True


def long_run_error(cnn, method, site, cnn_site, steps):
    """Largest |rate·λ − CNN activation| of one layer after a long simulation; λ from the same
    images, so that no activation exceeds its λ (only a clipped ReLU's cap limits them)."""
    images = helpers.images(cnn, 8, seed=12)
    net = convert(cnn, images, method, steps)
    counts = helpers.simulate_counting(net, images, steps).neuron_counts[site]
    activations = {}
    run_graph(canonicalise(cnn), images, observe=lambda n, v: activations.setdefault(n.name, v))
    return net, counts, activations[cnn_site], (counts.double() / steps * net.lambdas[site] - activations[cnn_site]).abs()


def test_clipped_relu_is_represented_by_the_neuron_saturating():
    """λ = c at ReLU(max_value=c) whose input exceeds c: a unit at the clip fires at (almost) every
    step, and a long simulation's rates × λ approach the CNN's clipped activations."""
    cap, steps = 0.5, 400
    cnn = helpers.maxpool_cnn(cap=cap)
    unclipped = calibrate(canonicalise(cnn), ["conv2"], helpers.images(cnn, 8, seed=12))["conv2"]
    assert unclipped > cap, "the clip is never active: the test proves nothing"
    net, counts, expected, error = long_run_error(cnn, get_method("rueckauer2017", statistic="max"), "pool2_relu",
                                                  "pool2", steps)
    assert net.lambdas["pool2_relu"] == cap and float(expected.max()) == cap
    assert float(error.max()) < 0.02 * cap
    assert float(counts[expected == cap].min()) >= 0.97 * steps
    gate = convert(cnn, helpers.images(cnn, 8, seed=12), get_method("rueckauer2017", maxpool="gate"), steps)
    assert gate.lambdas["relu2"] == cap


@pytest.mark.parametrize("mode", ["accumulated", "gate"])
def test_long_simulation_approaches_the_cnn_through_max_pools(mode):
    """Rates × λ of the first dense layer after two max pools tend to its CNN activations (not so
    with ``current``: the max of fluctuating currents exceeds the max of their means)."""
    method = get_method("rueckauer2017", maxpool=mode, statistic="max")
    errors = {steps: float(long_run_error(helpers.maxpool_cnn(), method, "relu3", "relu3", steps)[3].max())
              for steps in (100, 800)}
    assert errors[800] < (0.01 if mode == "accumulated" else 0.06) and errors[800] < errors[100]
    if mode == "accumulated":
        _, _, _, current = long_run_error(helpers.maxpool_cnn(), method.with_options(maxpool="current"), "relu3",
                                          "relu3", 800)
        assert float(current.max()) > 10 * errors[800]


@pytest.mark.parametrize("mode", ["accumulated", "current", "gate"])
def test_closed_form_at_large_t_gives_the_cnn_s_predictions(mode):
    cnn = helpers.maxpool_cnn()
    images = helpers.images(cnn, 16, seed=12)
    net = convert(cnn, images, get_method("rueckauer2017", maxpool=mode, statistic="max", readout="potential"), 8)
    record = closed_form(net, images, [20000])
    assert record.layers == [n.name for n in net.graph.nodes if n.op in ("input", "spike") or n.attrs.get("gate")]
    assert torch.equal(record.predictions[0], run_graph(cnn, images).argmax(1))


# ------------------------------------------------------------------ fan-out against brute force

def brute_conv_fan_out(node: Node, in_shape, covered=None) -> torch.Tensor:
    """Outgoing synapses of every input unit of a (grouped) conv, by enumerating its connections;
    ``covered(oy, ox)`` keeps only outputs some max-pool window reads."""
    channels, height, width = in_shape
    out_channels, _, kh, kw = node.params["weight"].shape
    (sh, sw), (top, bottom, left, right) = node.attrs["stride"], node.attrs["padding"]
    groups = node.attrs.get("groups", 1)
    out_h, out_w = (height + top + bottom - kh) // sh + 1, (width + left + right - kw) // sw + 1
    counts = torch.zeros(in_shape, dtype=torch.float64)
    for c in range(channels):
        group = c // (channels // groups)
        outputs = range(group * out_channels // groups, (group + 1) * out_channels // groups)
        for y in range(height):
            for x in range(width):
                reached = 0
                for oy in range(out_h):
                    for ox in range(out_w):
                        if 0 <= y + top - oy * sh < kh and 0 <= x + left - ox * sw < kw and (
                                covered is None or covered(oy, ox)):
                            reached += len(outputs)
                counts[c, y, x] = reached
    return counts


def test_fan_out_of_grouped_convolutions_and_concat_matches_brute_force():
    net, _ = converted("grouped_concat", "ecc")
    graph = net.graph
    counts = fan_out(graph)
    shape = lambda name: graph.node(name).shape  # noqa: E731
    expected_relu1 = brute_conv_fan_out(graph.node("dw"), shape("relu1")) + brute_conv_fan_out(graph.node("pw"), shape("relu1"))
    assert torch.equal(counts["relu1"], expected_relu1)
    for branch in ("relu_dw", "relu_pw"):  # concat → affine → neuron: one target each
        assert torch.equal(counts[branch], torch.ones(shape(branch), dtype=torch.float64))
    assert torch.equal(counts["relu_bn"], brute_conv_fan_out(graph.node("gconv"), shape("relu_bn")))


def test_fan_out_through_a_max_pool_counts_each_covered_current_once():
    """conv on 5×5 → maxpool(2, 2) without padding: the last row and column of conv outputs are
    read by no window and cost nothing; overlapping windows (3, 2, padding 1) count each output once."""
    g = torch.Generator().manual_seed(0)
    for kernel, stride, padding, covered in (
            ([2, 2], [2, 2], [0, 0, 0, 0], lambda oy, ox: oy < 4 and ox < 4),
            ([3, 3], [2, 2], [1, 1, 1, 1], None)):
        conv = Node("conv", "conv2d", ["input"], {"weight": torch.randn(3, 2, 3, 3, generator=g, dtype=torch.float64)},
                    {"stride": [1, 1], "padding": [1, 1, 1, 1]}, (3, 5, 5))
        pool = Node("pool", "maxpool", ["conv"], {}, {"kernel": kernel, "stride": stride, "padding": padding,
                                                   "gate": False}, (3, 2, 2))
        spike = Node("out", "spike", ["pool"], {}, {"threshold": 1.0, "reset": "subtract", "v_init": 0.0,
                                                   "step_current": 0.0}, (3, 2, 2))
        graph = Graph([Node("input", "input", shape=(2, 5, 5)), conv, pool, spike], output="out")
        assert torch.equal(fan_out(graph)["input"], brute_conv_fan_out(conv, (2, 5, 5), covered))


def test_gate_fan_out_is_one_count_update_per_spike_and_the_next_layer_s_synapses():
    net, _ = converted("maxpool", "ecc", maxpool="gate")
    graph = net.graph
    counts = fan_out(graph)
    assert torch.equal(counts["relu1"], torch.ones(graph.node("relu1").shape, dtype=torch.float64))
    assert torch.equal(counts["pool1"], brute_conv_fan_out(graph.node("conv2"), graph.node("pool1").shape))


def test_cnn_operations_count_max_pool_windows_and_grouped_fan_in():
    cnn = canonicalise(helpers.grouped_concat_cnn())
    gconv = cnn.node("gconv")
    assert torch.equal(fan_in(gconv, cnn.node("relu_bn").shape)[:, 1, 1],
                       torch.full((6,), 4 * 9, dtype=torch.float64))
    pool = Node("pool", "maxpool", ["x"], {}, {"kernel": [3, 3], "stride": [2, 2], "padding": [1, 1, 1, 1]})
    taps = fan_in(pool, (1, 5, 5))[0]
    assert taps[0, 0] == 4 and taps[1, 1] == 9 and taps[2, 2] == 4


# ------------------------------------------------------------------ passes

def chain(*nodes, input_shape=(2, 6, 6)):
    return helpers.finish([Node("input", "input"), *nodes], nodes[-1].name, input_shape)


def test_padding_merges_only_where_exact():
    g = torch.Generator().manual_seed(3)
    weight = lambda: torch.randn(3, 2, 3, 3, generator=g, dtype=torch.float64)  # noqa: E731
    cases = {
        "pad → conv": (chain(helpers.op("pad", "pad", ["input"], padding=[1, 0, 2, 1]),
                             Node("conv", "conv2d", ["pad"], {"weight": weight()}, {"stride": [1, 1], "padding": [0, 1, 0, 0]})),
                       False),
        "relu → pad → maxpool": (chain(helpers.op("relu", "relu", ["input"]), helpers.op("pad", "pad", ["relu"], padding=[1, 1, 1, 1]),
                                       helpers.op("pool", "maxpool", ["pad"], kernel=[3, 3], stride=[2, 2], padding=[0, 0, 0, 0])),
                                 False),
        "pad → maxpool (values may be negative)": (
            chain(helpers.op("pad", "pad", ["input"], padding=[1, 1, 1, 1]),
                  helpers.op("pool", "maxpool", ["pad"], kernel=[3, 3], stride=[2, 2], padding=[0, 0, 0, 0])), True),
    }
    x = torch.randn(4, 2, 6, 6, generator=g, dtype=torch.float64)
    for name, (graph, kept) in cases.items():
        canonical = canonicalise(graph)
        assert bool(canonical.nodes_of("pad")) == kept, name
        assert torch.equal(run_graph(canonical, x), run_graph(graph, x)), name


def test_affine_folds_into_an_unpadded_conv_and_stays_before_a_padded_one():
    g = torch.Generator().manual_seed(4)
    affine = Node("norm", "affine", ["input"], {"weight": torch.tensor([2.0, 0.5], dtype=torch.float64),
                                                "bias": torch.tensor([-1.0, 0.3], dtype=torch.float64)})
    x = torch.rand(4, 2, 6, 6, generator=g, dtype=torch.float64)
    for padding, kept in (([0, 0, 0, 0], False), ([1, 1, 1, 1], True)):
        conv = Node("conv", "conv2d", ["norm"], {"weight": torch.randn(3, 2, 3, 3, generator=g, dtype=torch.float64),
                                                 "bias": torch.randn(3, generator=g, dtype=torch.float64)},
                    {"stride": [1, 1], "padding": padding})
        graph = chain(Node(**{**affine.__dict__, "params": dict(affine.params)}), conv)
        canonical = canonicalise(graph)
        assert bool(canonical.nodes_of("affine")) == kept
        assert torch.allclose(run_graph(canonical, x), run_graph(graph, x), rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------ NIR

def test_nir_refuses_max_pooling_and_concat_in_one_line_and_exports_grouped_convolutions():
    pytest.importorskip("nir")
    from spkeras.export.nir import to_nir

    for kind, op in (("maxpool", "maxpool"), ("grouped_concat", "affine")):
        net, _ = converted(kind, "rueckauer2017")
        with pytest.raises(ModelError) as info:
            to_nir(net)
        assert op in str(info.value) and "NIR" in str(info.value) and "\n" not in str(info.value)
    g = torch.Generator().manual_seed(5)
    nodes = [helpers.conv("conv1", ["input"], 2, 4, 3, (1, 1), (1, 1, 1, 1), g, torch.float64),
             helpers.op("relu1", "relu", ["conv1"]),
             helpers.conv("dw", ["relu1"], 1, 4, 3, (1, 1), (1, 1, 1, 1), g, torch.float64),
             helpers.op("relu2", "relu", ["dw"]), helpers.op("gap", "global_avgpool", ["relu2"]),
             helpers.dense("fc", ["gap"], 4, 3, g, torch.float64)]
    nodes[2].attrs["groups"] = 4
    cnn = chain(*nodes)
    net = convert(cnn, helpers.images(cnn, 16), get_method("rueckauer2017"), 8)
    graph, _ = to_nir(net)
    assert graph.nodes["dw"].groups == 4


def test_a_node_may_read_one_value_twice():
    """torch.cat([y, y], 1) and x + x: the value is freed once, after its last reader."""
    g = torch.Generator().manual_seed(6)
    nodes = [helpers.conv("conv", ["input"], 2, 3, 3, (1, 1), (1, 1, 1, 1), g, torch.float64),
             helpers.op("relu", "relu", ["conv"]), helpers.op("cat", "concat", ["relu", "relu"]),
             helpers.op("twice", "add", ["cat", "cat"]), helpers.op("gap", "global_avgpool", ["twice"]),
             helpers.dense("fc", ["gap"], 6, 3, g, torch.float64)]
    cnn = chain(*nodes)
    x = helpers.images(cnn, 6)
    relu = torch.relu(run_graph(chain(nodes[0]), x))
    pooled = (2 * torch.cat([relu, relu], 1)).mean((2, 3))
    expected = torch.nn.functional.linear(pooled, nodes[5].params["weight"], nodes[5].params["bias"])
    assert torch.allclose(run_graph(cnn, x), expected, rtol=1e-12, atol=1e-12)
    net = convert(cnn, x, get_method("ecc"), 16)
    assert_same_as_reference(net, x, runs=[(3, 4)])
