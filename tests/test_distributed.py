"""Evaluation sharded over two CPU processes (torchrun, gloo) equals one process exactly."""

import json
import socket
import subprocess
import sys

import pytest

from spkeras.demo import asset


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _evaluate(tmp_path, name, launcher, extra=()):
    out = tmp_path / f"{name}.json"
    args = ["evaluate", asset("mnist_cnn.keras"), "--data", asset("mnist_test.npz"), "--calib",
            asset("mnist_calib.npz"), "--calib-n", "100", "--num-images", "41", "--timesteps", "12", "--method", "diehl2015",
            "--json", str(out), "--quiet", *extra]
    subprocess.run([sys.executable, *launcher, "-m", "spkeras.cli", *args], check=True, timeout=300,
                   capture_output=True, text=True)
    return json.loads(out.read_text())


@pytest.mark.parametrize("extra", [(), ("--early-exit", "3")], ids=["full", "early-exit"])
def test_two_processes_match_one(tmp_path, extra):
    single = _evaluate(tmp_path, "single", [], extra)
    port = _free_port()
    sharded = _evaluate(tmp_path, "sharded", ["-m", "torch.distributed.run", "--nproc_per_node", "2",
                                               "--master_addr", "127.0.0.1", "--master_port", str(port)], extra)
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
