"""Tests for conversion: BN folding (Eq. 11–12, CMB), normalisation (Proposition 1, CN Eq. 8,
weight normalisation), λ calibration, and the λ = 0 error."""

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import helpers  # noqa: E402
from helpers import one_thread  # noqa: E402,F401  (autouse fixture)

from spkeras.calibrate import calibrate  # noqa: E402
from spkeras.closed_form import closed_form  # noqa: E402
from spkeras.errors import ModelError  # noqa: E402
from spkeras.ir import Node  # noqa: E402
from spkeras.methods import get_method  # noqa: E402
from spkeras.methods.framework import convert  # noqa: E402
from spkeras.ops import apply_cnn, run_graph  # noqa: E402
from spkeras.passes import canonicalise, fold_batchnorm  # noqa: E402


def outputs(graph, x, name=None):
    """Every node's output on ``x`` (or just ``name``'s)."""
    seen = {}

    def observe(node, value):
        seen[node.name] = value

    with torch.no_grad():
        run_graph(graph, x, observe=observe)
    return seen[name] if name else seen


def logits(graph, x):
    """The output before a final softmax."""
    out = graph.node(graph.output)
    return outputs(graph, x, out.inputs[0] if out.op == "softmax" else out.name)


# ------------------------------------------------------------------ 1. BN folding preserves the CNN

BN_GRAPHS = {
    "conv-bn": lambda dtype: helpers.chain_cnn(dtype=dtype, seed=1),
    "conv-bn-no-bias": lambda dtype: helpers.chain_cnn(dtype=dtype, seed=2, conv_bias=False),
    "dense-bn": lambda dtype: helpers.mlp(dtype=dtype, seed=3, bn=True),
    "dense-bn-no-bias": lambda dtype: helpers.mlp(dtype=dtype, seed=4, bn=True, bias=False),
    "residual": lambda dtype: helpers.residual_cnn(dtype=dtype, seed=5),
    "residual2": lambda dtype: helpers.residual_cnn(dtype=dtype, seed=5, branch=2),
}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("kind", list(BN_GRAPHS))
def test_batchnorm_folding_preserves_the_cnn(kind, dtype):
    graph = BN_GRAPHS[kind](dtype)
    assert graph.nodes_of("batchnorm")
    if "no-bias" in kind:
        assert all("bias" not in graph.node(bn.inputs[0]).params for bn in graph.nodes_of("batchnorm"))
    x = helpers.images(graph, 16, seed=6, dtype=dtype)
    before = logits(graph, x)
    params_before = {(n.name, k): v.clone() for n in graph.nodes for k, v in n.params.items()}
    folded = canonicalise(graph)
    assert not folded.nodes_of("batchnorm") and not folded.nodes_of("softmax")
    after = outputs(folded, x, folded.output)
    scale = float(before.abs().max())
    assert float((after - before).abs().max()) <= 1e-5 * scale
    assert after.dtype == dtype
    # the input graph is untouched
    assert len(graph.nodes_of("batchnorm")) > 0
    for n in graph.nodes:
        for k, v in n.params.items():
            assert torch.equal(v, params_before[(n.name, k)])


def test_batchnorm_folding_follows_eq_11_and_12():
    graph = helpers.chain_cnn(dtype=torch.float64, seed=1)
    conv, bn = graph.node("conv1"), graph.node("bn1").params
    eps = graph.node("bn1").attrs["eps"]
    folded = canonicalise(graph).node("conv1").params
    gain = bn["gamma"] / torch.sqrt(bn["var"] + eps)
    assert torch.allclose(folded["weight"], conv.params["weight"] * gain.view(-1, 1, 1, 1), rtol=1e-13, atol=0)
    assert torch.allclose(folded["bias"], gain * (conv.params["bias"] - bn["mean"]) + bn["beta"], rtol=1e-13, atol=1e-15)


def test_batchnorm_that_cannot_be_folded_becomes_an_exact_affine_node():
    graph = helpers.residual_cnn(dtype=torch.float64)
    # move the BN behind the add (pre-activation style): it no longer follows a conv or dense layer
    add, bn = graph.node("add"), graph.node("bn2")
    add.inputs = ["conv2", "relu1"]
    bn.inputs = ["add"]
    graph.node("relu2").inputs = ["bn2"]
    graph.nodes.remove(bn)
    graph.nodes.insert(graph.nodes.index(add) + 1, bn)
    canonical = canonicalise(graph)
    assert canonical.node("bn2").op == "affine" and not canonical.nodes_of("batchnorm")
    x = helpers.images(graph, 8, dtype=torch.float64)
    original = run_graph(graph, x)
    canonical_out = run_graph(canonical, x)
    if graph.node(graph.output).op == "softmax":
        canonical_out = torch.softmax(canonical_out, 1)
    assert torch.allclose(canonical_out, original, rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------------ 2. normalisation preserves the function

def site_of(net, spike_name):
    """The CNN node whose activation a spike node stands for."""
    names = {n.name for n in net.cnn.nodes}
    return spike_name if spike_name in names else spike_name[: -len("_spike")]


def clipped_cnn(net, x, clip_output=True):
    """CNN activations with each spiking site clipped to [0, λ] (a rate cannot exceed one spike per step)."""
    limits = {site_of(net, s): lam for s, lam in net.lambdas.items()}
    if not clip_output:
        del limits[net.cnn.output]
    seen = {}

    def apply(node, inputs):
        value = apply_cnn(node, inputs)
        if node.name in limits:
            value = value.clamp(0.0, limits[node.name])
        return value

    def observe(node, value):
        seen[node.name] = value

    with torch.no_grad():
        run_graph(net.cnn, x, apply=apply, observe=observe)
    return seen


def input_counts(net, x, steps):
    if net.method.encoding == "analog":
        return x * steps
    # Algorithm 1 fires ⌈x·t⌉ − 1 times in t steps (within one spike; checked below on a short train)
    return torch.clamp(torch.ceil(x * steps) - 1, min=0)


def rate_counts(net, x, steps):
    """Independent closed form: N = clip(⌊(V(0) + Σ Z + t·b_TRE)/V_thr⌋, 0, t) per spike node."""
    seen = {}

    def apply(node, inputs):
        if node.op == "spike":
            a = node.attrs
            v = a["v_init"] + node.params.get("initial_potential", 0.0) + inputs[0] + steps * a["step_current"]
            return torch.clamp(torch.floor(v / a["threshold"]), 0, steps)
        if node.op in ("conv2d", "dense") and "bias" in node.params:
            copy = Node(node.name, node.op, node.inputs, dict(node.params), node.attrs, node.shape)
            copy.params["bias"] = node.params["bias"] * steps
            return apply_cnn(copy, inputs)
        return apply_cnn(node, inputs)

    def observe(node, value):
        seen[node.name] = value

    with torch.no_grad():
        run_graph(net.graph, input_counts(net, x, steps), apply=apply, observe=observe)
    return seen


def test_algorithm1_count_formula():
    x = helpers.images(helpers.mlp(), 8, seed=3)
    literal = helpers.algorithm1_counts(x, 100.0, 57)
    formula = torch.clamp(torch.ceil(x * 57) - 1, min=0)
    assert float((literal - formula).abs().max()) <= 1.0
    assert float((literal == formula).double().mean()) > 0.9


RATE_CASES = [
    ("chain", "ecc", {}),
    ("chain", "rueckauer2017", {}),
    ("chain", "ecc", {"spiking_pools": False, "tre": "initial"}),
    ("residual", "ecc", {}),
    ("residual", "rueckauer2017", {"spiking_pools": False}),
    ("residual2", "ecc", {}),
    ("residual2", "rueckauer2017", {"tre": "initial"}),
    ("mlp", "ecc", {"tre": "off"}),
    ("mlp", "rueckauer2017", {"encoding": "algorithm1"}),
]


BUILDERS = {
    "chain": helpers.chain_cnn, "residual": helpers.residual_cnn, "mlp": helpers.mlp,
    "residual2": lambda dtype: helpers.residual_cnn(dtype=dtype, branch=2),
}


@pytest.mark.parametrize("kind,preset,options", RATE_CASES, ids=[f"{k}-{p}-{o}" for k, p, o in RATE_CASES])
def test_rates_reproduce_cnn_activations(kind, preset, options):
    cnn = BUILDERS[kind](dtype=torch.float64)
    calibration = helpers.images(cnn, 64, seed=21)
    net = convert(cnn, calibration, get_method(preset, **options), 10 ** 6)
    x = calibration[:16]
    steps = 10 ** 6
    counts = rate_counts(net, x, steps)
    expected = clipped_cnn(net, x)
    for spike, lam in net.lambdas.items():
        rate = counts[spike] / steps
        target = expected[site_of(net, spike)]
        error = float((rate * lam - target).abs().max())
        assert error <= 1e-4 * lam, f"{spike}: rate·λ differs from the CNN activation by {error} (λ = {lam})"
        assert float(target.max()) > 0.1 * lam  # the site is active: the check means something
    # the library's closed form at a large T predicts what the (clipped) CNN predicts
    record = closed_form(net, x, [20000], readout="potential")
    target = clipped_cnn(net, x, clip_output=False)[net.cnn.output].argmax(1)
    assert float((record.predictions[0] == target).double().mean()) >= 0.9


def plain_chain(dtype=torch.float64):
    return helpers.mlp(dtype=dtype, seed=11, sizes=(10, 9, 7, 4))


def true_activations(graph, x, sites):
    seen = outputs(graph, x)
    return {s: seen[s] for s in sites}


def test_ecc_current_normalisation_eq_8():
    cnn = plain_chain()
    calibration = helpers.images(cnn, 40, seed=12)
    net = convert(cnn, calibration, get_method("ecc"), 64)
    kappa = 100.0
    acts = true_activations(cnn, calibration, ["relu1", "relu2", "fc3"])
    lam = {k: float(v.max()) for k, v in acts.items()}
    names = {"relu1": "relu1", "relu2": "relu2", "fc3": "fc3_spike"}
    for site, spike in names.items():
        assert net.lambdas[spike] == pytest.approx(lam[site], rel=1e-7, abs=0)  # λ_n = max activation (Eq. 7)
    for node in net.graph.nodes_of("spike"):
        assert node.attrs["threshold"] == kappa                           # V_thr = κ = 100
        assert node.attrs["reset"] == "subtract"
        assert node.attrs["step_current"] == pytest.approx(0.5 * kappa / 64, rel=1e-12)
    previous = {"fc1": 1.0, "fc2": lam["relu1"], "fc3": lam["relu2"]}     # λ_0 = 1 for inputs in [0, 1]
    current = {"fc1": lam["relu1"], "fc2": lam["relu2"], "fc3": lam["fc3"]}
    for layer in ("fc1", "fc2", "fc3"):
        original, converted = cnn.node(layer).params, net.graph.node(layer).params
        factor = kappa * previous[layer] / current[layer]
        assert torch.allclose(converted["weight"], factor * original["weight"], rtol=1e-6, atol=0)  # Eq. 8
        assert torch.allclose(converted["bias"], kappa * original["bias"] / current[layer], rtol=1e-6, atol=0)


def test_ecc_normalises_pools_and_convolutions():
    """On the conv chain: the average pool's neurons get scale κ·λ_relu1/λ_pool, the next conv
    κ·λ_pool/λ_relu2 (weights) and κ/λ_relu2 (bias)."""
    cnn = helpers.chain_cnn(dtype=torch.float64)
    calibration = helpers.images(cnn, 40, seed=13)
    net = convert(cnn, calibration, get_method("ecc"), 64)
    folded = canonicalise(cnn)
    seen = outputs(folded, calibration)
    lam = {k: float(seen[k].max()) for k in ("relu1", "pool1", "relu2", "relu3", "fc2")}
    kappa = 100.0
    assert net.graph.node("pool1").attrs["scale"] == pytest.approx(kappa * lam["relu1"] / lam["pool1"], rel=1e-6)
    conv1 = net.graph.node("conv1").params
    assert torch.allclose(conv1["weight"], kappa / lam["relu1"] * folded.node("conv1").params["weight"], rtol=1e-6)
    conv2 = net.graph.node("conv2").params
    assert torch.allclose(conv2["weight"], kappa * lam["pool1"] / lam["relu2"] * folded.node("conv2").params["weight"],
                          rtol=1e-6)
    assert torch.allclose(conv2["bias"], kappa / lam["relu2"] * folded.node("conv2").params["bias"], rtol=1e-6)
    assert net.lambdas["fc2_spike"] == pytest.approx(lam["fc2"], rel=1e-7)


def test_rueckauer2017_weight_normalisation_with_percentile():
    cnn = plain_chain()
    calibration = helpers.images(cnn, 300, seed=14)
    net = convert(cnn, calibration, get_method("rueckauer2017"), 64, batch_size=37)
    acts = true_activations(cnn, calibration, ["relu1", "relu2", "fc3"])
    lam = {}
    for site, value in acts.items():
        positive = value[value > 0].numpy()
        lam[site] = float(np.percentile(positive, 99.9))
        assert lam[site] < float(value.max())   # the percentile is not the maximum here
    assert net.lambdas["relu1"] == pytest.approx(lam["relu1"], rel=1e-6)
    assert net.lambdas["relu2"] == pytest.approx(lam["relu2"], rel=1e-6)
    assert net.lambdas["fc3_spike"] == pytest.approx(lam["fc3"], rel=1e-6)
    for node in net.graph.nodes_of("spike"):
        assert node.attrs["threshold"] == 1.0
        assert node.attrs["step_current"] == 0.0 and node.attrs["v_init"] == 0.0
    previous = {"fc1": 1.0, "fc2": lam["relu1"], "fc3": lam["relu2"]}
    current = {"fc1": lam["relu1"], "fc2": lam["relu2"], "fc3": lam["fc3"]}
    for layer in ("fc1", "fc2", "fc3"):
        original, converted = cnn.node(layer).params, net.graph.node(layer).params
        assert torch.allclose(converted["weight"], previous[layer] / current[layer] * original["weight"], rtol=1e-5)
        assert torch.allclose(converted["bias"], original["bias"] / current[layer], rtol=1e-5)


@pytest.mark.parametrize("percentile", [None, 99.9, 99.0, 50.0, 100.0])
@pytest.mark.parametrize("batch_size", [7, 1000])
def test_calibrate_matches_numpy(percentile, batch_size):
    cnn = canonicalise(helpers.chain_cnn(dtype=torch.float32, seed=4))
    x = helpers.images(cnn, 90, seed=15, dtype=torch.float32)
    sites = ["relu1", "pool1", "relu2", "relu3", "fc2"]
    lambdas = calibrate(cnn, sites, x, percentile=percentile, batch_size=batch_size)
    seen = outputs(cnn, x)
    for site in sites:
        values = seen[site].double().numpy()
        if percentile is None:
            assert lambdas[site] == float(values.max())   # exactly the true maximum
        else:
            expected = float(np.percentile(values[values > 0], percentile))
            assert lambdas[site] == pytest.approx(expected, rel=1e-6), site


# ------------------------------------------------------------------ 3. CMB off folds without ε

def test_cmb_off_folds_without_eps():
    cnn = helpers.chain_cnn(dtype=torch.float64, seed=6, tiny_var=True)
    bn = cnn.node("bn1")
    var, eps = bn.params["var"], bn.attrs["eps"]
    assert float(var.max()) < eps   # ε matters
    with_eps = fold_batchnorm(cnn.clone(), use_eps=True)
    without = fold_batchnorm(cnn.clone(), use_eps=False)
    ratio = torch.sqrt((var + eps) / var)
    w_eps, w_no = with_eps.node("conv1").params["weight"], without.node("conv1").params["weight"]
    assert torch.allclose(w_no, w_eps * ratio.view(-1, 1, 1, 1), rtol=1e-12)
    # the folded conv's outputs: (y − β) scales by √((σ² + ε)/σ²) per channel
    x = helpers.images(cnn, 8, seed=16)
    beta = bn.params["beta"].view(1, -1, 1, 1)
    y_eps, y_no = outputs(with_eps, x, "conv1"), outputs(without, x, "conv1")
    assert torch.allclose(y_no - beta, (y_eps - beta) * ratio.view(1, -1, 1, 1), rtol=1e-9, atol=1e-9)
    # with ε the folded CNN is the CNN; without ε it is not (CMB's point)
    original = logits(cnn, x)
    assert torch.allclose(outputs(with_eps, x, "fc2"), original, rtol=1e-10, atol=1e-10)
    assert float((outputs(without, x, "fc2") - original).abs().max()) > 1e-2 * float(original.abs().max())
    # conversion: cmb=False takes its weights from the ε-free folding, and keeps the true CNN as reference
    calibration = helpers.images(cnn, 32, seed=17)
    on = convert(cnn, calibration, get_method("ecc"), 32)
    off = convert(cnn, calibration, get_method("ecc", cmb=False), 32)
    assert not off.method.cmb
    factor = on.lambdas["relu1"] / off.lambdas["relu1"]
    assert torch.allclose(off.graph.node("conv1").params["weight"],
                          on.graph.node("conv1").params["weight"] * ratio.view(-1, 1, 1, 1) * factor, rtol=1e-9)
    assert torch.allclose(outputs(off.cnn, x, off.cnn.output), original, rtol=1e-10, atol=1e-10)
    assert off.lambdas["relu1"] == pytest.approx(float(outputs(without, calibration, "relu1").max()), rel=1e-7)


# ------------------------------------------------------------------ 4. λ = 0

def dead_net():
    cnn = helpers.mlp(dtype=torch.float64, seed=8, sizes=(6, 5, 4, 3))
    fc2 = cnn.node("fc2")
    fc2.params["weight"] = torch.zeros_like(fc2.params["weight"])
    fc2.params["bias"] = -torch.ones_like(fc2.params["bias"])    # relu2 never activates
    return cnn


@pytest.mark.parametrize("preset", ["ecc", "rueckauer2017"])
def test_lambda_zero_is_a_one_line_model_error(preset):
    cnn = dead_net()
    x = helpers.images(cnn, 20, seed=18)
    with pytest.raises(ModelError) as info:
        convert(cnn, x, get_method(preset), 32)
    message = str(info.value)
    assert "\n" not in message and "λ = 0" in message and "relu2" in message
    # a healthy version of the same net converts
    healthy = helpers.mlp(dtype=torch.float64, seed=8, sizes=(6, 5, 4, 3))
    net = convert(healthy, x, get_method(preset), 32)
    assert all(v > 0 and math.isfinite(v) for v in net.lambdas.values())


def test_lambda_zero_from_calibrate():
    cnn = canonicalise(dead_net())
    x = helpers.images(cnn, 10, seed=19)
    with pytest.raises(ModelError):
        calibrate(cnn, ["relu1", "relu2"], x)
    assert calibrate(cnn, ["relu1"], x)["relu1"] > 0
