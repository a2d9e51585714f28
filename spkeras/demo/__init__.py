"""The built-in demo: a small MNIST CNN shipped with the package, converted by ECC, by ecc+ (ECC
with the low-latency switches) and by the 2017-SNN baseline, simulated time-stepped, offline, in
well under two minutes on two cores."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from ..atomic import write_json, write_text
from ..formatting import format_table
from ..plots import plot_curves

TIMESTEPS = (16, 32, 64, 128)
METHODS = ("ecc", "ecc+", "rueckauer2017")
LABELS = {"ecc": "ECC", "ecc+": "ecc+", "rueckauer2017": "2017-SNN"}


def asset(name: str) -> str:
    """Path of a file shipped in this folder."""
    return str(files(__name__) / name)


def point(result, key: str, t: int) -> float:
    """Accuracy (%) or MOps per image after t steps."""
    return result.accuracy_at(t) * 100 if key == "accuracy" else result.mops_at(t)


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

    runs = {name: results(name) for name in METHODS}
    header = ["T"] + [f"{LABELS[name]} {what}" for name in METHODS for what in ("acc %", "MOps")]
    rows = [[t] + [cell for name in METHODS for cell in (f"{runs[name][t].accuracy_at(t) * 100:.2f}",
                                                          f"{runs[name][t].mops_at(t):.3f}")]
            for t in timesteps]
    first = runs[METHODS[0]][longest]
    text = (f"spkeras demo: MNIST CNN ({first.n} test images, time-stepped simulation, device {device})\n"
            f"CNN accuracy {first.cnn_accuracy * 100:.2f}%\n" + format_table(header, rows))
    folder = Path(out)
    write_json(folder / "demo.json", {name: {t: runs[name][t].to_dict() for t in timesteps} for name in METHODS})
    write_text(folder / "demo.csv", "\n".join(",".join(str(v) for v in row) for row in [header, *rows]) + "\n")
    write_text(folder / "demo.txt", text + "\n")
    curves = {LABELS[name]: runs[name][longest] for name in METHODS}
    for key, what in (("accuracy", "accuracy"), ("mops", "synaptic operations")):
        per_t = {f"{LABELS[name]}, converted for each T": [(t, point(runs[name][t], key, t)) for t in timesteps]
                 for name in METHODS if runs[name][min(timesteps)] is not runs[name][longest]}
        plot_curves(curves, key, folder / f"{key}.png", f"MNIST demo: {what} vs timesteps (lines: made for T={longest})",
                    per_t)
    return text + f"\nwrote {folder}/demo.json, demo.csv, demo.txt, accuracy.png, mops.png"
