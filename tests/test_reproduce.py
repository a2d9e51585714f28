"""``spkeras reproduce`` on the demo network: every figure's files and columns, the cache
(a rerun simulates nothing), runs merged at the largest T, and an interrupted run."""

import csv
import json

import pytest

import spkeras.api
import spkeras.reproduce
from spkeras.cli import main
from spkeras.demo import asset
from spkeras.reproduce import FIGURES, Settings, reproduce

MODEL, DATA, CALIB = asset("mnist_cnn.keras"), asset("mnist_test.npz"), asset("mnist_calib.npz")
COMMON = ["n", "mode", "device"]
CURVE = ["series", "method", "model", "timesteps", "cnn_accuracy_pct", "snn_accuracy_pct", "loss_points",
         "mops_per_image", "run"]
COLUMNS = {
    "fig3a": ["variant", "model", "timesteps", "cnn_accuracy_pct", "snn_accuracy_pct", "loss_points",
              "mops_per_image", "run"],
    "fig3b": ["checkpoint", "model", "series", "method", "timesteps", "cnn_accuracy_pct", "snn_accuracy_pct",
              "loss_points", "mops_per_image", "run"],
    "fig3c": CURVE, "fig3d": CURVE, "fig3e": CURVE,
    "fig4": ["series", "bits", "method", "model", "timesteps", "cnn_accuracy_pct", "snn_accuracy_pct",
             "error_increment_points", "loss_points", "mops_per_image", "run"],
    "fig5": ["layer_index", "layer", "series", "timesteps", "spike_count", "fraction_of_neurons", "mean_spike_count"],
    "table2": ["series", "method", "near_zero_points", "latency_timesteps", "stays_near_zero_from",
               "paper_latency_timesteps",
               "cnn_accuracy_pct", "snn_accuracy_pct", "loss_points", "mops_per_image", "mops_per_image_at_T8"],
}


def settings(out, **changes):
    base = dict(models=[MODEL, MODEL], model_nobn=MODEL, data=DATA, calib=CALIB, out=str(out), n=6, calib_n=40,
                timesteps=8, timesteps_list=[4, 8], bits_list=[32, 8], layers=[1, 3, 5, 40])
    base.update(changes)
    return Settings(**base)


@pytest.fixture(scope="module")
def everything(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce")
    return out, reproduce("all", settings(out))


def cached(out):
    return sorted((out / "cache").glob("*.json"))


def test_every_figure_writes_csv_json_png(everything):
    out, documents = everything
    assert set(documents) == set(FIGURES) == set(COLUMNS)
    for name, columns in COLUMNS.items():
        with open(out / f"{name}.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert list(rows[0]) == columns + COMMON, name
        assert all(r["mode"] == "simulate" and r["n"] == "6" and r["device"] == "cpu" for r in rows), name
        document = json.loads((out / f"{name}.json").read_text())
        assert document["mode"] == "simulate" and document["n"] == 6 and document["device"] == "cpu"
        assert document["columns"] == columns + COMMON and len(document["rows"]) == len(rows)
        assert document["note"], name
        assert (out / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    # spread TRE is said to need one run per T, the others one run at the largest T
    notes = " ".join(documents["fig3c"]["note"])
    assert "ECC-SNN: the network depends on T (spread TRE" in notes and "2017-SNN: the network does not depend on T" in notes
    runs = {r["series"]: r["run"] for r in documents["fig3c"]["rows"] if r["timesteps"] == 4}
    assert runs["2017-SNN"] == "one simulation of 8 steps, read after t=4"
    assert runs["ECC-SNN"] == "converted and simulated for T=4"


def test_figure_contents(everything):
    _, documents = everything
    fig3a = {r["variant"]: r for r in documents["fig3a"]["rows"] if r["model"] == "mean over models"}
    assert set(fig3a) == {"CN", "CN+CMB", "CN+CMB+TRE"}
    assert {r["checkpoint"] for r in documents["fig3b"]["rows"]} == {1, 2}
    assert {r["series"] for r in documents["fig3c"]["rows"]} == {"2017-SNN", "RMP-SNN(0.8)", "RMP-SNN(0.9)", "ECC-SNN"}
    assert {r["series"] for r in documents["fig3d"]["rows"]} == {"ECC-SNN (BN)", "ECC-SNN (no BN)", "2017-SNN (BN)"}
    fig4 = documents["fig4"]["rows"]
    assert {r["bits"] for r in fig4} == {32, 8}
    assert all(r["error_increment_points"] == 0 for r in fig4 if r["bits"] == 32)
    fig5 = documents["fig5"]
    assert fig5["layers"] == [1, 3, 5] and any("[40]" in n for n in fig5["note"])
    for series in ("2017-SNN", "ECC-SNN η=1/2", "ECC-SNN η=2/3", "expectation (CNN)"):
        fractions = [r["fraction_of_neurons"] for r in fig5["rows"] if r["series"] == series and r["layer_index"] == 3]
        assert len(fractions) == 9 and sum(fractions) == pytest.approx(1.0)
    table = documents["table2"]
    assert table["near_zero_points"] == 0.1 and any("0.1 points" in n for n in table["note"])
    for row in table["rows"]:
        assert row["latency_timesteps"] in (None, 4, 8) and row["stays_near_zero_from"] in (None, 4, 8)
        if row["stays_near_zero_from"] is not None:
            assert row["latency_timesteps"] <= row["stays_near_zero_from"]
        assert (row["mops_per_image"] is None) == (row["latency_timesteps"] is None)


def test_runs_are_shared_and_merged_at_the_largest_t(everything):
    out, documents = everything
    # curves: CN, CN+CMB, ECC@8 | ECC@4 | 2017, RMP0.8, RMP0.9 at T=8 | 32-bit, 8-bit ECC at 4 and 8;
    # counts: 2017, ECC η=1/2, η=2/3 (the same model given three times is one model)
    assert documents["table2"]["runs"] == {"needed": 14, "from_cache": 0, "simulated": 14}
    entries = [json.loads(p.read_text()) for p in cached(out)]
    assert len(entries) == 14
    for entry in entries:
        if entry["key"]["kind"] == "curve" and entry["key"]["method"]["tre"] != "spread":
            assert entry["timesteps"] == 8 and entry["key"]["converted_for"] is None


def test_rerun_simulates_nothing(everything, monkeypatch):
    out, _ = everything

    def refuse(*args, **kwargs):
        raise AssertionError("a cached run was simulated again")

    monkeypatch.setattr(spkeras.api, "evaluate", refuse)
    monkeypatch.setattr(spkeras.reproduce, "simulate", refuse)
    documents = reproduce("all", settings(out))
    assert documents["fig3a"]["runs"] == {"needed": 14, "from_cache": 14, "simulated": 0}


def test_cli_reproduce(everything, capsys):
    out, _ = everything
    args = ["reproduce", "fig3e", "--model", MODEL, "--data", DATA, "--calib", CALIB, "--n", "6", "--calib-n", "40",
            "--timesteps-list", "4,8", "--out", str(out), "--quiet"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "mode: simulate | n=6 | device=cpu" in text and "0 simulated" in text
    bad = ["reproduce", "fig5", "--model", MODEL, "--data", DATA, "--calib", CALIB, "--n", "6", "--calib-n", "40",
           "--timesteps", "8", "--layers", "99", "--out", str(out), "--quiet"]
    assert main(bad) == 2
    assert "7 spiking layers" in capsys.readouterr().err


def test_interrupted_run_keeps_complete_entries_and_resumes(tmp_path, monkeypatch):
    real = spkeras.api.evaluate
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("interrupted")
        return real(*args, **kwargs)

    monkeypatch.setattr(spkeras.api, "evaluate", flaky)
    with pytest.raises(RuntimeError, match="interrupted"):
        reproduce("fig3c", settings(tmp_path))
    entries = cached(tmp_path)
    assert len(entries) == 2
    for path in entries:
        entry = json.loads(path.read_text())
        assert entry["key"]["kind"] == "curve" and len(entry["result"]["snn_accuracy"]) == entry["timesteps"]
    assert not [p for p in (tmp_path / "cache").iterdir() if p.suffix != ".json"]   # no partial files
    assert not (tmp_path / "fig3c.csv").exists()
    monkeypatch.setattr(spkeras.api, "evaluate", real)
    documents = reproduce("fig3c", settings(tmp_path))
    assert documents["fig3c"]["runs"] == {"needed": 5, "from_cache": 2, "simulated": 3}
    # a longer T list reruns the T-independent methods once at the new largest T, and adds ECC at T=16
    documents = reproduce("fig3e", settings(tmp_path, timesteps_list=[4, 8, 16]))
    assert documents["fig3e"]["runs"] == {"needed": 4, "from_cache": 2, "simulated": 2}
    assert len(cached(tmp_path)) == 6


def test_networks_reused_across_t_equal_a_fresh_conversion(tmp_path):
    """λ is computed once and the network rebuilt per T; that must be the network convert() makes."""
    import torch

    from spkeras.methods import get_method

    runner = spkeras.reproduce.Runner(settings(tmp_path))
    for method in (get_method("ecc"), get_method("ecc", bits=8), get_method("rmp0.8")):
        for t in (4, 16):
            reused = runner.network(MODEL, method, t)
            fresh = spkeras.api.convert(MODEL, CALIB, method.name, t, calib_n=40, **{
                k: v for k, v in method.to_dict().items() if k not in ("name", "citation")})
            assert reused.lambdas == fresh.lambdas
            for a, b in zip(reused.graph.nodes, fresh.graph.nodes):
                assert a.name == b.name and a.attrs == b.attrs
                assert all(torch.equal(a.params[k], b.params[k]) for k in a.params)
    assert len(runner._prepared) == 1      # one calibration for ECC, its 8-bit variant and RMP (all λ = max)


def test_runs_finished_meanwhile_by_another_process_are_not_repeated(tmp_path, monkeypatch):
    other = tmp_path / "other"
    reproduce("fig3c", settings(other))                    # what a second process sharing OUT will have written
    mine = tmp_path / "mine"
    real = spkeras.api.evaluate

    def other_process_finishes_the_rest(*args, **kwargs):
        (mine / "cache").mkdir(parents=True, exist_ok=True)
        for path in cached(other):
            target = mine / "cache" / path.name
            if not target.exists():
                target.write_text(path.read_text())
        return real(*args, **kwargs)

    monkeypatch.setattr(spkeras.api, "evaluate", other_process_finishes_the_rest)
    documents = reproduce("fig3c", settings(mine))
    assert documents["fig3c"]["runs"] == {"needed": 5, "from_cache": 4, "simulated": 1}
