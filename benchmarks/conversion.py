"""Conversion time, the layer walk against the procedure it replaced, side by side in one run.

For each case, each round converts the same CNN with the same calibration images twice, in
alternating order: ``walk`` is spkeras's conversion (``prepare(...).network(T)``: λ, then the
calibrations by layer walk), ``full runs`` the earlier procedure kept in
tests/reference_calibration.py (λ, then one simulation from the input per calibrated layer).
Both include λ; neither includes reading the model file. It also reports how far apart the two
networks are (largest parameter difference, thresholds, readout delay), and can check that a
test run gives the same predictions with both (``--check-n``).

    python benchmarks/conversion.py --rounds 2                       # ecc+ T=32 and spikenorm, VGG-16
    python benchmarks/conversion.py --cases ecc+ --check-n 1000 --json out.json

Run it with nothing else busy: under load torch slows several-fold.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spkeras import api  # noqa: E402
from spkeras.atomic import write_json  # noqa: E402
from spkeras.methods import get_method  # noqa: E402
from spkeras.progress import set_quiet  # noqa: E402
from spkeras.simulate import simulate  # noqa: E402
from tests.reference_calibration import convert_by_full_runs  # noqa: E402

SHARED = ROOT.parent / "shared"
CASES = {  # name: (model file, method, T)
    "ecc+": ("vgg16_cifar10.keras", "ecc+", 32),
    "spikenorm": ("vgg16nobn_cifar10.keras", "spikenorm", 64),
}


def largest_difference(a, b) -> dict:
    """How far two converted networks are apart."""
    params = max((float((p - b.graph.node(n.name).params[k]).abs().max()) for n in a.graph.nodes
                  for k, p in n.params.items()), default=0.0)
    thresholds = max(abs(n.attrs["threshold"] - b.graph.node(n.name).attrs["threshold"]) for n in a.spike_nodes)
    return {"max_param_abs_diff": params, "max_threshold_abs_diff": thresholds,
            "identical": params == 0.0 and thresholds == 0.0 and a.method == b.method,
            "readout_delay": [a.method.readout_delay, b.method.readout_delay]}


def run_case(name: str, rounds: int, calib_n: int, check_n: int | None) -> dict:
    model_file, method_name, steps = CASES[name]
    graph = api.load_model(str(SHARED / "models" / model_file))
    calibration = str(SHARED / "data" / "cifar10_train_10k.npz")
    images = api.checked_images(api.as_dataset(calibration, calib_n), graph)
    method = get_method(method_name)
    times = {"walk": [], "full runs": []}
    nets = {}
    for round_index in range(rounds):
        order = ("walk", "full runs") if round_index % 2 == 0 else ("full runs", "walk")
        for procedure in order:
            started = time.perf_counter()
            if procedure == "walk":
                nets[procedure] = api.prepare(graph, calibration, method_name, calib_n=calib_n).network(steps)
            else:
                nets[procedure] = convert_by_full_runs(graph, images, method, steps)
            times[procedure].append(time.perf_counter() - started)
            print(f"{name} round {round_index + 1} {procedure}: {times[procedure][-1]:.1f} s", flush=True)
    result = {"case": name, "model": model_file, "method": method_name, "timesteps": steps, "calib_n": calib_n,
              "device": "cpu", "threads": torch.get_num_threads(), "rounds": rounds,
              "seconds": {k: {"min": min(v), "median": sorted(v)[len(v) // 2], "all": v} for k, v in times.items()},
              "speedup_min": min(times["full runs"]) / min(times["walk"]),
              "networks": largest_difference(nets["walk"], nets["full runs"])}
    if check_n:
        test = api.as_dataset(str(SHARED / "data" / "cifar10_test.npz"), check_n)
        x = api.checked_images(test, graph)
        final = {k: simulate(net, x, steps).predictions[-1] for k, net in nets.items()}
        labels = torch.as_tensor(test.y).long().flatten()
        result["check"] = {"n": check_n, "mode": "simulate", "T": steps, "readout": nets["walk"].method.readout,
                           "same_predictions": int((final["walk"] == final["full runs"]).sum()),
                           "accuracy": {k: float((v == labels).double().mean()) for k, v in final.items()}}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--calib-n", type=int, default=api.DEFAULT_CALIB_N)
    parser.add_argument("--check-n", type=int, help="also simulate this many test images with both networks")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    set_quiet(True)
    results = [run_case(name, args.rounds, args.calib_n, args.check_n) for name in args.cases.split(",")]
    for r in results:
        s = r["seconds"]
        print(f"{r['case']} ({r['model']}, T={r['timesteps']}, {r['calib_n']} calibration images, "
              f"{r['threads']} threads): walk {s['walk']['min']:.1f} s, full runs {s['full runs']['min']:.1f} s "
              f"(min of {r['rounds']}), {r['speedup_min']:.2f}x; networks {json.dumps(r['networks'])}"
              + (f"; check {json.dumps(r['check'])}" if "check" in r else ""))
    if args.json:
        write_json(args.json, {"benchmark": "conversion", "results": results})


if __name__ == "__main__":
    main()
