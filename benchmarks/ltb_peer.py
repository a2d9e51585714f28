"""SpikingJelly 2.0's own ANN→SNN converter on our VGG-16, so its numbers stand beside ours.

The Keras VGG-16 (../shared/models/vgg16_cifar10.keras) is read by spkeras' importer,
canonicalised (batch norm folded with ε, dropout and the final softmax removed) and copied layer
by layer into a plain ``nn.Sequential`` of Conv2d / ReLU / AvgPool2d / Flatten / Linear. That copy
must give our CNN's argmax on CIFAR-10 test images 0-199, or the script stops. SpikingJelly's
``ann2snn.Converter`` then converts the copy with one of its recipes, calibrated on CIFAR-10
training images 0..calib_n-1 (cifar10_train_10k.npz, in order, batches of ``--calib-batch``):

* ``--recipe ltb``: ``LocalThresholdBalancingRecipe(dataloader, channel_dim=1, fuse_flag=True,
  eps=1e-6)`` (its defaults; Bu, Li & Yu, CVPR 2025). Each ReLU gets per-channel thresholds θ,
  learnt from zero by one update per calibration *batch* (θ += 2·mean over batch and positions
  of max(relu(x) − θ, 0)), while the calibrating ANN is already clipped at the running θ. So
  ``--calib-n 2000 --calib-batch 10`` makes 200 updates (the converged setting); with few
  updates θ stays low and the ANN it clips loses accuracy (4 updates: 0 % on 20 test images;
  20 updates: 40 %; too few updates were reported at about 33 %). The SNN replaces each
  ReLU by ×1/θ → ``HalfThresholdIFNode`` (V_thr = 1, membrane reset to V_thr/2, reset by
  subtraction, one unit spike) → ×θ. Readout: the sum of the output layer's values over steps
  ``delay_start..T-1``, with ``delay_start`` from ``ann2snn.estimate_delay_start`` on the first
  calibration batch (``--delay-start auto``, the default here and in SpikingJelly's
  examples/imagenet_resnet18_ltb.py; where T leaves fewer than 4 steps after its estimate, it
  starts at T-5 instead; the unclamped estimate is recorded as ``estimated_delay_start``).
* ``--recipe rate``: ``RateCodingRecipe(dataloader, mode=--rate-mode)`` with every other
  argument at its default: layer-wise scale (``mode="Max"``: the batch maximum, smoothed over
  batches with momentum 0.1), ReLU replaced by ×1/scale → ``IFNode(v_reset=None)`` (V_thr = 1,
  membrane starting at 0, reset by subtraction) → ×scale. Readout: the sum over all T steps
  (``--delay-start none``, as in SpikingJelly's cnn_mnist.py and resnet18_cifar10.py).

Input is analog (the image is the input current at every step); neurons are reset between
batches (``functional.reset_net``). Nothing in the SNN depends on T, only the readout start
does, so the network runs once to the largest T and every T is read from the per-step outputs.
Reported per T: accuracy, agreement with our CNN's predictions, spikes per image (every neuron
SpikingJelly inserted, steps 0..T-1) and the cumulative simulation time. Also reported: the
accuracy of the ANN the SNN approximates, i.e. the converted graph with each neuron replaced by
its rate limit clamp(x / V_thr, 0, 1) (for ``ltb``: the ANN clipped at θ; for ``rate``: clipped
at the layer scale).

Needs SpikingJelly 2.0 beside the installed torch (keep torch as it is):

    pip install --no-deps spikingjelly==2.0.0 loguru && pip install requests   # (and tqdm, if missing)
    python benchmarks/ltb_peer.py --recipe ltb                      # 2000 images, batches of 10, T = 16,32,64, n = 1000
    python benchmarks/ltb_peer.py --recipe rate --out benchmarks/results/rate_peer_cpu.json
    python benchmarks/ltb_peer.py --recipe ltb --n 20 --calib-n 40 --timesteps 4,8 --out /tmp/ltb.json   # smoke test

Caveats: SpikingJelly's calibration batch size is part of the method for ``ltb`` (the number of
threshold updates), so compare settings by updates as well as images. ``estimate_delay_start``
probes only the first calibration batch (``--delay-batches`` to use more). Spike counts are of
SpikingJelly's unit spikes; they are not synaptic operations. The torch copy takes chain networks
with symmetric padding only (VGG-16 is one).
"""

from __future__ import annotations

import argparse
import copy
import importlib.metadata
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spkeras import api  # noqa: E402
from spkeras.atomic import write_json  # noqa: E402
from spkeras.evaluation import checked_images, cnn_predictions  # noqa: E402
from spkeras.passes import canonicalise  # noqa: E402
from spkeras.progress import set_quiet  # noqa: E402

SHARED = ROOT.parent / "shared"
MODEL = SHARED / "models" / "vgg16_cifar10.keras"
RESULTS = ROOT / "benchmarks" / "results" / "ltb_peer_cpu.json"
CHECK_N = 200
DEFAULT_CALIB_BATCH = {"ltb": 10, "rate": 100}
DEFAULT_DELAY = {"ltb": "auto", "rate": "none"}


def torch_cnn(graph) -> nn.Sequential:
    """The canonical CNN graph (chain) as plain torch layers, ReLUs as ``nn.ReLU`` modules."""
    layers = []
    for node in graph.nodes[1:]:
        if node.op == "conv2d":
            top, bottom, left, right = node.attrs["padding"]
            if top != bottom or left != right:
                raise SystemExit(f"ltb_peer: {node.name} has asymmetric padding {node.attrs['padding']}")
            weight = node.params["weight"]
            conv = nn.Conv2d(weight.shape[1], weight.shape[0], tuple(weight.shape[2:]),
                             stride=tuple(node.attrs["stride"]), padding=(top, left))
            conv.weight.data = weight.clone().float()
            conv.bias.data = node.params["bias"].clone().float()
            layers.append(conv)
        elif node.op == "dense":
            weight = node.params["weight"]
            linear = nn.Linear(weight.shape[1], weight.shape[0])
            linear.weight.data = weight.clone().float()
            linear.bias.data = node.params["bias"].clone().float()
            layers.append(linear)
        elif node.op == "relu":
            layers.append(nn.ReLU())
        elif node.op == "avgpool":
            if node.attrs.get("scale", 1.0) != 1.0 or any(node.attrs.get("padding", (0,))):
                raise SystemExit(f"ltb_peer: {node.name} is a scaled or padded average pool")
            layers.append(nn.AvgPool2d(tuple(node.attrs["kernel"]), tuple(node.attrs["stride"])))
        elif node.op == "flatten":
            layers.append(nn.Flatten())
        else:
            raise SystemExit(f"ltb_peer: the torch copy takes conv2d/dense/relu/avgpool/flatten, not {node.op} "
                             f"({node.name})")
    return nn.Sequential(*layers).eval()


def batched_argmax(model, images, batch) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(images[i : i + batch]).argmax(1) for i in range(0, len(images), batch)])


class RateLimit(nn.Module):
    """What an IF neuron's spike rate approximates: clamp(x / V_thr, 0, 1)."""

    def __init__(self, v_threshold: float):
        super().__init__()
        self.v_threshold = float(v_threshold)

    def forward(self, x):
        return torch.clamp(x / self.v_threshold, 0.0, 1.0)


def neurons(snn) -> list[tuple[str, nn.Module]]:
    from spikingjelly.activation_based.neuron.base_node import BaseNode

    return [(name, m) for name, m in snn.named_modules() if isinstance(m, BaseNode)]


def clipped_ann(snn) -> nn.Module:
    """The converted graph with every neuron replaced by its rate limit: the clipped ANN."""
    ann = copy.deepcopy(snn)
    for name, module in neurons(ann):
        parent, _, leaf = name.rpartition(".")
        setattr(ann.get_submodule(parent) if parent else ann, leaf, RateLimit(float(module.v_threshold)))
    return ann.eval()


def thresholds(snn) -> list[dict]:
    """Per neuron layer: the scale after it (θ, per channel for ltb), min / mean / max."""
    from spikingjelly.activation_based.ann2snn.modules import ChannelVoltageScaler, VoltageScaler

    modules = dict(snn.named_modules())
    rows = []
    for node in snn.graph.nodes:
        if node.op == "call_module" and node.target.endswith("scaler1"):
            module = modules[node.target]
            if isinstance(module, (ChannelVoltageScaler, VoltageScaler)):
                s = module.scale.detach().flatten().double()
                rows.append({"layer": node.target.rpartition(".")[0], "channels": s.numel(),
                             "min": float(s.min()), "mean": float(s.mean()), "max": float(s.max())})
    return rows


def make_recipe(args, loader):
    from spikingjelly.activation_based import ann2snn

    if args.recipe == "ltb":
        kwargs = {"channel_dim": 1, "fuse_flag": True, "eps": 1e-6}
        return ann2snn.LocalThresholdBalancingRecipe(dataloader=loader, **kwargs), kwargs
    mode = args.rate_mode if args.rate_mode.endswith("%") or args.rate_mode.lower() == "max" else float(args.rate_mode)
    kwargs = {"mode": mode, "momentum": 0.1, "fuse_flag": True, "channel_wise": False}
    return ann2snn.RateCodingRecipe(dataloader=loader, **kwargs), kwargs


def delay_starts(args, snn, loader, timesteps) -> tuple[dict[int, int], int | None]:
    """The readout's first step for every T, and (auto) the estimate before its clamping to T."""
    from spikingjelly.activation_based import ann2snn

    out, raw = {}, None
    if args.delay_start == "auto":  # a T too long to clamp: estimate_delay_start's raw value
        raw = int(ann2snn.estimate_delay_start(snn, loader, args.device, 10**9, num_batches=args.delay_batches))
    for t in timesteps:
        if args.delay_start == "none":
            out[t] = 0
        elif args.delay_start == "auto":
            out[t] = int(ann2snn.estimate_delay_start(snn, loader, args.device, t, num_batches=args.delay_batches))
        else:
            out[t] = int(args.delay_start)
            if not 0 <= out[t] < t:
                raise SystemExit(f"ltb_peer: --delay-start {out[t]} leaves no readout at T = {t}")
    return out, raw


def simulate(snn, images, steps: int, batch: int, device: str):
    """Per-step outputs (steps, n, classes), spikes per step (summed over images) and the
    cumulative wall time at the end of every step (summed over batches)."""
    from spikingjelly.activation_based import functional

    spike_layers = [m for _, m in neurons(snn)]
    counter = {"spikes": 0.0}

    def count(_module, _inputs, output):
        counter["spikes"] += float(output.sum())

    handles = [m.register_forward_hook(count) for m in spike_layers]
    outputs, spikes, seconds = [], np.zeros(steps), np.zeros(steps)
    try:
        snn.eval().to(device)
        with torch.no_grad():
            for start in range(0, images.shape[0], batch):
                x = images[start : start + batch].to(device)
                functional.reset_net(snn)
                per_step = []
                began = time.perf_counter()
                for t in range(steps):
                    counter["spikes"] = 0.0
                    per_step.append(snn(x).cpu())
                    spikes[t] += counter["spikes"]
                    seconds[t] += time.perf_counter() - began
                outputs.append(torch.stack(per_step))
                print(f"  images {start}-{start + x.shape[0] - 1}: {time.perf_counter() - began:.1f} s", flush=True)
        functional.reset_net(snn)
    finally:
        for handle in handles:
            handle.remove()
    return torch.cat(outputs, dim=1), spikes, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", choices=("ltb", "rate"), default="ltb",
                        help="LocalThresholdBalancingRecipe or RateCodingRecipe (default ltb)")
    parser.add_argument("--calib-n", type=int, default=2000, help="calibration images: training images 0..N-1")
    parser.add_argument("--calib-batch", type=int, default=None,
                        help="calibration batch size (default 10 for ltb: 200 updates with 2000 images; 100 for rate)")
    parser.add_argument("--rate-mode", default="Max",
                        help="RateCodingRecipe mode: Max (its default), a percentile such as 99.9%%, or a fraction")
    parser.add_argument("--delay-start", default=None,
                        help="readout start: auto (estimate_delay_start), none (all steps) or a step; "
                             "default auto for ltb, none for rate")
    parser.add_argument("--delay-batches", type=int, default=1,
                        help="calibration batches estimate_delay_start probes (its default 1)")
    parser.add_argument("--timesteps", default="16,32,64", help="comma-separated T; one run to the largest")
    parser.add_argument("--n", type=int, default=1000, help="CIFAR-10 test images 0..n-1")
    parser.add_argument("--batch", type=int, default=100, help="simulation batch size")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    args.calib_batch = args.calib_batch or DEFAULT_CALIB_BATCH[args.recipe]
    args.delay_start = (args.delay_start or DEFAULT_DELAY[args.recipe]).lower()
    if args.delay_start not in ("auto", "none") and not args.delay_start.isdigit():
        parser.error("--delay-start takes auto, none or a step number")
    timesteps = sorted({int(t) for t in args.timesteps.split(",")})
    if args.threads:
        torch.set_num_threads(args.threads)
    set_quiet(True)

    try:
        from spikingjelly.activation_based import ann2snn
    except ImportError as error:
        raise SystemExit(f"ltb_peer: SpikingJelly 2.0 is needed ({error}); see the module docstring") from error
    versions = {name: importlib.metadata.version(name) for name in ("spikingjelly", "torch")}
    timings = {}

    # The CNN, in spkeras and as torch layers, checked on test images 0..199.
    started = time.perf_counter()
    graph = api.load_model(str(MODEL))
    ref = canonicalise(graph, use_eps=True)
    ann = torch_cnn(ref)
    test = np.load(SHARED / "data" / "cifar10_test.npz")
    count = max(args.n, CHECK_N)
    images = checked_images(api.as_dataset((test["x"][:count], test["y"][:count])), graph)
    labels = torch.as_tensor(test["y"][:count]).long().flatten()
    cnn = cnn_predictions(ref, images, args.batch, "cpu")
    torch_pred = batched_argmax(ann, images, args.batch)
    mismatched = int((torch_pred[:CHECK_N] != cnn[:CHECK_N]).sum())
    if mismatched:
        raise SystemExit(f"ltb_peer: the torch copy of the CNN disagrees with spkeras' CNN on {mismatched} of "
                         f"test images 0-{CHECK_N - 1}; the copy is wrong, nothing converted")
    images, labels, cnn = images[: args.n], labels[: args.n], cnn[: args.n]
    timings["load_and_check_s"] = round(time.perf_counter() - started, 2)
    cnn_accuracy = float((cnn == labels).double().mean())
    print(f"torch copy of the CNN: same argmax as spkeras on test images 0-{CHECK_N - 1}; "
          f"CNN accuracy on {args.n}: {100 * cnn_accuracy:.2f} %", flush=True)

    # Conversion with SpikingJelly's recipe; calibration images in order, fixed batches.
    train = np.load(SHARED / "data" / "cifar10_train_10k.npz")
    calibration = checked_images(api.as_dataset((train["x"][: args.calib_n], train["y"][: args.calib_n])), graph)
    loader = [calibration[i : i + args.calib_batch].to(args.device)
              for i in range(0, calibration.shape[0], args.calib_batch)]
    recipe, recipe_args = make_recipe(args, loader)
    started = time.perf_counter()
    snn = ann2snn.Converter(recipe=recipe, device=args.device).convert(copy.deepcopy(ann).to(args.device))
    timings["convert_s"] = round(time.perf_counter() - started, 2)
    spiking = neurons(snn)
    neuron_kinds = sorted({type(m).__name__ for _, m in spiking})
    v_init = sorted({float(m.get_reset_value("v") or 0.0) for _, m in spiking})
    v_threshold = sorted({float(m.v_threshold) for _, m in spiking})

    started = time.perf_counter()
    clipped = clipped_ann(snn).to(args.device)
    clipped_pred = batched_argmax(clipped, images.to(args.device), args.batch).cpu()
    timings["clipped_ann_s"] = round(time.perf_counter() - started, 2)
    clipped_accuracy = float((clipped_pred == labels).double().mean())
    print(f"{type(recipe).__name__}: {len(loader)} calibration batches of {args.calib_batch} "
          f"({args.calib_n} images), {len(spiking)} × {'/'.join(neuron_kinds)}; clipped ANN accuracy "
          f"{100 * clipped_accuracy:.2f} %, agreement {100 * float((clipped_pred == cnn).double().mean()):.2f} %",
          flush=True)

    started = time.perf_counter()
    delays, raw_delay = delay_starts(args, snn, loader, timesteps)
    timings["delay_estimate_s"] = round(time.perf_counter() - started, 2)

    # One run to the largest T; every T read from the per-step outputs.
    started = time.perf_counter()
    outputs, spikes, seconds = simulate(snn, images, timesteps[-1], args.batch, args.device)
    timings["simulate_s"] = round(time.perf_counter() - started, 2)
    rows = []
    for t in timesteps:
        d = delays[t]
        predictions = outputs[d:t].sum(0).argmax(1)
        rows.append({"timesteps": t, "delay_start": d, "readout_steps": t - d,
                     "accuracy": float((predictions == labels).double().mean()),
                     "agreement": float((predictions == cnn).double().mean()),
                     "spikes_per_image": float(spikes[:t].sum()) / args.n,
                     "simulate_s": round(float(seconds[t - 1]), 2)})
        print(f"T={t:4d}  readout steps {d}-{t - 1}  accuracy {100 * rows[-1]['accuracy']:6.2f} %  "
              f"agreement {100 * rows[-1]['agreement']:6.2f} %  spikes/image {rows[-1]['spikes_per_image']:,.0f}  "
              f"({rows[-1]['simulate_s']:.1f} s)", flush=True)

    theta = thresholds(snn)
    result = {
        "tool": "spikingjelly ann2snn",
        "versions": versions,
        "model": str(MODEL.relative_to(ROOT.parent)),
        "recipe": args.recipe,
        "recipe_class": type(recipe).__name__,
        "recipe_args": recipe_args,
        "neuron": {"class": neuron_kinds, "count": len(spiking), "v_threshold": v_threshold, "v_init": v_init,
                   "reset": "subtract"},
        "input": "analog (the image as input current at every step)",
        "calibration": {"images": f"cifar10_train_10k 0-{args.calib_n - 1}", "calib_n": args.calib_n,
                        "calib_batch": args.calib_batch, "batches": len(loader),
                        "threshold_updates": len(loader),
                        "update_rule": ("θ += 2·mean(max(relu(x) − θ, 0)) per channel, from θ = 0, "
                                        "ANN clipped at θ" if args.recipe == "ltb" else
                                        f"scale ← 0.9·scale + 0.1·{recipe_args['mode']} of the batch (first batch: "
                                        "taken as is)")},
        "readout": {"delay_start": args.delay_start, "delay_batches": args.delay_batches,
                    "estimated_delay_start": raw_delay,
                    "rule": "argmax of the sum of the output layer over steps delay_start..T-1"},
        "thresholds": {"median_of_layer_means": statistics.median(r["mean"] for r in theta) if theta else None,
                       "layers": theta},
        "n": args.n,
        "images": f"cifar10_test 0-{args.n - 1}",
        "device": (f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
                   if args.device == "cpu" else args.device),
        "batch": args.batch,
        "cnn_accuracy": cnn_accuracy,
        "torch_copy_check": {"images": f"cifar10_test 0-{CHECK_N - 1}", "mismatched": mismatched},
        "clipped_ann_accuracy": clipped_accuracy,
        "clipped_ann_agreement": float((clipped_pred == cnn).double().mean()),
        "timings": timings,
        "results": rows,
    }
    write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
