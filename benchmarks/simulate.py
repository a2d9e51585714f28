"""Simulation speed benchmark: one JSON line per configuration (not a test).

R = time(SNN simulation, T steps) / (T × time(CNN forward on the same images)), both measured
here, on the same device, interleaved over rounds (medians), so machine noise hits both alike.
Run it on a quiet machine: under load torch slows several-fold.

    python benchmarks/simulate.py [--device cuda] [--rounds 3] [--vgg PATH] [--n 50] [--batch B]
                                  [--conv auto,dense] [--only vgg16-cifar10-ecc-64]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from spkeras import api
from spkeras.demo import asset
from spkeras.evaluation import checked_images, peak_memory_mb
from spkeras.ops import run_graph
from spkeras.progress import set_quiet
from spkeras.simulate import simulate
from spkeras.closed_form import closed_form

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CNN_REPEATS = 5  # CNN passes per round: one pass is short, so its median needs more samples


def timed(fn, device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def bench(name: str, model: str, data: str, calib: str, method: str, timesteps: int, n: int, batch: int,
          device: str, rounds: int, convs: list[str]) -> list[dict]:
    """One line per conv kernel; the kernels, the CNN and the count mode take turns in every round."""
    net = api.convert(model, calib, method=method, timesteps=timesteps, calib_n=500, device=device)
    images = checked_images(api.as_dataset(data, n), net.cnn)
    cnn = net.to(device).cnn
    shares = {}

    def simulated(conv: str) -> None:
        shares[conv] = simulate(net, images, timesteps, batch_size=batch, device=device, conv=conv).event_conv_share

    with torch.no_grad():
        run_graph(cnn, images[:batch].to(device))  # warm-up
        cnn_times, count_times, snn_times = [], [], {conv: [] for conv in convs}
        for _ in range(rounds):
            cnn_times += [timed(lambda: [run_graph(cnn, images[s:s + batch].to(device)) for s in range(0, n, batch)],
                                device) for _ in range(CNN_REPEATS)]
            for conv in convs:
                snn_times[conv].append(timed(lambda: simulated(conv), device))
            count_times.append(timed(lambda: closed_form(net, images, [timesteps], batch_size=batch, device=device),
                                     device))
    cnn_s = statistics.median(cnn_times)
    lines = []
    for conv in convs:
        snn_s = statistics.median(snn_times[conv])
        lines.append({
            "network": name, "method": method, "device": device, "T": timesteps, "images": n, "batch": batch,
            "conv": conv, "event_conv_share": None if shares[conv] is None else round(shares[conv], 3),
            "snn_s": round(snn_s, 3), "cnn_forward_s": round(cnn_s, 4), "R": round(snn_s / (timesteps * cnn_s), 3),
            "images_per_s": round(n / snn_s, 2), "image_timesteps_per_s": round(n * timesteps / snn_s, 1),
            "count_mode_s": round(statistics.median(count_times), 3), "peak_memory_mb": round(peak_memory_mb(device)),
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "machine": platform.processor() or platform.machine(),
            "gpu": torch.cuda.get_device_name() if device.startswith("cuda") else None,
        })
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n", type=int, default=50, help="images for VGG-16")
    parser.add_argument("--vgg", default=str(SHARED / "models" / "vgg16_cifar10.keras"))
    parser.add_argument("--data", default=str(SHARED / "data" / "cifar10_test.npz"), help="CIFAR-10 test images")
    parser.add_argument("--calib", default=str(SHARED / "data" / "cifar10_train_10k.npz"), help="calibration images")
    parser.add_argument("--batch", type=int, default=None, help="images per batch for VGG-16 (default: all n)")
    parser.add_argument("--quick", action="store_true", help="demo network only")
    parser.add_argument("--conv", default="auto,dense", help="conv kernels to compare side by side (auto,dense)")
    parser.add_argument("--only", help="run only configurations whose network-method-T contains this text")
    args = parser.parse_args()
    set_quiet(True)
    demo = (asset("mnist_cnn.keras"), asset("mnist_test.npz"), asset("mnist_calib.npz"))
    configs = [("demo-mnist", *demo, "ecc", 64, 500, 500)]
    if not args.quick:
        cifar = (args.vgg, args.data, args.calib)
        for method in ("ecc", "rueckauer2017"):
            for t in (64, 256):
                configs.append(("vgg16-cifar10", *cifar, method, t, args.n, args.batch or args.n))
    for config in configs:
        if args.only and args.only not in f"{config[0]}-{config[4]}-{config[5]}":
            continue
        for line in bench(*config, device=args.device, rounds=args.rounds, convs=args.conv.split(",")):
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
