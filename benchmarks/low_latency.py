"""The low-latency frontier (docs/low-latency.md): accuracy, agreement with the CNN and operations
per image of ecc+ and its variants, time-stepped, on VGG-16 (../shared/models/vgg16_cifar10.keras)
and the zoo's ResNet-20 (models/zoo/resnet20.pt), side by side with plain ECC at the same T.

Two image sets, never mixed up:

* ``--images heldout``: CIFAR-10 training images 9000..9000+n-1 of cifar10_train_10k.npz, which
  neither λ (images 0-1999) nor any calibration (images 0-255) sees: where settings are chosen;
* ``--images test``: CIFAR-10 test images 0..n-1 (cifar10_test.npz): where the chosen settings
  are reported, and nothing is chosen.

One JSON row per (network, image set, method, T), written atomically after each run, so an
interrupted run resumes. Operations: Eq. 14 synaptic operations plus, for analog input, the
first layer's multiply-accumulates at every step (both per image, in millions).

    python benchmarks/low_latency.py --images heldout --n 300 --timesteps 16,32 \\
        --methods "ecc,ecc+,ecc+ encoding=analog"
    python benchmarks/low_latency.py --markdown
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from networks import device_label, label, parse, read_rows  # noqa: E402  (benchmarks/networks.py)
from spkeras import api  # noqa: E402
from spkeras.atomic import write_json  # noqa: E402
from spkeras.evaluation import checked_images, cnn_predictions  # noqa: E402
from spkeras.methods import get_method  # noqa: E402
from spkeras.methods.framework import prepare  # noqa: E402
from spkeras.metrics import flat_fan_outs  # noqa: E402
from spkeras.passes import canonicalise  # noqa: E402
from spkeras.progress import set_quiet  # noqa: E402
from spkeras.simulate import RunOptions, simulate  # noqa: E402

SHARED = ROOT.parent / "shared"
MODELS = {"vgg16": lambda: api.load_model(str(SHARED / "models" / "vgg16_cifar10.keras")),
          "resnet20": lambda: api.load_model(str(ROOT / "models" / "zoo" / "resnet20.pt"), input_shape=(3, 32, 32),
                                             torch_class="zoo:ResNet20")}
HELD_OUT_FIRST = 9000
RESULTS = ROOT / "benchmarks" / "results" / "low_latency_cpu.json"


def image_set(kind: str, n: int, cnn):
    """(images, labels, calibration images 0-1999) for the held-out or the test set."""
    train = np.load(SHARED / "data" / "cifar10_train_10k.npz")
    if kind == "heldout":
        x, y = train["x"][HELD_OUT_FIRST : HELD_OUT_FIRST + n], train["y"][HELD_OUT_FIRST : HELD_OUT_FIRST + n]
    else:
        test = np.load(SHARED / "data" / "cifar10_test.npz")
        x, y = test["x"][:n], test["y"][:n]
    images = checked_images(api.as_dataset((x, y)), cnn)
    calibration = checked_images(api.as_dataset((train["x"][:2000], train["y"][:2000])), cnn)
    return images, torch.as_tensor(y).long().flatten(), calibration


def operations(net, record, steps: int, n: int) -> tuple[float, float]:
    """(synaptic operations, analog-input multiply-accumulates) per image over ``steps`` steps."""
    synops = float(record.synops[steps - 1].sum()) / n
    analog = net.method.encoding == "analog"
    macs = float(flat_fan_outs(net.graph, "cpu")[net.graph.input.name].sum()) * steps if analog else 0.0
    return synops, macs


def chosen(net) -> dict:
    """What conversion chose from calibration images (readout delay), for the result row."""
    return {"readout_delay": net.method.readout_delay, "readout_delay_fraction": net.method.readout_delay_fraction}


def run(rows, out, net_name, graph, text, timesteps, images, labels, calibration, cnn, base):
    method, switches = parse(text)
    preset = get_method(method, **switches)
    started = time.perf_counter()
    prepared = prepare(graph, calibration, preset)
    prepare_s = time.perf_counter() - started
    for steps in timesteps:
        started = time.perf_counter()
        net = prepared.network(steps)
        convert_s = prepare_s + time.perf_counter() - started
        started = time.perf_counter()
        record = simulate(net, images, RunOptions(timesteps=steps))
        predictions = record.predictions[steps - 1]
        synops, macs = operations(net, record, steps, len(labels))
        rows.append({**base, "net": net_name, "method": label(method, switches), "timesteps": steps,
                     "mode": "time-stepped", "readout": net.method.readout,
                     "accuracy": float((predictions == labels).double().mean()),
                     "agreement": float((predictions == cnn).double().mean()),
                     "synops_m": synops / 1e6, "input_macs_m": macs / 1e6, "mops": (synops + macs) / 1e6,
                     "chosen": chosen(net), "convert_s": round(convert_s, 1),
                     "run_s": round(time.perf_counter() - started, 1)})
        print(json.dumps(rows[-1]), flush=True)
        write_json(out, {"rows": rows})


def done(rows, base, net, method, steps) -> bool:
    return any(r["net"] == net and r["images"] == base["images"] and r["method"] == method
               and r["timesteps"] == steps for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nets", default="vgg16,resnet20", help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--images", choices=("heldout", "test"), default="heldout")
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--timesteps", default="16,32")
    parser.add_argument("--methods", default="ecc,ecc+",
                        help="comma-separated presets with optional switches, e.g. 'ecc+ encoding=analog'")
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
    first = HELD_OUT_FIRST if args.images == "heldout" else 0
    archive = "cifar10_train_10k" if args.images == "heldout" else "cifar10_test"
    base = {"n": args.n, "images": f"{archive} {first}-{first + args.n - 1}", "device": device_label()}
    for net_name in args.nets.split(","):
        graph = MODELS[net_name]()
        images, labels, calibration = image_set(args.images, args.n, graph)
        cnn = cnn_predictions(canonicalise(graph), images, 100, "cpu")
        if not done(rows, base, net_name, "CNN", 0):
            rows.append({**base, "net": net_name, "method": "CNN", "timesteps": 0, "mode": "cnn",
                         "accuracy": float((cnn == labels).double().mean()), "agreement": 1.0})
        for text in args.methods.split(","):
            method, switches = parse(text)
            missing = [t for t in timesteps if not done(rows, base, net_name, label(method, switches), t)]
            if missing:
                run(rows, out, net_name, graph, text, missing, images, labels, calibration, cnn, base)


def markdown(rows: list) -> str:
    """One table per (network, image set): a row per method, a column per T; cells are accuracy /
    agreement / MOps (× plain ECC's at that T)."""
    lines = []
    for net, images in dict.fromkeys((r["net"], r["images"]) for r in rows):
        mine = [r for r in rows if r["net"] == net and r["images"] == images]
        cnn = next(r for r in mine if r["method"] == "CNN")
        steps = sorted({r["timesteps"] for r in mine if r["timesteps"]})
        plain = {r["timesteps"]: r["mops"] for r in mine if r["method"] == "ecc"}
        lines += [f"### {net}, {images}", "", f"CNN: {100 * cnn['accuracy']:.1f} % (n = {cnn['n']}, {cnn['device']}, "
                  "time-stepped). Cells: accuracy % (loss in points) / agreement with the CNN % / MOps per image "
                  "(× plain `ecc`).", "", "| method | " + " | ".join(f"T = {t}" for t in steps) + " |",
                  "|---|" + "---|" * len(steps)]
        for method in dict.fromkeys(r["method"] for r in mine if r["method"] != "CNN"):
            cells = []
            for t in steps:
                row = next((r for r in mine if r["method"] == method and r["timesteps"] == t), None)
                if row is None:
                    cells.append("–")
                    continue
                ratio = f" ({row['mops'] / plain[t]:.2f}×)" if t in plain else ""
                cells.append(f"{100 * row['accuracy']:.1f} ({100 * (cnn['accuracy'] - row['accuracy']):+.1f}) / "
                             f"{100 * row['agreement']:.1f} / {row['mops']:.1f}{ratio}")
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
