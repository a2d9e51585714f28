"""End-to-end: Python API, CLI, .snn files and the demo, on the demo network (and VGG-16 if shared)."""

import json

import pytest
import torch

import spkeras
from spkeras import cli
from spkeras.demo import asset, run_demo
from spkeras.snn import load_snn, save_snn

from .conftest import require_shared

MODEL, DATA, CALIB = asset("mnist_cnn.keras"), asset("mnist_test.npz"), asset("mnist_calib.npz")

REQUIRED_KEYS = {"method", "mode", "timesteps", "n", "cnn_accuracy", "snn_accuracy", "spikes_per_layer", "synops",
                 "macs", "energy_pj", "timings", "agreement", "input_macs"}


@pytest.fixture(scope="module")
def ecc_net():
    return spkeras.convert(MODEL, CALIB, method="ecc", timesteps=24, calib_n=200)


def test_api_evaluate_reports_every_timestep(ecc_net):
    result = spkeras.evaluate(ecc_net, DATA, timesteps=24, n=40)
    assert result.mode == "simulate" and result.n == 40
    assert len(result.snn_accuracy) == 24 and all(a is not None for a in result.snn_accuracy)
    assert 0.0 <= min(result.snn_accuracy) and max(result.snn_accuracy) <= 1.0
    mops = result.synops["mops_per_image"]
    assert all(b >= a for a, b in zip(mops, mops[1:])), "cumulative synops must not decrease"
    layer_synops = sum(row["synops_per_image"] for row in result.spikes_per_layer)
    assert layer_synops == pytest.approx(result.synops["per_image"])
    assert result.spikes_per_layer[0]["layer"] == "input" and result.spikes_per_layer[0]["spikes_per_image"] > 0


def test_event_driven_and_dense_convolutions_agree(ecc_net, monkeypatch):
    """The demo's layers are too small to gain, so the default leaves them dense; with the size
    bars lowered they run event-driven, and the result says so. Both compute the same layer, so
    in float32 they may differ only by a rare rounding flip."""
    import spkeras.event_conv as event_conv

    assert spkeras.evaluate(ecc_net, DATA, timesteps=8, n=10).timings["event_conv_share"] == 0
    monkeypatch.setattr(event_conv, "MIN_OUTPUT_CHANNELS", 1)
    monkeypatch.setattr(event_conv, "MIN_WEIGHTS_PER_OUTPUT", 1)
    auto = spkeras.evaluate(ecc_net, DATA, timesteps=24, n=40)
    dense = spkeras.evaluate(ecc_net, DATA, timesteps=24, n=40, conv="dense")
    assert 0 < auto.timings["event_conv_share"] <= 1 and auto.timings["conv"] == "auto"
    assert dense.timings["event_conv_share"] is None and dense.timings["conv"] == "dense"
    assert abs(auto.snn_accuracy[-1] - dense.snn_accuracy[-1]) <= 1 / 40
    for a, d in zip(auto.spikes_per_layer, dense.spikes_per_layer):
        assert a["spikes_per_image"] == pytest.approx(d["spikes_per_image"], rel=1e-3)


def test_count_mode_fills_only_checkpoints(ecc_net):
    result = spkeras.evaluate(ecc_net, DATA, timesteps=24, n=40, mode="count", checkpoints=[6, 24])
    assert result.evaluated_timesteps == [6, 24]
    assert [t for t, a in enumerate(result.snn_accuracy, 1) if a is not None] == [6, 24]
    assert "closed-form" in result.mode_description


def test_snn_file_round_trip_gives_identical_results(ecc_net, tmp_path):
    path = tmp_path / "demo.snn"
    save_snn(ecc_net, path)
    loaded = load_snn(path)
    assert loaded.method == ecc_net.method and loaded.timesteps == ecc_net.timesteps
    for a, b in zip(ecc_net.graph.nodes, loaded.graph.nodes):
        assert a.name == b.name and a.attrs == b.attrs
        for key in a.params:
            assert torch.equal(a.params[key], b.params[key])
    first = spkeras.evaluate(ecc_net, DATA, timesteps=24, n=30)
    second = spkeras.evaluate(path, DATA, timesteps=24, n=30)
    assert first.snn_accuracy == second.snn_accuracy
    assert first.spikes_per_layer == second.spikes_per_layer


def test_cli_evaluate_writes_json_csv_and_plots(tmp_path, capsys):
    out = tmp_path / "r.json"
    code = cli.main(["evaluate", MODEL, "--data", DATA, "--calib", CALIB, "--calib-n", "100", "--method",
                     "rueckauer2017", "--timesteps", "16", "--n", "20", "--json", str(out), "--csv",
                     str(tmp_path / "r.csv"), "--plot", str(tmp_path / "acc.png"), "--quiet"])
    assert code == 0
    result = json.loads(out.read_text())
    assert REQUIRED_KEYS <= set(result)
    assert result["method"] == "rueckauer2017" and result["settings"]["encoding"] == "analog"
    assert len(result["snn_accuracy"]) == 16
    assert result["input_macs"]["per_image"] > 0, "analog input: first-layer MACs are counted apart"
    assert (tmp_path / "r.csv").read_text().count("\n") == 17
    assert (tmp_path / "acc.png").stat().st_size > 1000 and (tmp_path / "acc_mops.png").exists()
    assert "rueckauer2017" in capsys.readouterr().out


def test_cli_switch_overrides_preset(tmp_path):
    out = tmp_path / "r.json"
    assert cli.main(["evaluate", MODEL, "--data", DATA, "--calib", CALIB, "--calib-n", "50", "--timesteps", "8",
                     "--n", "10", "--tre", "initial", "--reset", "zero", "--json", str(out), "--quiet"]) == 0
    settings = json.loads(out.read_text())["settings"]
    assert settings["tre"] == "initial" and settings["reset"] == "zero" and settings["name"] == "ecc"


def test_cli_convert_then_info(tmp_path, capsys):
    snn = tmp_path / "m.snn"
    assert cli.main(["convert", MODEL, "--calib", CALIB, "--calib-n", "50", "-o", str(snn), "--quiet"]) == 0
    assert cli.main(["info", str(snn)]) == 0
    text = capsys.readouterr().out
    assert "spiking layers" in text and "Eq. 13" in text


@pytest.mark.parametrize("args, fragment", [
    (["--timesteps", "0"], "positive integer"),
    (["--eta", "1.5"], "eta"),
    (["--method", "nonsense"], "invalid choice"),
])
def test_cli_rejects_nonsense_options(args, fragment, capsys):
    with pytest.raises(SystemExit) as exc:
        code = cli.main(["evaluate", MODEL, "--data", DATA, "--calib", CALIB, "--n", "5", *args])
        raise SystemExit(code)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert fragment in err[-1]


def test_demo_writes_table_and_figures(tmp_path):
    text = run_demo(str(tmp_path), timesteps=(8, 16))
    assert "ECC" in text and "ecc+" in text and "2017-SNN" in text
    for name in ("demo.json", "demo.csv", "demo.txt", "accuracy.png", "mops.png"):
        assert (tmp_path / name).stat().st_size > 0
    data = json.loads((tmp_path / "demo.json").read_text())
    assert set(data) == {"ecc", "ecc+", "rueckauer2017"} and all(set(v) == {"8", "16"} for v in data.values())
    assert data["ecc+"]["8"]["converted_for_timesteps"] == 8 and data["ecc+"]["16"]["converted_for_timesteps"] == 16
    rows = [line.split(",") for line in (tmp_path / "demo.csv").read_text().splitlines()[1:]]
    accuracies = [cell for row in rows for cell in row[1::2]]
    assert all(len(cell.split(".")[1]) == 2 for cell in accuracies), "every accuracy with two decimals"


def test_vgg16_matches_reference_closed_form_and_operations():
    """The shared VGG-16: CNN accuracy and ECC's closed form and MOps on the first 100 test images."""
    model = require_shared("models", "vgg16_cifar10.keras")
    data = require_shared("data", "cifar10_test.npz")
    calib = require_shared("data", "cifar10_train_10k.npz")
    result = spkeras.evaluate(str(model), str(data), str(calib), method="ecc", timesteps=256, n=100, mode="count",
                              checkpoints=[256], calib_n=500)
    assert result.cnn_accuracy == pytest.approx(0.89, abs=0.03)
    assert result.accuracy_at(256) >= result.cnn_accuracy - 0.03
    per_step = result.synops["mops_per_image_per_timestep"]
    assert 5.0 < per_step < 8.0, f"about 6.4 MOps per timestep and image expected, got {per_step}"
    assert result.macs["nominal_mac_per_image"] == pytest.approx(313.5e6, rel=0.005)
    assert result.macs["mac_per_image"] < result.macs["nominal_mac_per_image"], "padding taps are not operations"


def test_switches_are_refused_for_an_already_converted_network(ecc_net):
    from spkeras.errors import ConfigError

    with pytest.raises(ConfigError, match="already converted"):
        spkeras.evaluate(ecc_net, DATA, timesteps=8, n=5, tre="initial")


def test_checkpoints_beyond_the_run_are_refused(ecc_net):
    from spkeras.errors import ConfigError

    with pytest.raises(ConfigError, match="checkpoints"):
        spkeras.evaluate(ecc_net, DATA, timesteps=8, n=5, mode="count", checkpoints=[4, 16])
