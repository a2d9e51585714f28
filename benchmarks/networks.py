"""The zoo of real-world layouts (models/zoo, trained by scripts/train_zoo.py) under each method:
accuracy, agreement with the CNN and MOps per image, time-stepped and in closed form, on CIFAR-10
test images 0..n-1 (cifar10_test.npz); λ and every calibration on training images 0-1999 of
cifar10_train_10k.npz, never on test images. One JSON row per (network, method, T, mode), written
after each run, so an interrupted run resumes where it stopped. docs/networks.md is generated
from the rows (--markdown).

    python benchmarks/networks.py --n 500 --timesteps 32,64,128 --methods "ecc+,ecc"
    python benchmarks/networks.py --n 500 --timesteps 256 --methods "rueckauer2017,ecc+ maxpool=gate"
    python benchmarks/networks.py --markdown

A method is a preset name with optional switches, "ecc+ maxpool=gate"; a method whose network
does not depend on T (rueckauer2017) is simulated once, to the largest T, and read at 32, 64, 128
and 256 too.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from spkeras import api  # noqa: E402
from spkeras.atomic import write_json  # noqa: E402
from spkeras.closed_form import closed_form  # noqa: E402
from spkeras.evaluation import checked_images, cnn_predictions  # noqa: E402
from spkeras.methods import get_method  # noqa: E402
from spkeras.methods.framework import prepare  # noqa: E402
from spkeras.passes import canonicalise  # noqa: E402
from spkeras.progress import set_quiet  # noqa: E402
from spkeras.simulate import RunOptions, simulate  # noqa: E402

SHARED = ROOT.parent / "shared"
NETS = {"vgg_maxpool": "VGGMaxPool", "resnet18": "ResNet18", "mobilenetv2": "MobileNetV2Small",
        "densenet": "DenseNetSmall", "resnet20": "ResNet20"}
HAS_MAX_POOLING = ("vgg_maxpool", "resnet18")
READ_AT = (32, 64, 128, 256)  # where a T-independent network's one run is also read
RESULTS = ROOT / "benchmarks" / "results" / "networks_cpu.json"


def read_rows(path: Path) -> list:
    """The rows of a results file (none if it does not exist yet: a run resumes from them)."""
    return json.loads(path.read_text())["rows"] if path.exists() else []


def device_label() -> str:
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def label(method: str, switches: dict) -> str:
    return method + "".join(f" {k}={v}" for k, v in switches.items())


def load(net: str):
    """The zoo network as a graph (PyTorch state dict + its class in scripts/zoo.py)."""
    return api.load_model(str(ROOT / "models" / "zoo" / f"{net}.pt"), input_shape=(3, 32, 32),
                          torch_class=f"zoo:{NETS[net]}")


def data(n: int, cnn):
    test = np.load(SHARED / "data" / "cifar10_test.npz")
    train = np.load(SHARED / "data" / "cifar10_train_10k.npz")
    images = checked_images(api.as_dataset((test["x"][:n], test["y"][:n])), cnn)
    labels = torch.as_tensor(test["y"][:n]).long().flatten()
    calibration = checked_images(api.as_dataset((train["x"][:2000], train["y"][:2000])), cnn)
    return images, labels, calibration


def measure(rows: list, key: dict, predictions, labels, cnn, synops, started: float, convert_s: float) -> None:
    rows.append({**key, "accuracy": float((predictions == labels).double().mean()),
                 "agreement": float((predictions == cnn).double().mean()),
                 "mops_per_image": synops / len(labels) / 1e6 if synops is not None else None,
                 "convert_s": round(convert_s, 1), "run_s": round(time.perf_counter() - started, 1)})


def parse(text: str) -> tuple[str, dict]:
    """'ecc+ maxpool=gate' → ('ecc+', {'maxpool': 'gate'}) (numbers as numbers)."""
    name, *pairs = text.split()
    switches = {}
    for pair in pairs:
        key, value = pair.split("=")
        try:
            switches[key] = json.loads(value)
        except json.JSONDecodeError:
            switches[key] = value
    return name, switches


def run_config(rows, out, net_name, cnn_graph, method, switches, timesteps, images, labels, calibration, cnn, base):
    """Every T of one (network, method): time-stepped and closed form; rows saved after each T."""
    preset = get_method(method, **switches)
    started = time.perf_counter()
    prepared = prepare(cnn_graph, calibration, preset)
    prepare_s = time.perf_counter() - started
    per_t = preset.depends_on_timesteps
    networks = {}
    for steps in (timesteps if per_t else [max(timesteps)]):
        started = time.perf_counter()
        net = prepared.network(steps)
        convert_s = prepare_s + time.perf_counter() - started
        started = time.perf_counter()
        record = simulate(net, images, RunOptions(timesteps=steps))
        read = [steps] if per_t else sorted({t for t in (*READ_AT, *timesteps) if t <= steps})
        for t in read:
            key = {**base, "net": net_name, "method": label(method, switches), "timesteps": t, "mode": "simulate"}
            measure(rows, key, record.predictions[t - 1], labels, cnn, float(record.synops[t - 1].sum()), started,
                    convert_s)
        for t in read:
            started = time.perf_counter()
            counted = closed_form(net, images, [t])
            key = {**base, "net": net_name, "method": label(method, switches), "timesteps": t, "mode": "count"}
            measure(rows, key, counted.predictions[0], labels, cnn, float(counted.synops[0].sum()), started, convert_s)
        print(json.dumps(rows[-1]), flush=True)
        write_json(out, {"rows": rows})


def done(rows, net, method, steps) -> bool:
    return any(r["net"] == net and r["method"] == method and r["timesteps"] == steps for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nets", default=",".join(NETS))
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--timesteps", default="32,64,128")
    parser.add_argument("--methods", default="ecc,ecc+,rueckauer2017",
                        help="comma-separated presets with optional switches, e.g. 'ecc+ maxpool=gate'")
    parser.add_argument("--pooling-only", action="store_true", help="only the networks with max pooling")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--markdown", action="store_true", help="print the tables of --out and exit")
    args = parser.parse_args()
    out = Path(args.out)
    rows = read_rows(out)
    if args.markdown:
        print(markdown(rows))
        return
    set_quiet(True)
    timesteps = [int(t) for t in args.timesteps.split(",")]
    base = {"n": args.n, "device": device_label(), "images": f"cifar10_test 0-{args.n - 1}"}
    for net_name in args.nets.split(","):
        if args.pooling_only and net_name not in HAS_MAX_POOLING:
            continue
        graph = load(net_name)
        images, labels, calibration = data(args.n, graph)
        cnn = cnn_predictions(canonicalise(graph), images, 100, "cpu")
        cnn_row = {**base, "net": net_name, "method": "CNN", "timesteps": 0, "mode": "cnn",
                   "accuracy": float((cnn == labels).double().mean()), "agreement": 1.0, "mops_per_image": None}
        if not done(rows, net_name, "CNN", 0):
            rows.append(cnn_row)
        for method, switches in map(parse, args.methods.split(",")):
            missing = [t for t in timesteps if not done(rows, net_name, label(method, switches), t)]
            if missing:
                run_config(rows, out, net_name, graph, method, switches, missing, images, labels, calibration,
                           cnn, base)


def limit_summary(rows: list) -> list[str]:
    """At the largest T of the rows: a row per method, a column per network, each cell the
    agreement with the CNN time-stepped / in closed form (%), with n."""
    steps = max(r["timesteps"] for r in rows)
    nets = list(dict.fromkeys(r["net"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows if r["method"] != "CNN"))

    def cell(net, method):
        found = {r["mode"]: r for r in rows if r["net"] == net and r["method"] == method and r["timesteps"] == steps}
        if "simulate" not in found:
            return "–"
        counted = f" / {100 * found['count']['agreement']:.0f}" if "count" in found else ""
        return f"{100 * found['simulate']['agreement']:.0f}{counted} (n = {found['simulate']['n']})"

    lines = [f"Agreement with the CNN at T = {steps}, % (time-stepped / closed form):", "",
             "| method | " + " | ".join(nets) + " |", "|---|" + "---|" * len(nets)]
    lines += [f"| {m} | " + " | ".join(cell(net, m) for net in nets) + " |" for m in methods]
    return lines + [""]


def markdown(rows: list) -> str:
    """One table per network: a row per method (and max-pooling option) and mode, a column per T
    (after a summary of every method and network at the largest T, when that is 1024 or more)."""
    lines = limit_summary(rows) if max(r["timesteps"] for r in rows) >= 1024 else []
    for net in dict.fromkeys(r["net"] for r in rows):
        mine = [r for r in rows if r["net"] == net]
        cnn = next(r for r in mine if r["method"] == "CNN")
        steps = sorted({r["timesteps"] for r in mine if r["timesteps"]})
        lines += [f"### {net}", "", f"CNN: {100 * cnn['accuracy']:.1f} % on {cnn['images']} (n = {cnn['n']}, "
                  f"{cnn['device']}). Cells: accuracy % / agreement with the CNN % / MOps per image.", "",
                  "| method | mode | n | " + " | ".join(f"T = {t}" for t in steps) + " |",
                  "|---|---|---|" + "---|" * len(steps)]
        for method in dict.fromkeys(r["method"] for r in mine if r["method"] != "CNN"):
            for mode, name in (("simulate", "time-stepped"), ("count", "closed form")):
                cells, sizes = [], set()
                for t in steps:
                    row = next((r for r in mine if r["method"] == method and r["mode"] == mode
                                and r["timesteps"] == t), None)
                    sizes.update([row["n"]] if row else [])
                    cells.append("–" if row is None else f"{100 * row['accuracy']:.1f} / {100 * row['agreement']:.1f}"
                                 f" / {row['mops_per_image']:.2f}")
                if sizes:
                    n = ", ".join(str(k) for k in sorted(sizes))
                    lines.append(f"| {method} | {name} | {n} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
