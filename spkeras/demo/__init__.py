"""The built-in demo: a small MNIST CNN shipped with the package, converted by ECC and by the
2017-SNN baseline, simulated time-stepped, offline, in well under two minutes on two cores."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from ..atomic import write_json, write_text
from ..formatting import format_table
from ..plots import plot_curves

TIMESTEPS = (16, 32, 64, 128)


def asset(name: str) -> str:
    """Path of a file shipped in this folder."""
    return str(files(__name__) / name)


def run_demo(out: str, device: str = "cpu", seed: int = 0, timesteps: tuple[int, ...] = TIMESTEPS) -> str:
    """Run the demo, write table, JSON, CSV and plots to ``out``; return the printed table.

    Each method is prepared once (λ); a method whose network depends on T (ECC's spread TRE) is
    converted and simulated once per T, any other once at the largest T and read after every t.
    """
    from .. import api

    model, data, calib = asset("mnist_cnn.keras"), asset("mnist_test.npz"), asset("mnist_calib.npz")
    graph = api.load_model(model)
    longest = max(timesteps)

    def results(method: str) -> dict:
        prepared = api.prepare(graph, calib, method=method, calib_n=None, device=device)
        runs = timesteps if prepared.method.depends_on_timesteps else (longest,)
        done = {t: api.evaluate(prepared.network(t), data, timesteps=t, device=device, seed=seed) for t in runs}
        return {t: done.get(t, done[longest]) for t in timesteps}

    ecc, baseline_runs = results("ecc"), results("rueckauer2017")
    baseline = baseline_runs[longest]
    rows = [[t, ecc[t].accuracy_at(t) * 100, ecc[t].mops_at(t), baseline.accuracy_at(t) * 100, baseline.mops_at(t)]
            for t in timesteps]
    header = ["T", "ECC acc %", "ECC MOps", "2017-SNN acc %", "2017-SNN MOps"]
    text = (f"spkeras demo: MNIST CNN ({ecc[longest].n} test images, time-stepped simulation, device {device})\n"
            f"CNN accuracy {baseline.cnn_accuracy * 100:.2f}%\n" + format_table(header, rows))
    folder = Path(out)
    write_json(folder / "demo.json", {"ecc": {t: r.to_dict() for t, r in ecc.items()}, "rueckauer2017": baseline.to_dict()})
    write_text(folder / "demo.csv", "\n".join(",".join(str(v) for v in row) for row in [header, *rows]) + "\n")
    write_text(folder / "demo.txt", text + "\n")
    curves = {"ECC (T=%d)" % longest: ecc[longest], "2017-SNN": baseline}
    ecc_points = {"ECC converted per T": [(t, ecc[t].accuracy_at(t) * 100) for t in timesteps]}
    plot_curves(curves, "accuracy", folder / "accuracy.png", "MNIST demo: accuracy vs timesteps", ecc_points)
    mops_points = {"ECC converted per T": [(t, ecc[t].mops_at(t)) for t in timesteps]}
    plot_curves(curves, "mops", folder / "mops.png", "MNIST demo: synaptic operations vs timesteps", mops_points)
    return text + f"\nwrote {folder}/demo.json, demo.csv, demo.txt, accuracy.png, mops.png"
