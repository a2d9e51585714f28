"""Tests for spkeras.simulate and spkeras.closed_form against an independent, naive simulator.

The reference below steps through time one image at a time and evaluates the spiking graph
node by node, implementing Eq. 2–4 (IF neurons, reset by subtraction or to zero) and
Algorithm 1 literally. Only the Poisson random numbers are shared with the library by design.
"""

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import helpers  # noqa: E402
from helpers import one_thread  # noqa: E402,F401  (autouse fixture)

from spkeras.closed_form import closed_form  # noqa: E402
from spkeras.encoding import bernoulli_uniforms  # noqa: E402
from spkeras.errors import ConfigError  # noqa: E402
from spkeras.ir import Graph, Node, neurons  # noqa: E402
from spkeras.methods import get_method  # noqa: E402
from spkeras.methods.framework import convert  # noqa: E402
from spkeras.ops import apply_stateless, run_graph  # noqa: E402
from spkeras.simulate import RunOptions, simulate  # noqa: E402

T = 20


# ------------------------------------------------------------------ the naive reference simulator

def first_argmax(values: torch.Tensor) -> int:
    """Index of the largest value; ties go to the lowest index."""
    best = 0
    for k in range(1, values.numel()):
        if values[k] > values[best]:
            best = k
    return best


def naive_conv(node: Node, x: torch.Tensor) -> torch.Tensor:
    """A convolution group by group (each output channel reads only its group's input channels)."""
    top, bottom, left, right = node.attrs["padding"]
    x = F.pad(x, (left, right, top, bottom))
    weight, bias = node.params["weight"], node.params.get("bias")
    groups = node.attrs.get("groups", 1)
    per_in, per_out = x.shape[1] // groups, weight.shape[0] // groups
    parts = [F.conv2d(x[:, g * per_in : (g + 1) * per_in], weight[g * per_out : (g + 1) * per_out],
                      stride=tuple(node.attrs["stride"])) for g in range(groups)]
    out = torch.cat(parts, 1)
    return out + bias.view(1, -1, 1, 1) if bias is not None else out


def windows(node: Node, height: int, width: int):
    """(output y, output x, [(input y, input x) of the window's real taps in row-major order]) of a max pool."""
    top, bottom, left, right = node.attrs["padding"]
    (kh, kw), (sh, sw) = node.attrs["kernel"], node.attrs["stride"]
    out_h = (height + top + bottom - kh) // sh + 1
    out_w = (width + left + right - kw) // sw + 1
    for oy in range(out_h):
        for ox in range(out_w):
            taps = [(oy * sh + dy - top, ox * sw + dx - left) for dy in range(kh) for dx in range(kw)]
            yield oy, ox, [(y, x) for y, x in taps if 0 <= y < height and 0 <= x < width]


def naive_maxpool(node: Node, x: torch.Tensor) -> torch.Tensor:
    """A max pool window by window over the real taps (padding never wins)."""
    result = {}
    for oy, ox, taps in windows(node, x.shape[2], x.shape[3]):
        result[oy, ox] = torch.stack([x[0, :, y, xx] for y, xx in taps]).amax(0)
    out_h, out_w = max(k[0] for k in result) + 1, max(k[1] for k in result) + 1
    out = torch.stack([torch.stack([result[oy, ox] for ox in range(out_w)], -1) for oy in range(out_h)], -2)
    return out.unsqueeze(0) * node.attrs.get("scale", 1.0)


def naive_gate(node: Node, spikes: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """A max-pool gate: ``counts`` (already including this step's spikes) picks, per window and
    channel, the first unit with the largest count; its spike passes."""
    outputs = {}
    for oy, ox, taps in windows(node, spikes.shape[2], spikes.shape[3]):
        passed = torch.zeros(spikes.shape[1], dtype=spikes.dtype)
        for c in range(spikes.shape[1]):
            best = taps[0]
            for tap in taps[1:]:
                if counts[0, c, tap[0], tap[1]] > counts[0, c, best[0], best[1]]:
                    best = tap
            passed[c] = spikes[0, c, best[0], best[1]]
        outputs[oy, ox] = passed
    out_h, out_w = max(k[0] for k in outputs) + 1, max(k[1] for k in outputs) + 1
    out = torch.stack([torch.stack([outputs[oy, ox] for ox in range(out_w)], -1) for oy in range(out_h)], -2)
    return out.unsqueeze(0) * node.attrs.get("scale", 1.0)


def naive_linear(node: Node, inputs: list[torch.Tensor]) -> torch.Tensor:
    """One stateless node on a single image (batch of 1)."""
    x = inputs[0]
    if node.op == "conv2d":
        return naive_conv(node, x)
    if node.op == "dense":
        return F.linear(x, node.params["weight"], node.params.get("bias"))
    if node.op == "affine":
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return x * node.params["weight"].view(shape) + node.params["bias"].view(shape)
    if node.op == "avgpool":
        return F.avg_pool2d(x, tuple(node.attrs["kernel"]), tuple(node.attrs["stride"])) * node.attrs.get("scale", 1.0)
    if node.op == "adaptive_avgpool":
        (oh, ow), (height, width) = node.attrs["output_size"], x.shape[2:]
        rows = [(i * height // oh, -(-(i + 1) * height // oh)) for i in range(oh)]
        cols = [(j * width // ow, -(-(j + 1) * width // ow)) for j in range(ow)]
        out = torch.stack([torch.stack([x[:, :, r0:r1, c0:c1].mean((2, 3)) for c0, c1 in cols], -1)
                           for r0, r1 in rows], -2)
        return out * node.attrs.get("scale", 1.0)
    if node.op == "global_avgpool":
        return F.avg_pool2d(x, tuple(x.shape[2:])).flatten(1) * node.attrs.get("scale", 1.0)
    if node.op == "maxpool":
        return naive_maxpool(node, x)
    if node.op == "pad":
        top, bottom, left, right = node.attrs["padding"]
        return F.pad(x, (left, right, top, bottom))
    if node.op == "flatten":
        return x.reshape(1, -1)
    if node.op in ("add", "concat"):
        coefficients = node.attrs.get("coefficients") or [1.0] * len(inputs)
        terms = [term * c for c, term in zip(coefficients, inputs)]
        if node.op == "concat":
            return torch.cat(terms, 1)
        total = terms[0]
        for term in terms[1:]:
            total = total + term
        return total
    raise AssertionError(f"unexpected op {node.op}")


def reference(net, images, timesteps, readout=None, seed=0, image_ids=None, scores=None):
    """Naive simulation: returns predictions (T, N), per-step layer spike totals (T, L), per-neuron
    counts {layer: (N, *shape)}, and per spike node the (min, max) one-step charge Z + step current.
    A ``scores`` dict, if given, receives each (step, image)'s output scores."""
    method = net.method
    readout = readout or method.readout
    graph = net.graph
    spike_nodes = [n for n in graph.nodes if n.op == "spike"]
    gates = {n.name for n in graph.nodes if n.op == "maxpool" and n.attrs.get("gate")}
    accumulating = {n.name for n in graph.nodes if n.op == "maxpool" and n.attrs.get("accumulate")}
    layers = [n.name for n in graph.nodes if n.name == graph.input.name or n.op == "spike" or n.name in gates]
    n_images = images.shape[0]
    ids = torch.arange(n_images) if image_ids is None else image_ids
    predictions = torch.empty((timesteps, n_images), dtype=torch.int64)
    per_step = torch.zeros((timesteps, len(layers)), dtype=torch.float64)
    counts = {name: torch.zeros((n_images, *graph.node(name).shape), dtype=torch.float64) for name in layers}
    charge = {n.name: [float("inf"), float("-inf")] for n in spike_nodes}
    for i in range(n_images):
        x = images[i : i + 1]
        encoder_v = torch.zeros_like(x)
        gate_counts = {name: torch.zeros((1, *graph.node(graph.node(name).inputs[0]).shape), dtype=x.dtype)
                       for name in gates | accumulating}
        largest = {name: torch.zeros((1, *graph.node(name).shape), dtype=x.dtype) for name in accumulating}
        potential = {n.name: torch.full((1, *n.shape), float(n.attrs["v_init"]), dtype=x.dtype)
                     + n.params.get("initial_potential", torch.zeros(())) for n in spike_nodes}
        for t in range(1, timesteps + 1):
            values = {}
            spiking_input = True
            if method.encoding == "analog":
                values[graph.input.name] = x
                spiking_input = False
            elif method.encoding == "algorithm1":
                encoder_v = encoder_v + method.kappa0 * x
                fired = encoder_v > method.kappa0                      # strictly greater
                encoder_v = torch.where(fired, encoder_v - method.kappa0, encoder_v)
                values[graph.input.name] = fired.to(x.dtype)
            else:
                u = bernoulli_uniforms(seed, ids[i : i + 1], t, x.numel(), "cpu").view(x.shape)
                values[graph.input.name] = (u < x).to(x.dtype)
            if spiking_input:
                s = values[graph.input.name]
                per_step[t - 1, 0] += float(s.sum())
                counts[graph.input.name][i] += s[0].double()
            for node in graph.nodes[1:]:
                inputs = [values[k] for k in node.inputs]
                if node.name in gates:
                    gate_counts[node.name] = gate_counts[node.name] + inputs[0]
                    s = naive_gate(node, inputs[0], gate_counts[node.name])
                    values[node.name] = s
                    per_step[t - 1, layers.index(node.name)] += float(s.sum())
                    counts[node.name][i] += s[0].double()
                    continue
                if node.name in accumulating:  # the change of the window's largest accumulated current
                    gate_counts[node.name] = gate_counts[node.name] + inputs[0]
                    now = naive_maxpool(node, gate_counts[node.name])
                    values[node.name] = now - largest[node.name]
                    largest[node.name] = now
                    continue
                if node.op != "spike":
                    values[node.name] = naive_linear(node, inputs)
                    continue
                a = node.attrs
                z = inputs[0]
                step = z + a["step_current"] if a["step_current"] else z  # Z(t) with the TRE bias (Eq. 9)
                if "step_bias" in node.params:  # a per-step correction; past its last row, the last one
                    table = node.params["step_bias"]
                    step = step + table[min(t, table.shape[0]) - 1]
                v = potential[node.name] + step                         # Eq. 2: V(t) = V(t-1) + Z(t) …
                low, high = charge[node.name]
                charge[node.name] = [min(low, float(step.min())), max(high, float(step.max()))]
                if node.name == graph.output and readout == "potential":
                    potential[node.name] = v
                    values[node.name] = v
                    continue
                fired = v >= a["threshold"]                             # Eq. 4
                if a["reset"] == "subtract":
                    v = torch.where(fired, v - a["threshold"], v)       # Eq. 2: − Θ V_thr
                else:
                    v = torch.where(fired, torch.zeros_like(v), v)
                potential[node.name] = v
                s = fired.to(x.dtype)
                values[node.name] = s
                index = layers.index(node.name)
                per_step[t - 1, index] += float(s.sum())
                counts[node.name][i] += s[0].double()
            score = potential[graph.output][0] if readout == "potential" else counts[graph.output][i]
            if method.readout_delay and t == method.readout_delay:
                baseline = score.clone()
            if method.readout_delay and t > method.readout_delay:
                score = score - baseline                                 # read only what came after the delay
            predictions[t - 1, i] = first_argmax(score)
            if scores is not None:
                scores[t - 1, i] = score.clone()
    return predictions, per_step, counts, charge


# ------------------------------------------------------------------ networks

def build(kind, dtype=torch.float64, seed=0):
    if kind == "chain":
        return helpers.chain_cnn(dtype=dtype, seed=seed)
    if kind == "residual":
        return helpers.residual_cnn(dtype=dtype, seed=seed)
    if kind == "residual2":
        return helpers.residual_cnn(dtype=dtype, seed=seed, branch=2)
    return helpers.mlp(dtype=dtype, seed=seed)


_NETS = {}


def converted(kind, preset, timesteps=T, dtype=torch.float64, **options):
    """A converted network (cached) and six test images that are not its calibration images."""
    key = (kind, preset, timesteps, dtype, tuple(sorted(options.items())))
    if key not in _NETS:
        cnn = build(kind, dtype)
        calibration = helpers.images(cnn, 48, seed=11, dtype=dtype)
        net = convert(cnn, calibration, get_method(preset, **options), timesteps)
        _NETS[key] = (net, helpers.images(cnn, 6, seed=12, dtype=dtype))
    return _NETS[key]


CONFIGS = [
    ("ecc", {}),
    ("rueckauer2017", {}),
    ("ecc", {"tre": "initial"}),
    ("ecc", {"tre": "off", "reset": "zero"}),
    ("ecc", {"encoding": "analog", "spiking_pools": False}),
    ("ecc", {"encoding": "poisson", "readout": "potential"}),
    ("ecc", {"reset": "zero", "readout": "potential", "tre": "initial", "encoding": "analog"}),
    ("rueckauer2017", {"encoding": "algorithm1", "readout": "potential"}),
    ("rueckauer2017", {"reset": "zero", "tre": "spread"}),
    ("rueckauer2017", {"encoding": "poisson", "spiking_pools": False, "tre": "initial"}),
    ("ecc+", {"potential_share": 0.5}),  # per-channel initial potentials and biases from rate calibration
    ("ecc+", {"step_bias": True}),  # and a per-step, per-channel current correction
    ("ecc+", {"per_step_rates": True}),  # with the rate correction given step by step too
]
# (chunk, batch size): chunks of 1, 3 and 8 steps (3 and 8 do not divide T = 20), and one chunk > T
RUNS = [(1, 6), (3, 4), (8, 1), (8, 5), (50, 2)]


def assert_same_as_reference(net, images, readout=None, seed=0, runs=RUNS, expect_activity=True, conv="auto"):
    predictions, per_step, counts, _ = reference(net, images, T, readout=readout, seed=seed)
    if expect_activity:
        hidden = [k for k, name in enumerate(counts) if name not in (net.graph.input.name, net.graph.output)]
        assert all(per_step[:, k].sum() > 0 for k in hidden), "a hidden layer never fired: the comparison is weak"
    for chunk, batch in runs:
        record = helpers.simulate_counting(net, images, T, readout=readout, batch_size=batch, chunk=chunk, seed=seed, conv=conv)
        assert record.steps == list(range(1, T + 1))
        assert record.layers == list(counts)
        assert torch.equal(record.predictions, predictions), f"predictions differ (chunk {chunk}, batch {batch})"
        assert torch.equal(record.spikes, per_step.cumsum(0)), f"layer spikes differ (chunk {chunk}, batch {batch})"
        for name, expected in counts.items():
            assert torch.equal(record.neuron_counts[name].double(), expected), f"{name} counts differ"
    return record


# ------------------------------------------------------------------ 1. simulator = naive reference

@pytest.mark.parametrize("preset,options", CONFIGS, ids=[f"{p}-{'-'.join(f'{k}={v}' for k, v in o.items())}" for p, o in CONFIGS])
@pytest.mark.parametrize("kind", ["chain", "residual", "residual2", "mlp"])
def test_simulation_matches_naive_reference(kind, preset, options):
    net, images = converted(kind, preset, **options)
    assert net.method.name == preset
    for key, value in options.items():
        assert getattr(net.method, key) == value
    runs = RUNS if kind == "chain" else RUNS[1:3]
    assert_same_as_reference(net, images, runs=runs)


@pytest.mark.parametrize("readout", ["spikes", "potential"])
def test_readout_argument_overrides_the_method(readout):
    net, images = converted("chain", "ecc")
    assert net.method.readout == "spikes"
    assert_same_as_reference(net, images, readout=readout, runs=[(3, 4)])


def test_simulation_matches_reference_in_float32():
    net, images = converted("chain", "ecc", dtype=torch.float32)
    assert net.graph.node("conv1").params["weight"].dtype == torch.float32
    assert_same_as_reference(net, images, runs=[(3, 6), (8, 1)])


def test_rows_without_spikes_are_skipped_exactly(monkeypatch):
    """Image-steps whose input carries no spike skip the conv (they get its bias): the compacted
    path is taken here and the simulation still equals the naive reference spike for spike."""
    import spkeras.simulate as simulate_module

    net, images = converted("chain", "ecc")
    compacted = []
    full_layer = simulate_module.apply_stateless

    def recording(node, inputs, *args):
        out = full_layer(node, inputs, *args)
        compacted.append(node.op in simulate_module.SYNAPSES and inputs[0].shape[0] not in (1, images.shape[0] * 3))
        return out

    monkeypatch.setattr(simulate_module, "apply_stateless", recording)
    assert_same_as_reference(net, images, runs=[(3, images.shape[0])], conv="dense")
    assert any(compacted), "no layer skipped silent rows: the test does not exercise the compacted path"
    rows = images.clone()
    rows[::2] = 0
    conv = net.graph.nodes_of("conv2d")[0]
    assert torch.equal(simulate_module._skip_silent_rows(conv, rows, set()), full_layer(conv, [rows]))


@pytest.mark.parametrize("kind,preset", [("chain", "ecc"), ("residual", "ecc"), ("chain", "ecc+")])
def test_event_driven_convolution_matches_reference(monkeypatch, kind, preset):
    """Every conv layer run event-driven (density bar raised above 1, size bars lowered): spikes,
    counts and predictions still equal the naive reference's; with ``conv='dense'`` none is."""
    import spkeras.event_conv as event_conv

    net, images = converted(kind, preset)
    for bar, value in (("DENSITY_WORTH_SCATTERING", 1.01), ("MIN_OUTPUT_CHANNELS", 1), ("MIN_WEIGHTS_PER_OUTPUT", 1)):
        monkeypatch.setattr(event_conv, bar, value)
    record = assert_same_as_reference(net, images, runs=[(3, 4), (8, 6)])
    assert record.event_conv_share == 1.0
    assert simulate(net, images, 4, conv="dense").event_conv_share is None
    with pytest.raises(ConfigError, match="conv must be one of auto, dense"):
        simulate(net, images, 4, conv="sparse")


def test_reference_is_not_trivial():
    """Sanity of the comparison itself: predictions change over time and differ between images."""
    net, images = converted("chain", "ecc")
    predictions, per_step, counts, _ = reference(net, images, T)
    assert len(set(predictions[-1].tolist())) > 1 or len(set(predictions[:, 0].tolist())) > 1
    assert per_step[:, 0].sum() > 0  # Algorithm 1 input spikes are counted
    zero, _ = converted("chain", "ecc", reset="zero")
    assert {n.attrs["reset"] for n in zero.graph.nodes_of("spike")} == {"zero"}
    off = reference(zero, images, T)[2]
    assert any(not torch.equal(off[k], counts[k]) for k in counts), "reset rule has no effect: weak networks"


# ------------------------------------------------------------------ 2. closed form = simulation when exact

def positive_net(kind, preset, **options):
    """A converted network with non-negative weights and biases, scaled so that no step's charge
    (Z + TRE bias) exceeds the threshold: the premise under which the closed form is exact."""
    builders = {"chain": helpers.chain_cnn, "residual": helpers.residual_cnn, "mlp": helpers.mlp,
                "residual2": lambda **kw: helpers.residual_cnn(branch=2, **kw)}
    cnn = builders[kind](dtype=torch.float64, seed=3, positive=True)
    calibration = helpers.images(cnn, 32, seed=4)
    net = convert(cnn, calibration, get_method(preset, **options), 40)
    graph = net.graph
    for node in graph.nodes:
        if node.op != "spike":
            continue
        # worst case of one step: every input at its largest (1 for spikes and pixels) and the TRE bias
        feeding = graph.node(node.inputs[0])
        probe = torch.ones((1, *graph.node(feeding.inputs[0]).shape), dtype=torch.float64)
        with torch.no_grad():
            worst = float(_subgraph_value(graph, feeding.name, probe).max()) + node.attrs["step_current"]
        limit = 0.9 * node.attrs["threshold"]
        if worst > limit:
            _scale_upstream(graph, feeding.name, limit / worst)
    return net


def _subgraph_value(graph, name, probe):
    """Value of node ``name`` when every source of its inputs outputs ``probe``-shaped ones."""
    node = graph.node(name)
    inputs = []
    for source in node.inputs:
        src = graph.node(source)
        if src.op in ("spike", "input"):
            inputs.append(torch.ones((1, *src.shape), dtype=torch.float64))
        else:
            inputs.append(_subgraph_value(graph, source, probe))
    return naive_linear(node, inputs)


def _scale_upstream(graph, name, factor):
    """Scale the linear path into a spike node (down to the previous neurons) by ``factor``."""
    node = graph.node(name)
    if node.op in ("conv2d", "dense"):
        node.params = {k: v * factor for k, v in node.params.items()}
    elif node.op in ("avgpool", "global_avgpool"):
        node.attrs["scale"] = node.attrs.get("scale", 1.0) * factor
    elif node.op == "add":
        node.attrs["coefficients"] = [c * factor for c in node.attrs["coefficients"]]
    elif node.op == "flatten":
        _scale_upstream(graph, node.inputs[0], factor)
    else:
        raise AssertionError(node.op)


@pytest.mark.parametrize("kind,preset,options", [
    ("chain", "ecc", {}),
    ("chain", "ecc", {"tre": "initial", "encoding": "analog"}),
    ("chain", "rueckauer2017", {"spiking_pools": False}),
    ("residual", "ecc", {}),
    ("residual", "rueckauer2017", {"tre": "spread"}),
    ("residual2", "ecc", {"spiking_pools": False}),
    ("mlp", "ecc", {"readout": "potential"}),
    ("mlp", "rueckauer2017", {"encoding": "algorithm1"}),
])
def test_closed_form_is_exact_without_negative_or_oversized_currents(kind, preset, options):
    net = positive_net(kind, preset, **options)
    images = helpers.images(net.cnn, 5, seed=5)
    steps = 40
    predictions, per_step, counts, charge = reference(net, images, steps)
    # the premise: no negative current, none above the threshold in one step
    for node in net.graph.nodes_of("spike"):
        low, high = charge[node.name]
        assert low >= 0.0, f"{node.name}: negative current {low}"
        assert high <= node.attrs["threshold"], f"{node.name}: current {high} exceeds the threshold"
    assert sum(float(counts[n.name].sum()) for n in net.graph.nodes_of("spike")) > 0
    checkpoints = [1, 2, 7, 19, 40]
    record = closed_form(net, images, checkpoints, batch_size=2)
    simulated = simulate(net, images, steps, batch_size=3, chunk=6)
    assert record.mode == "count" and record.steps == checkpoints
    for k, t in enumerate(checkpoints):
        assert torch.equal(record.predictions[k], simulated.predictions[t - 1]), f"predictions differ at t={t}"
        assert torch.equal(record.spikes[k], simulated.spikes[t - 1]), f"spike totals differ at t={t}"
        assert torch.equal(record.synops[k], simulated.synops[t - 1]), f"synops differ at t={t}"
    assert torch.equal(simulated.predictions, predictions)


def test_per_channel_initial_potential_is_simulated_and_counted_in_closed_form():
    """Rate calibration's per-channel initial potentials: the simulator and the closed form start
    each channel from its own V(0), and both agree with the naive reference."""
    net = positive_net("chain", "ecc", tre="initial", encoding="analog")
    images = helpers.images(net.cnn, 5, seed=5)
    before = simulate(net, images, 40).spikes[-1]
    for node in net.graph.nodes_of("spike"):
        shape = (-1,) + (1,) * (len(node.shape) - 1)
        share = torch.linspace(0, 0.45, node.shape[0], dtype=torch.float64).view(shape)
        node.params["initial_potential"] = share * node.attrs["threshold"]
    predictions, per_step, counts, _ = reference(net, images, 40)
    simulated = helpers.simulate_counting(net, images, 40, batch_size=3, chunk=6)
    assert torch.equal(simulated.predictions, predictions)
    assert torch.equal(simulated.spikes, per_step.cumsum(0))
    assert bool((simulated.spikes[-1] > before).any()), "the initial potentials changed nothing: the test is weak"
    record = closed_form(net, images, [40], batch_size=2)
    assert torch.equal(record.spikes[0], simulated.spikes[-1])


def test_per_step_corrections_are_simulated_and_counted_in_closed_form():
    """Per-step, per-channel current corrections c(t): the simulator adds row t at step t (the
    last row at every step past the table), as the naive reference does, and the closed form
    counts their sum; both agree spike for spike, over more steps than the table has rows."""
    net = positive_net("chain", "ecc", tre="initial", encoding="analog")
    images = helpers.images(net.cnn, 5, seed=5)
    before = simulate(net, images, T + 10).spikes[-1]
    for node in net.graph.nodes_of("spike"):
        rows = torch.linspace(0.08, 0.0, T, dtype=torch.float64).view(-1, *[1] * len(node.shape))
        channels = torch.linspace(0.2, 1.0, node.shape[0], dtype=torch.float64).view(-1, *[1] * (len(node.shape) - 1))
        node.params["step_bias"] = rows * channels * node.attrs["threshold"] + 0.01 * node.attrs["threshold"]
    predictions, per_step, counts, _ = reference(net, images, T + 10)
    simulated = helpers.simulate_counting(net, images, T + 10, batch_size=3, chunk=6)
    assert torch.equal(simulated.predictions, predictions)
    assert torch.equal(simulated.spikes, per_step.cumsum(0))
    assert bool((simulated.spikes[-1] > before).any()), "the corrections changed nothing: the test is weak"
    record = closed_form(net, images, [T + 10], batch_size=2)
    assert torch.equal(record.spikes[0], simulated.spikes[-1])


def test_step_bias_calibration_brings_each_steps_mean_current_to_the_rate_model():
    """After the step-bias calibration (no rate rounds), the mean input current of every spike
    node at every step, measured by a full simulation of the calibration images, plus its
    correction for that step, equals the rate model's mean current clip-propagated from the input
    (computed here by its own forward pass), per channel."""
    from spkeras.methods.rate_calibration import StepSums

    cnn = build("residual", torch.float64)
    calibration = helpers.images(cnn, 24, seed=11)
    method = get_method("ecc+", rate_calibration=0, step_bias=True, delay_calibration_images=0,
                        rate_calibration_images=24)
    net = convert(cnn, calibration, method, T)
    expected = {}

    def apply(node, inputs):
        if node.op != "spike":
            return apply_stateless(node, inputs)
        z = inputs[0].double()
        expected[node.name] = z.mean(dim=(0, 2, 3) if z.dim() == 4 else 0)
        return torch.clamp(inputs[0] / node.attrs["threshold"], 0, 1)

    run_graph(net.graph, calibration, apply=apply)
    nodes = net.spike_nodes
    recorders = [StepSums(n.name, T) for n in nodes]
    simulate(net, calibration, RunOptions(timesteps=T, batch_size=10, chunk=7), recorders)
    for node, measured in zip(nodes, recorders):
        positions = measured.images * (neurons(node) // node.shape[0])
        correction = node.params["step_bias"].reshape(T, -1)
        reached = torch.from_numpy(measured.sums / positions) + correction
        assert torch.allclose(reached, expected[node.name].expand(T, -1), atol=1e-9), node.name
    deepest = nodes[-2].params["step_bias"].reshape(T, -1).abs().sum(1)
    assert deepest[0] > deepest[-1] > 0, "the layers below fill over time: the first step needs the most"


def test_closed_form_and_simulation_fire_at_most_once_per_step():
    """A current of three thresholds per step still gives one spike per step (Eq. 4), in both models."""
    net = single_path_net("rueckauer2017")
    fc1 = net.graph.node("fc1")
    fc1.params["weight"] = fc1.params["weight"] * 3.0
    x = torch.tensor([[1.0], [0.5], [0.23]], dtype=torch.float64)
    record = closed_form(net, x, [1, 5, T])
    simulated = helpers.simulate_counting(net, x, T)
    hidden = record.layers.index("relu1")
    for k, t in enumerate([1, 5, T]):
        assert torch.equal(record.spikes[k], simulated.spikes[t - 1])
    # x = 1 and 0.5 drive ≥ V_thr per step: a spike at every step; x = 0.23 (0.69 V_thr per step) fires
    # ⌊0.69·20⌋ = 13 times
    assert simulated.neuron_counts["relu1"].flatten().tolist() == [T, T, 13]
    assert float(record.spikes[-1, hidden]) == 2 * T + 13


def test_closed_form_is_only_an_estimate_with_negative_currents():
    """Guard against a trivially equal comparison: with signed weights the two models differ."""
    net, images = converted("chain", "rueckauer2017")
    _, _, _, charge = reference(net, images[:2], 5)
    assert min(low for low, _ in charge.values()) < 0
    record = closed_form(net, images, [T])
    simulated = simulate(net, images, T)
    assert not torch.equal(record.spikes[0], simulated.spikes[-1])


# ------------------------------------------------------------------ 3. long simulations approach the CNN

def test_long_simulation_agrees_with_the_cnn():
    cnn = helpers.mlp(dtype=torch.float64, seed=7, sizes=(16, 24, 16, 5))
    # centre the logits so that every class is predicted for some images
    calibration = helpers.images(cnn, 256, seed=8)
    with torch.no_grad():
        logits = run_graph(cnn, calibration)
    last = cnn.node(cnn.output)
    last.params["bias"] = last.params["bias"] - logits.mean(0)
    images = helpers.images(cnn, 64, seed=9)
    with torch.no_grad():
        target = run_graph(cnn, images).argmax(1)
    assert len(set(target.tolist())) >= 4
    for preset in ("ecc", "rueckauer2017"):
        net = convert(cnn, calibration, get_method(preset, readout="potential"), 2000)
        record = simulate(net, images, 2000, batch_size=64, chunk=50)
        agreement = (record.predictions == target).double().mean(1)
        assert agreement[-1] >= 0.95, f"{preset}: agreement {float(agreement[-1])} at T=2000"
        assert agreement[-1] > agreement[9], f"{preset}: no better at T=2000 than at T=10"


# ------------------------------------------------------------------ 4. Poisson input is reproducible

def test_poisson_input_is_reproducible():
    net, images = converted("chain", "ecc", encoding="poisson")
    base = helpers.simulate_counting(net, images, T, batch_size=6, chunk=8, seed=5)
    for batch, chunk in [(1, 1), (4, 3), (2, 20)]:
        again = helpers.simulate_counting(net, images, T, batch_size=batch, chunk=chunk, seed=5)
        assert torch.equal(again.spikes, base.spikes)
        assert torch.equal(again.predictions, base.predictions)
        for name in base.neuron_counts:
            assert torch.equal(again.neuron_counts[name], base.neuron_counts[name])
    # an image's spike train depends on its id, not on its position in the batch
    subset = helpers.simulate_counting(net, images[3:5], T, seed=5, image_ids=torch.tensor([3, 4]))
    for name in base.neuron_counts:
        assert torch.equal(subset.neuron_counts[name], base.neuron_counts[name][3:5])
    other = helpers.simulate_counting(net, images, T, batch_size=6, chunk=8, seed=6)
    assert not torch.equal(other.neuron_counts["input"], base.neuron_counts["input"])
    assert not torch.equal(other.spikes, base.spikes)
    # the input rate approximates the pixel value
    rate = base.neuron_counts["input"] / T
    assert float((rate - images).abs().mean()) < 0.15


# ------------------------------------------------------------------ 5. TRE

def single_path_net(preset, **options):
    """input(1) → dense(1) → relu → dense(1): λ = 1 at both sites when calibrated on x = 1."""
    one = torch.ones((1, 1), dtype=torch.float64)
    nodes = [
        Node("input", "input", shape=(1,)),
        Node("fc1", "dense", ["input"], {"weight": one.clone(), "bias": torch.zeros(1, dtype=torch.float64)}, shape=(1,)),
        Node("relu1", "relu", ["fc1"], shape=(1,)),
        Node("fc2", "dense", ["relu1"], {"weight": one.clone(), "bias": torch.zeros(1, dtype=torch.float64)}, shape=(1,)),
    ]
    cnn = Graph(nodes, output="fc2")
    return convert(cnn, torch.ones((1, 1), dtype=torch.float64), get_method(preset, encoding="analog", **options), T)


# pixel values with x·T away from integers and half-integers
X = torch.tensor([[0.0], [0.0123], [0.1234567], [0.3317], [0.4851], [0.5], [0.6129], [0.77777], [0.9412]],
                 dtype=torch.float64)


def hidden_spike_counts(net, x):
    """Cumulative spike counts of the single hidden neuron after every step, (T, N)."""
    out = []
    for i in range(x.shape[0]):
        record = simulate(net, x[i : i + 1], T)
        out.append(record.spikes[:, record.layers.index("relu1")])
    return torch.stack(out, 1)


@pytest.mark.parametrize("eta", [0.5, 0.3])
def test_spread_tre_adds_eta_threshold_over_t_steps(eta):
    net = single_path_net("ecc", tre="spread", eta=eta)
    for node in net.graph.nodes_of("spike"):
        assert node.attrs["v_init"] == 0.0
        assert node.attrs["threshold"] == 100.0
        assert node.attrs["step_current"] * T == pytest.approx(eta * 100.0, rel=1e-12)
    counts = hidden_spike_counts(net, X)
    t = torch.arange(1, T + 1, dtype=torch.float64).view(-1, 1)
    # current 100·x per step plus η·100/T: N(t) = ⌊x·t + η·t/T⌋
    expected = torch.floor(X.view(1, -1) * t + eta * t / T)
    assert torch.equal(counts, expected)
    # without TRE the same neuron fires ⌊x·t⌋ times; at T the difference is exactly the η·V_thr charge
    plain = hidden_spike_counts(single_path_net("ecc", tre="off"), X)
    assert torch.equal(plain, torch.floor(X.view(1, -1) * t))
    assert torch.equal(counts[-1] - plain[-1], torch.floor(X.view(-1) * T + eta) - torch.floor(X.view(-1) * T))
    # the closed form agrees (every current here is non-negative and below the threshold)
    record = closed_form(net, X, [T])
    assert float(record.spikes[0, record.layers.index("relu1")]) == float(expected[-1].sum())


@pytest.mark.parametrize("eta", [0.5, 0.3])
def test_initial_tre_sets_the_initial_potential(eta):
    net = single_path_net("ecc", tre="initial", eta=eta)
    for node in net.graph.nodes_of("spike"):
        assert node.attrs["v_init"] == eta * node.attrs["threshold"]
        assert node.attrs["step_current"] == 0.0
    counts = hidden_spike_counts(net, X)
    t = torch.arange(1, T + 1, dtype=torch.float64).view(-1, 1)
    assert torch.equal(counts, torch.floor(X.view(1, -1) * t + eta))


@pytest.mark.parametrize("readout", ["spikes", "potential"])
def test_delayed_readout_matches_reference(readout):
    net, images = converted("chain", "ecc", readout=readout, readout_delay=7)
    assert_same_as_reference(net, images)
    plain, _ = converted("chain", "ecc", readout=readout)
    delayed, undelayed = simulate(net, images, T).predictions, simulate(plain, images, T).predictions
    assert torch.equal(delayed[:7], undelayed[:7])
    assert not torch.equal(delayed, undelayed), "the delay changed no prediction: the test is weak"


# ------------------------------------------------------------------ early exit

def first_stable_step(predictions: torch.Tensor, scores: dict, k: int) -> torch.Tensor:
    """Per image, the first t (1-based) after which the last k predictions agree, each made with
    the output separating the classes (not all scores equal); T if never."""
    steps, n = predictions.shape
    exits = torch.full((n,), steps, dtype=torch.int64)
    for i in range(n):
        for t in range(k, steps + 1):
            window = range(t - k, t)
            decided = all(bool(scores[s, i].max() > scores[s, i].min()) for s in window)
            if decided and all(int(predictions[s, i]) == int(predictions[t - 1, i]) for s in window):
                exits[i] = t
                break
    return exits


EARLY_EXIT_CONFIGS = [
    ("chain", "ecc", {}),
    ("residual", "rueckauer2017", {}),
    ("chain", "ecc", {"encoding": "poisson", "readout": "potential", "readout_delay": 4}),
]


@pytest.mark.parametrize("kind,preset,options", EARLY_EXIT_CONFIGS)
def test_early_exit_is_the_full_run_cut_at_each_images_stable_step(kind, preset, options):
    net, images = converted(kind, preset, **options)
    k = 3
    scores = {}
    full_predictions, _, _, _ = reference(net, images, T, scores=scores)
    exits = first_stable_step(full_predictions, scores, k)
    assert bool((exits < T).any()), "no image stopped early: the test is weak"
    expected_predictions = full_predictions.clone()
    expected_spikes, expected_synops = 0, 0
    for i, e in enumerate(exits.tolist()):
        expected_predictions[e:, i] = full_predictions[e - 1, i]
        _, per_step, _, _ = reference(net, images[i : i + 1], T, image_ids=torch.tensor([i]))
        expected_spikes = expected_spikes + per_step[:e].sum(0)
        alone = simulate(net, images[i : i + 1], T, image_ids=torch.tensor([i]))
        expected_synops = expected_synops + alone.synops[e - 1]
    full = simulate(net, images, T)
    for chunk, batch in [(1, 6), (3, 4), (8, 5), (50, 2)]:
        record = simulate(net, images, T, batch_size=batch, chunk=chunk, early_exit=k)
        assert torch.equal(record.exit_steps, exits), f"exit steps differ (chunk {chunk}, batch {batch})"
        assert torch.equal(record.predictions, expected_predictions)
        assert torch.equal(record.spikes[-1], expected_spikes)
        assert torch.allclose(record.synops[-1], expected_synops, rtol=1e-12, atol=0)
        assert record.synops[-1].sum() < full.synops[-1].sum()


def test_early_exit_refuses_what_it_cannot_report():
    net, images = converted("chain", "ecc")
    with pytest.raises(Exception, match="early exit"):
        helpers.simulate_counting(net, images, T, early_exit=2)
    with pytest.raises(Exception, match="early exit"):
        simulate(net, images, T, early_exit=0)

