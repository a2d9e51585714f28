"""Command-line interface: ``spkeras info|convert|evaluate|demo``.

Every user error (bad file, unsupported layer, nonsense option) ends in one line on stderr
and exit status 2, with no traceback and no partial output file.
"""

from __future__ import annotations

import argparse
import sys

from .errors import SpkerasError
from .methods import PRESETS
from .methods.settings import CHOICES

EPILOG = "Methods: " + "; ".join(f"{name}: {m.citation}" for name, m in PRESETS.items())


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _on_off(text: str) -> bool:
    if text not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"must be on or off, got {text}")
    return text == "on"


def add_method_options(parser: argparse.ArgumentParser) -> None:
    """The preset and every switch of the conversion framework."""
    group = parser.add_argument_group("conversion method (a preset, then switches that override it)")
    group.add_argument("--method", default="ecc", choices=sorted(PRESETS), help="preset (default: ecc)")
    group.add_argument("--tre", choices=CHOICES["tre"], help="TRE (Eq. 9): spread over T, initial potential, off")
    group.add_argument("--eta", type=float, help="TRE η in [0, 1) (ecc: 0.5)")
    group.add_argument("--kappa", type=float, help="CN current amplification κ (ecc: 100)")
    group.add_argument("--cn", type=_on_off, metavar="on|off", help="current normalisation: V_thr = κ (on) or 1 (off)")
    group.add_argument("--cmb", type=_on_off, metavar="on|off", help="fold BN with its ε (on) or without (off)")
    group.add_argument("--statistic", choices=CHOICES["statistic"], help="λ: max activation, percentile, or none")
    group.add_argument("--percentile", type=float, help="percentile for --statistic percentile (99.9)")
    group.add_argument("--reset", choices=CHOICES["reset"], help="reset by subtraction or to zero")
    group.add_argument("--encoding", choices=CHOICES["encoding"], help="input: analog current, Algorithm 1, Poisson")
    group.add_argument("--kappa0", type=float, help="Algorithm 1 input threshold κ₀ (100)")
    group.add_argument("--spiking-pools", type=_on_off, metavar="on|off", help="spiking neurons after average pooling")
    group.add_argument("--calib", help="calibration images for λ (.npz, CIFAR or MNIST archive)")
    group.add_argument("--calib-n", type=_positive_int, default=2000, help="use the first N calibration images (2000)")


def method_overrides(args) -> dict:
    return {
        "tre": args.tre, "eta": args.eta, "kappa": args.kappa, "cn": args.cn, "cmb": args.cmb,
        "statistic": args.statistic, "percentile": args.percentile, "reset": args.reset,
        "encoding": args.encoding, "kappa0": args.kappa0, "spiking_pools": args.spiking_pools,
    }


def add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    parser.add_argument("--seed", type=int, default=0, help="seed for Poisson input and any randomness (0)")
    parser.add_argument("--batch-size", type=_positive_int, default=100, help="images per batch (100)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spkeras",
        description="Convert a trained CNN into a spiking neural network, simulate it step by step, "
        "and measure accuracy at every timestep, spikes, synaptic operations and energy.",
        epilog=EPILOG,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="layers, neurons, CNN operations (Eq. 13) and what will spike")
    info.add_argument("model", help="Keras model (.keras, .h5) or converted network (.snn)")
    info.add_argument("--spiking-pools", type=_on_off, default=True, metavar="on|off")
    info.add_argument("--json", help="also write the table as JSON")

    conv = sub.add_parser("convert", help="convert a CNN into a spiking network file (.snn)")
    conv.add_argument("model", help="Keras model (.keras or .h5)")
    conv.add_argument("-o", "--output", required=True, help="output .snn file (safetensors + JSON metadata)")
    conv.add_argument("--timesteps", type=_positive_int, default=256, help="T the network is made for (spread TRE)")
    add_method_options(conv)
    add_run_options(conv)

    ev = sub.add_parser("evaluate", help="evaluate CNN and SNN on a dataset; accuracy at every timestep")
    ev.add_argument("model", help="Keras model (.keras, .h5) or converted network (.snn)")
    ev.add_argument("--data", required=True, help="test images (.npz with x/y, MNIST .npz, CIFAR batch folder)")
    ev.add_argument("--timesteps", type=_positive_int, default=256, help="T, the simulation length (256)")
    ev.add_argument("--n", type=_positive_int, help="evaluate the first N images")
    ev.add_argument("--mode", choices=("simulate", "count"), default="simulate",
                    help="simulate: time-stepped IF dynamics; count: the closed-form spike-count estimate")
    ev.add_argument("--readout", choices=CHOICES["readout"], help="output spike count (default) or membrane potential")
    ev.add_argument("--checkpoints", type=lambda s: [int(v) for v in s.split(",")],
                    help="count mode: comma-separated t to evaluate (default: powers of two and T)")
    ev.add_argument("--json", help="write the full result as JSON")
    ev.add_argument("--csv", help="write accuracy and MOps per timestep as CSV")
    ev.add_argument("--plot", help="write accuracy-vs-timestep PNG (MOps plot beside it)")
    add_method_options(ev)
    add_run_options(ev)

    demo = sub.add_parser("demo", help="built-in demo: ECC vs 2017-SNN on a small MNIST CNN, offline")
    demo.add_argument("--out", default="spkeras-demo", help="folder for the table, JSON and plots")
    add_run_options(demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from . import commands
    from .progress import set_quiet

    if getattr(args, "quiet", False):
        set_quiet(True)
    try:
        return getattr(commands, f"run_{args.command}")(args)
    except SpkerasError as exc:
        print(f"spkeras: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("spkeras: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
