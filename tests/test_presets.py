"""Every preset's defining property on small hand-built networks, b-bit quantisation, and the
CLI switches --alpha, --bits and --rounding.

Networks come from ``tests/helpers.py`` (float64 unless a test says otherwise). λ_n is checked
against activations computed here, from the folded CNN, independently of the converter.
"""

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import helpers  # noqa: E402
from helpers import one_thread  # noqa: E402,F401  (autouse fixture)

from spkeras.cli import build_parser, main  # noqa: E402
from spkeras.options import method_overrides  # noqa: E402
from spkeras.encoding import make_encoder  # noqa: E402
from spkeras.errors import ConfigError  # noqa: E402
from spkeras.ir import Node  # noqa: E402
from spkeras.method import Method  # noqa: E402
from spkeras.methods import PRESETS, get_method  # noqa: E402
from spkeras.methods.framework import convert  # noqa: E402
from spkeras.ops import apply_cnn, run_graph  # noqa: E402
from spkeras.passes import canonicalise  # noqa: E402
from spkeras.simulate import MaxCurrent, _Neurons, _Value, simulate  # noqa: E402
from spkeras.snn import load_snn  # noqa: E402

# spiking sites of helpers.chain_cnn (ReLUs, the average pool, the output) and their spike nodes
CHAIN_SITES = ["relu1", "pool1", "relu2", "relu3", "fc2"]
CHAIN_SPIKES = {"relu1": "relu1", "pool1": "pool1_spike", "relu2": "relu2", "relu3": "relu3", "fc2": "fc2_spike"}
CHAIN_LAYERS = ["conv1", "conv2", "fc1", "fc2"]   # the layers with weights, after BN folding


def activations(graph, x):
    """Every node's output on ``x``."""
    seen = {}

    def observe(node, value):
        seen[node.name] = value

    with torch.no_grad():
        run_graph(graph, x, observe=observe)
    return seen


def chain_and_images(n=40, seed=0):
    cnn = helpers.chain_cnn(dtype=torch.float64, seed=seed)
    return cnn, helpers.images(cnn, n, seed=seed + 30)


def thresholds(net):
    return {node.name: node.attrs["threshold"] for node in net.spike_nodes}


def test_every_preset_is_tested():
    assert set(PRESETS) == {"ecc", "ecc+", "rueckauer2017", "rmp", "rmp0.8", "rmp0.9", "spikenorm", "diehl2015", "cao2015"}


# ------------------------------------------------------------------ ecc and rueckauer2017

@pytest.mark.parametrize("timesteps", [32, 256])
def test_ecc_thresholds_are_kappa_and_tre_spreads_eta_kappa_over_t(timesteps):
    cnn, calib = chain_and_images()
    net = convert(cnn, calib, get_method("ecc"), timesteps)
    seen = activations(canonicalise(cnn), calib)
    assert len(net.spike_nodes) == len(CHAIN_SITES)
    for site, spike in CHAIN_SPIKES.items():
        node = net.graph.node(spike)
        assert node.attrs["threshold"] == 100.0                                   # V_thr = κ = 100 (CN)
        assert node.attrs["step_current"] == pytest.approx(0.5 * 100.0 / timesteps, rel=1e-12)   # Eq. 9
        assert node.attrs["v_init"] == 0.0 and node.attrs["reset"] == "subtract"
        assert net.lambdas[spike] == pytest.approx(float(seen[site].max()), rel=1e-6)  # λ = max activation
    assert net.method.encoding == "algorithm1" and net.method.kappa0 == 100.0 and net.method.cmb


def test_rueckauer2017_threshold_one_and_percentile_lambda():
    cnn, calib = chain_and_images(n=200)
    net = convert(cnn, calib, get_method("rueckauer2017"), 64)
    seen = activations(canonicalise(cnn), calib)
    for site, spike in CHAIN_SPIKES.items():
        values = seen[site].numpy()
        expected = float(np.percentile(values[values > 0], 99.9))
        assert expected < float(values.max())              # the percentile is not the maximum here
        assert net.lambdas[spike] == pytest.approx(expected, rel=1e-6)
        attrs = net.graph.node(spike).attrs
        assert attrs["threshold"] == 1.0 and attrs["step_current"] == 0.0 and attrs["reset"] == "subtract"
    assert net.method.encoding == "analog" and net.method.tre == "off"


# ------------------------------------------------------------------ rmp, rmp0.8, rmp0.9

@pytest.mark.parametrize("preset,alpha", [("rmp", 1.0), ("rmp0.8", 0.8), ("rmp0.9", 0.9)])
def test_rmp_keeps_weights_and_balances_thresholds(preset, alpha):
    cnn, calib = chain_and_images()
    net = convert(cnn, calib, get_method(preset), 64)
    folded = canonicalise(cnn)
    for layer in CHAIN_LAYERS:   # threshold balancing: weights exactly as in the folded CNN
        assert torch.equal(net.graph.node(layer).params["weight"], folded.node(layer).params["weight"]), layer
    assert net.graph.node("pool1").attrs.get("scale", 1.0) == 1.0
    seen = activations(folded, calib)
    lam = {site: float(seen[site].max()) for site in CHAIN_SITES}
    below = 1.0                                              # λ_0 = 1: input in [0, 1]
    for site in CHAIN_SITES:
        attrs = net.graph.node(CHAIN_SPIKES[site]).attrs
        # α·λ_n/u_{n-1}, where a spike of layer n−1 stands for u_{n-1} = α·λ_{n-1}
        assert attrs["threshold"] == pytest.approx(alpha * lam[site] / below, rel=1e-6), site
        assert attrs["reset"] == "subtract" and attrs["step_current"] == 0.0
        below = alpha * lam[site]
    # biases are a per-step current in the units of the layer's input: b/(α·λ_{n-1})
    assert torch.allclose(net.graph.node("fc1").params["bias"],
                          folded.node("fc1").params["bias"] / (alpha * lam["relu2"]), rtol=1e-6)


def test_rmp_shorthands_are_rmp_with_alpha():
    for name, alpha in (("rmp0.8", 0.8), ("rmp0.9", 0.9)):
        assert get_method(name) == get_method("rmp", threshold_scale=alpha).with_options(name=name)
    cnn, calib = chain_and_images()
    plain = convert(cnn, calib, get_method("rmp"), 64)
    scaled = convert(cnn, calib, get_method("rmp0.8"), 64)
    # only the first layer's threshold changes: above it, the α of the spikes below cancels
    first = plain.spike_nodes[0].name
    for name, value in thresholds(plain).items():
        assert thresholds(scaled)[name] == pytest.approx(0.8 * value if name == first else value, rel=1e-12)
    # what α does: every hidden layer's rate tends to clip(a/(α·λ), 0, 1), clipping at α·λ without compounding
    caps = {site: 0.8 * scaled.lambdas[spike] for site, spike in CHAIN_SPIKES.items()}
    clipped = {}

    def clip_sites(node, inputs):  # the CNN with every site clipped at α·λ_n
        value = apply_cnn(node, inputs)
        return value.clamp(max=caps[node.name]) if node.name in caps else value

    run_graph(canonicalise(cnn), calib, apply=clip_sites, observe=lambda n, v: clipped.__setitem__(n.name, v))
    steps = 2000
    counts = helpers.simulate_counting(scaled, calib, steps).neuron_counts
    hidden = [site for site, spike in CHAIN_SPIKES.items() if spike != scaled.graph.output]
    for site in hidden:
        rate = clipped[site] / caps[site]
        assert float((counts[CHAIN_SPIKES[site]] / steps - rate).abs().max()) < 0.01, site
    assert any(float(clipped[site].max()) < float(activations(canonicalise(cnn), calib)[site].max()) for site in hidden)


# ------------------------------------------------------------------ spikenorm

def test_reset_to_zero_zeroes_the_potential():
    """One neuron, V_thr = 1, constant current 0.7: V = 0.7, 1.4 → spike → 0, 0.7, 1.4 → 0 …
    (reset by subtraction would leave 0.4 after the first spike)."""
    potentials = {}
    for reset in ("zero", "subtract"):
        node = Node("n", "spike", ["x"], {}, {"threshold": 1.0, "reset": reset, "v_init": 0.0, "step_current": 0.0},
                    (1,))
        neuron = _Neurons(node, 1, "cpu", dtype=torch.float64)
        trace, spikes = [], []
        for _ in range(4):
            spikes.append(float(neuron.run(_Value(torch.tensor([[0.7]], dtype=torch.float64), True), 1)[0, 0, 0]))
            trace.append(float(neuron.v[0, 0]))
        potentials[reset] = (spikes, trace)
    assert potentials["zero"][0] == [0.0, 1.0, 0.0, 1.0]
    assert potentials["zero"][1] == pytest.approx([0.7, 0.0, 0.7, 0.0], abs=1e-15)
    assert potentials["subtract"][1] == pytest.approx([0.7, 0.4, 0.1, 0.8], abs=1e-12)


def test_spikenorm_thresholds_are_the_largest_current_with_lower_layers_converted():
    cnn, calib = chain_and_images(n=60, seed=2)
    method = get_method("spikenorm")
    assert method.reset == "zero" and method.encoding == "poisson" and method.threshold_rule == "balance"
    net = convert(cnn, calib, method, 64)
    folded = canonicalise(cnn)
    for layer in CHAIN_LAYERS:   # weights unchanged
        assert torch.equal(net.graph.node(layer).params["weight"], folded.node(layer).params["weight"]), layer
    images = calib[: method.spikenorm_images]
    for node in net.spike_nodes:
        assert node.attrs["reset"] == "zero"
        probe = MaxCurrent(node.name)   # a full simulation of the converted network, not the layer walk
        simulate(net, images, method.spikenorm_timesteps, [probe])
        assert node.attrs["threshold"] == pytest.approx(probe.value, rel=1e-9), node.name
    # the thresholds are not those of plain threshold balancing (the calibration simulation matters)
    balanced = thresholds(convert(cnn, calib, get_method("rmp"), 64))
    assert any(abs(thresholds(net)[k] / v - 1) > 1e-3 for k, v in balanced.items())


# ------------------------------------------------------------------ diehl2015

def test_diehl2015_data_based_lambda_is_the_maximum():
    cnn, calib = chain_and_images()
    net = convert(cnn, calib, get_method("diehl2015"), 64)
    seen = activations(canonicalise(cnn), calib)
    for site, spike in CHAIN_SPIKES.items():
        assert net.lambdas[spike] == pytest.approx(float(seen[site].max()), rel=1e-6)
        attrs = net.graph.node(spike).attrs
        assert attrs["threshold"] == 1.0 and attrs["reset"] == "zero"
    assert net.method.encoding == "poisson"


def test_diehl2015_model_based_lambda_on_an_mlp_by_hand():
    """λ_n = max of the bound propagated through positive weights and biases from inputs of 1."""
    cnn = helpers.mlp(dtype=torch.float64, seed=7, sizes=(12, 10, 8, 3))
    net = convert(cnn, None, get_method("diehl2015", statistic="model"), 64)
    bound = torch.ones(12, dtype=torch.float64)
    expected = {}
    for k, spike in ((1, "relu1"), (2, "relu2"), (3, "fc3_spike")):
        params = cnn.node(f"fc{k}").params
        bound = params["weight"].clamp(min=0) @ bound + params["bias"].clamp(min=0)
        expected[spike] = float(bound.max())
    assert net.lambdas == pytest.approx(expected, rel=1e-12)


def test_diehl2015_model_based_lambda_is_a_bound_attained_by_a_white_image():
    cnn = helpers.chain_cnn(dtype=torch.float64, seed=5, positive=True, bn=False)
    calib = helpers.images(cnn, 40, seed=6)
    model_based = convert(cnn, None, get_method("diehl2015", statistic="model"), 64)
    data_based = convert(cnn, calib, get_method("diehl2015"), 64)
    white = activations(canonicalise(cnn), torch.ones((1, *cnn.input.shape), dtype=torch.float64))
    for site, spike in CHAIN_SPIKES.items():
        assert model_based.lambdas[spike] >= data_based.lambdas[spike]          # an upper bound of the data
        assert model_based.lambdas[spike] == pytest.approx(float(white[site].max()), rel=1e-9)   # and attained


# ------------------------------------------------------------------ cao2015

def test_cao2015_keeps_trained_weights_and_thresholds_one():
    cnn, _ = chain_and_images()
    net = convert(cnn, None, get_method("cao2015"), 64)    # needs no calibration
    folded = canonicalise(cnn)
    for layer in CHAIN_LAYERS:
        for key in ("weight", "bias"):   # weights as trained; biases as a per-step current, unscaled
            assert torch.equal(net.graph.node(layer).params[key], folded.node(layer).params[key]), (layer, key)
    for node in net.spike_nodes:
        assert node.attrs["threshold"] == 1.0 and node.attrs["reset"] == "zero" and node.attrs["step_current"] == 0.0
    assert net.method.encoding == "poisson"


def test_poisson_input_rate_is_the_pixel_value_and_reproducible():
    method = get_method("cao2015")
    x = torch.tensor([0.0, 0.1, 0.25, 0.5, 0.77, 0.9, 1.0]).repeat(2, 1).view(2, 1, 1, 7)
    ids = torch.tensor([3, 8])
    steps = 20000
    spikes = make_encoder(x, method, ids, seed=4).next(steps)
    rate = spikes.mean(0)
    assert float((rate - x).abs().max()) < 0.02            # 5σ of a binomial rate over 20000 steps
    assert float(rate[..., 0].max()) == 0.0 and float(rate[..., -1].min()) == 1.0
    again = make_encoder(x, method, ids, seed=4).next(steps)
    assert torch.equal(spikes, again)                        # seeded: reproducible
    alone = make_encoder(x[1:], method, ids[1:], seed=4).next(steps)
    assert torch.equal(spikes[:, 1:], alone)                 # depends on the image id, not the batch
    other = make_encoder(x, method, ids, seed=5).next(steps)
    assert not torch.equal(spikes, other)


# ------------------------------------------------------------------ quantisation (section 4.4)

def quantised_pair(bits, rounding, dtype=torch.float64, preset="ecc", seed=3):
    cnn = helpers.chain_cnn(dtype=dtype, seed=seed)
    calib = helpers.images(cnn, 60, seed=seed + 1, dtype=dtype)
    plain = convert(cnn, calib, get_method(preset), 64)
    quantised = convert(cnn, calib, get_method(preset, bits=bits, rounding=rounding), 64)
    return cnn, calib, plain, quantised


@pytest.mark.parametrize("bits", [4, 8, 16])
@pytest.mark.parametrize("rounding", ["nearest", "trunc"])
def test_quantised_weights_and_thresholds_are_integers_in_range(bits, rounding):
    _, _, plain, net = quantised_pair(bits, rounding)
    top = 2 ** (bits - 1)
    for neuron in net.spike_nodes:
        layer = net.graph.node(neuron.inputs[0])
        if layer.op == "avgpool":     # uniform weight scale/k² = 2^(b-1)
            kh, kw = layer.attrs["kernel"]
            assert layer.attrs["scale"] / (kh * kw) == top
        else:
            for key in ("weight", "bias"):
                values = layer.params[key]
                assert torch.equal(values, torch.round(values)), (layer.name, key)
            weight = layer.params["weight"]
            assert float(weight.abs().max()) <= top and float(weight.abs().max()) >= top - 1
        assert neuron.attrs["threshold"] == round(neuron.attrs["threshold"]) >= 1
    # the weights are the unquantised ones × 2^(b-1)/max|w|, rounded
    for neuron in net.spike_nodes:
        layer, original = net.graph.node(neuron.inputs[0]), plain.graph.node(neuron.inputs[0])
        if layer.op == "avgpool":
            continue
        exact = original.params["weight"] * top / float(original.params["weight"].abs().max())
        error = layer.params["weight"] - exact
        if rounding == "nearest":
            assert float(error.abs().max()) <= 0.5 + 1e-9
        else:                         # towards zero, by less than one
            assert float(error.abs().max()) < 1 and bool((layer.params["weight"].abs() <= exact.abs() + 1e-9).all())
        thr = plain.graph.node(neuron.name).attrs["threshold"]
        scaled = thr * top / float(original.params["weight"].abs().max())
        expected = max(1.0, float(np.round(scaled)) if rounding == "nearest" else float(np.trunc(scaled)))
        assert neuron.attrs["threshold"] == pytest.approx(expected, abs=1e-6)


def test_trunc_and_nearest_differ_as_expected():
    _, _, _, nearest = quantised_pair(4, "nearest")
    _, _, _, trunc = quantised_pair(4, "trunc")
    for layer in CHAIN_LAYERS:
        a, b = nearest.graph.node(layer).params["weight"], trunc.graph.node(layer).params["weight"]
        assert bool((b.abs() <= a.abs()).all())                 # trunc never rounds away from zero
        assert float((a - b).abs().max()) <= 1
    differ = sum(int((nearest.graph.node(x).params["weight"] != trunc.graph.node(x).params["weight"]).sum())
                 for x in CHAIN_LAYERS)
    assert differ > 0


@pytest.mark.parametrize("preset", ["ecc", "rueckauer2017"])
def test_32_bit_quantisation_reproduces_the_unquantised_spikes(preset):
    """Simulated in float64, so that integers up to 2^31·κ are exact."""
    cnn, _, plain, net = quantised_pair(32, "trunc", preset=preset)
    x = helpers.images(cnn, 60, seed=40)
    assert x.dtype == torch.float64 and net.graph.node("conv1").params["weight"].dtype == torch.float64
    a = helpers.simulate_counting(plain, x, 64)
    b = helpers.simulate_counting(net, x, 64)
    same = sum(int((a.neuron_counts[k] == b.neuron_counts[k]).sum()) for k in a.neuron_counts)
    total = sum(v.numel() for v in a.neuron_counts.values())
    assert same / total >= 0.999
    assert float(a.spikes[-1].sum()) > 0.05 * total           # the network spikes: the check means something
    assert torch.equal(a.predictions[-1], b.predictions[-1])
    assert float((a.predictions == b.predictions).double().mean()) >= 0.999


def test_few_bits_change_the_spikes():
    cnn, _, plain, net = quantised_pair(3, "trunc")
    x = helpers.images(cnn, 30, seed=41)
    a = helpers.simulate_counting(plain, x, 32)
    b = helpers.simulate_counting(net, x, 32)
    assert any(not torch.equal(a.neuron_counts[k], b.neuron_counts[k]) for k in a.neuron_counts)


# ------------------------------------------------------------------ CLI switches

def test_cli_alpha_bits_rounding_override_the_preset():
    args = build_parser().parse_args(["convert", "m.keras", "-o", "x.snn", "--method", "rmp", "--alpha", "0.8",
                                      "--bits", "8", "--rounding", "nearest", "--statistic", "model"])
    method = get_method(args.method, **method_overrides(args))
    assert (method.threshold_scale, method.bits, method.rounding, method.statistic) == (0.8, 8, "nearest", "model")
    plain = get_method("ecc", **method_overrides(build_parser().parse_args(["convert", "m.keras", "-o", "x.snn"])))
    assert plain == get_method("ecc")
    for bits in ("1", "33"):
        args = build_parser().parse_args(["convert", "m.keras", "-o", "x.snn", "--bits", bits])
        with pytest.raises(ConfigError, match="bits must be between 2 and 32"):
            get_method(args.method, **method_overrides(args))
    with pytest.raises(SystemExit):
        build_parser().parse_args(["convert", "m.keras", "-o", "x.snn", "--rounding", "floor"])
    for flags, expected in ((["--readout-delay", "0"], (0, 0.0)), (["--readout-delay-fraction", "0.5"], (0, 0.5))):
        args = build_parser().parse_args(["convert", "m.keras", "-o", "x.snn", "--method", "ecc+", *flags])
        method = get_method(args.method, **method_overrides(args))
        assert (method.readout_delay, method.readout_delay_fraction) == expected


def test_cli_convert_with_alpha_and_bits(tmp_path, capsys):
    from spkeras.demo import asset

    out = tmp_path / "net.snn"
    code = main(["convert", asset("mnist_cnn.keras"), "--calib", asset("mnist_calib.npz"), "--calib-n", "50",
                 "--method", "rmp", "--alpha", "0.8", "--bits", "9", "--rounding", "nearest", "-o", str(out),
                 "--quiet"])
    assert code == 0
    net = load_snn(out)
    assert (net.method.threshold_scale, net.method.bits, net.method.rounding) == (0.8, 9, "nearest")
    for neuron in net.spike_nodes:
        layer = net.graph.node(neuron.inputs[0])
        if layer.op in ("conv2d", "dense"):
            assert float(layer.params["weight"].abs().max()) <= 256
            assert torch.equal(layer.params["weight"], torch.round(layer.params["weight"]))
    bad = ["convert", asset("mnist_cnn.keras"), "--method", "ecc", "--bits", "40", "-o", str(tmp_path / "y.snn")]
    assert main(bad) == 2
    assert "bits must be between 2 and 32" in capsys.readouterr().err
    assert not (tmp_path / "y.snn").exists()


def test_ecc_plus_is_ecc_with_the_low_latency_switches():
    """ecc+ keeps ECC's CN, CMB and λ and changes only the time-stepping switches."""
    from spkeras.methods import get_method

    ecc, plus = get_method("ecc"), get_method("ecc+")
    changed = {k for k, v in plus.to_dict().items() if v != ecc.to_dict()[k]}
    assert changed == {"name", "citation", "tre", "spiking_pools", "readout", "delay_calibration_images",
                       "step_bias", "rate_calibration", "rate_calibration_images", "potential_share"}
    assert plus.tre == "initial" and not plus.spiking_pools and plus.readout == "potential"


@pytest.mark.parametrize("readout", ["potential", "spikes"])
def test_scores_give_every_delayed_readout(readout):
    """S(t) kept by the simulator gives, for any delay K, what a run with readout delay K predicts."""
    from spkeras.methods.readout_calibration import delayed_predictions
    from spkeras.simulate import OutputScores, simulate

    cnn, images = chain_and_images()
    timesteps = 12
    net = convert(cnn, images, get_method("ecc", readout=readout, tre="initial"), timesteps)
    recorder = OutputScores()
    simulate(net, images, timesteps, [recorder], chunk=5)
    scores = recorder.scores
    assert scores.shape == (timesteps, len(images), net.graph.node(net.graph.output).shape[0])
    assert torch.equal(scores.argmax(-1), simulate(net, images, timesteps).predictions)
    for delay in (0, 1, 5, 11):
        net.method = net.method.with_options(readout_delay=delay)
        assert torch.equal(delayed_predictions(scores, delay), simulate(net, images, timesteps).predictions[-1])


def test_readout_delay_is_chosen_by_agreement_on_calibration_images():
    """The chosen fraction has the best agreement with the CNN among all candidates, each run
    separately with its own delay (ties: the shortest), whatever delay the network had before;
    conversion makes the same choice."""
    from spkeras.methods.readout_calibration import DELAY_FRACTIONS, calibrate_readout_delay
    from spkeras.ops import run_graph
    from spkeras.simulate import simulate

    cnn, images = chain_and_images(n=60)
    timesteps = 16
    net = convert(cnn, images, get_method("ecc+", rate_calibration=0, delay_calibration_images=0), timesteps)
    cnn_predictions = run_graph(net.cnn, images).argmax(1)
    agreement = {}
    for fraction in DELAY_FRACTIONS:
        net.method = net.method.with_options(readout_delay=int(fraction * timesteps))
        agreement[fraction] = int((simulate(net, images, timesteps).predictions[-1] == cnn_predictions).sum())
    assert len(set(agreement.values())) > 1, "every delay agrees equally: the test cannot tell them apart"
    chosen = calibrate_readout_delay(net, images).method
    best = min(f for f in DELAY_FRACTIONS if agreement[f] == max(agreement.values()))
    assert (chosen.readout_delay_fraction, chosen.readout_delay) == (best, int(best * timesteps))
    converted_net = convert(cnn, images, get_method("ecc+", rate_calibration=0, delay_calibration_images=60), timesteps)
    assert converted_net.method.readout_delay == int(best * timesteps)


def test_ecc_plus_delay_scales_with_t_and_rate_calibration_reduces_rate_error():
    from spkeras.methods.rate_calibration import channel_means, rate_model_means
    from spkeras.simulate import simulate

    cnn, calib = chain_and_images()
    timesteps = 16
    plain = convert(cnn, calib, get_method("ecc+", rate_calibration=0, step_bias=False), timesteps)
    tuned = convert(cnn, calib, get_method("ecc+"), timesteps)
    assert tuned.method.readout_delay == int(timesteps * tuned.method.readout_delay_fraction)
    explicit = get_method("ecc+", readout_delay=0)
    assert (explicit.readout_delay, explicit.readout_delay_fraction, explicit.delay_calibration_images) == (0, 0, 0), \
        "a delay in steps replaces the preset's choice"
    assert convert(cnn, calib, get_method("ecc+", readout_delay=3, rate_calibration=0), timesteps).method.readout_delay == 3
    assert get_method("ecc+", readout_delay_fraction=0.5).readout_delay_fraction == 0.5
    with pytest.raises(ConfigError, match="not both"):
        get_method("ecc+", readout_delay=2, readout_delay_fraction=0.5)
    images = calib[: tuned.method.rate_calibration_images]
    targets, _ = rate_model_means(plain, images)

    def rate_error(net):
        counts = helpers.simulate_counting(net, images, timesteps).neuron_counts
        hidden = [n.name for n in net.spike_nodes if n.name != net.graph.output]
        return sum(float((channel_means(counts[h]) / timesteps - targets[h]).abs().sum()) for h in hidden)

    assert rate_error(tuned) < rate_error(plain)
    by_potential = convert(cnn, calib, get_method("ecc+", potential_share=1.0, rate_calibration=2), timesteps)
    assert all("initial_potential" in n.params for n in by_potential.spike_nodes if n.name != by_potential.graph.output)
    assert rate_error(by_potential) < rate_error(plain)


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(Method) if isinstance(f.default, bool)])
def test_on_off_switches_refuse_anything_but_a_bool(field):
    """An on/off switch given a string ("False", "off") or a number is refused in one line rather
    than read as true."""
    from spkeras.methods import get_method

    for value in ("False", "off", 0):
        with pytest.raises(ConfigError, match=f"{field} is on or off"):
            get_method("ecc", **{field: value})
    assert getattr(get_method("ecc", **{field: False}), field) is False
