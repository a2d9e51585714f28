"""Evaluation sharded over two CPU processes (torchrun, gloo) equals one process exactly."""

import json
import subprocess
import sys

import pytest

from spkeras.demo import asset


def _evaluate(tmp_path, name, launcher, extra=()):
    out = tmp_path / f"{name}.json"
    args = ["evaluate", asset("mnist_cnn.keras"), "--data", asset("mnist_test.npz"), "--calib",
            asset("mnist_calib.npz"), "--calib-n", "100", "--num-images", "41", "--timesteps", "12", "--method", "diehl2015",
            "--json", str(out), "--quiet", *extra]
    run = subprocess.run([sys.executable, *launcher, "-m", "spkeras.cli", *args], timeout=300,
                         capture_output=True, text=True)
    assert run.returncode == 0, f"{name} run failed:\n{run.stdout[-2000:]}\n{run.stderr[-4000:]}"
    return json.loads(out.read_text())


@pytest.mark.parametrize("extra", [(), ("--early-exit", "3")], ids=["full", "early-exit"])
def test_two_processes_match_one(tmp_path, extra):
    single = _evaluate(tmp_path, "single", [], extra)
    # --standalone: the rendezvous binds a free port itself (no pick-then-bind race)
    sharded = _evaluate(tmp_path, "sharded", ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"],
                        extra)
    assert sharded["early_exit"] == single["early_exit"]
    if extra:
        assert single["early_exit"]["mean_exit_step"] < 12, "no image stopped early: the test is weak"
    assert sharded["processes"] == 2 and single["processes"] == 1
    assert sharded["n"] == single["n"] == 41
    assert sharded["cnn_accuracy"] == single["cnn_accuracy"]
    assert sharded["snn_accuracy"] == single["snn_accuracy"]
    assert sharded["agreement"] == single["agreement"]
    for a, b in zip(sharded["spikes_per_layer"], single["spikes_per_layer"]):
        assert a["spikes_per_image"] == b["spikes_per_image"] and a["synops_per_image"] == b["synops_per_image"]
