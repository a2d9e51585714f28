"""Command-line interface: ``spkeras info|convert|evaluate|export|reproduce|demo``.

Every user error (bad file, unsupported layer, nonsense option) ends in one line on stderr
and exit status 2, with no traceback and no partial output file.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from .errors import SpkerasError
from . import options
from .figures import FIGURES
from .method import CHOICES
from .version import __version__

EPILOG = options.presets_help()
MODEL_HELP = ("the CNN: Keras (.keras, .h5), PyTorch (.pt/.pth TorchScript, or a state dict with --torch-class; "
              "--input-shape) or ONNX (.onnx)")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _input_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be C,H,W or F (positive integers), got {text!r}") from None
    if len(shape) not in (1, 3) or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"must be C,H,W or F (positive integers), got {text!r}")
    return shape


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated numbers, got {text!r}") from None


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """How to read PyTorch (and size-free ONNX) models."""
    parser.add_argument("--input-shape", type=_input_shape, metavar="C,H,W",
                        help="input shape of a PyTorch (or size-free ONNX) model, e.g. 1,28,28")
    parser.add_argument("--torch-class", metavar="module:Class",
                        help="the network class a PyTorch state-dict file (.pt/.pth) belongs to")
    parser.add_argument("--input-scale", type=float, metavar="S",
                        help="the model expects pixels × S (spkeras reads them in [0, 1]): 255 for models fed raw "
                             "0-255 values, e.g. Keras models that start with Rescaling(1/255)")
    parser.add_argument("--input-mean", type=_floats, metavar="M[,M,M]",
                        help="per-channel mean the model subtracts (after --input-scale), e.g. 0.485,0.456,0.406")
    parser.add_argument("--input-std", type=_floats, metavar="S[,S,S]",
                        help="per-channel std the model divides by, e.g. 0.229,0.224,0.225")


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr (exit status 2), like every other error."""

    def error(self, message: str):
        self.exit(2, f"spkeras: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def add_method_options(parser: argparse.ArgumentParser) -> None:
    """The preset, every switch of the conversion framework, and the calibration images."""
    group = options.add_method_options(parser)
    group.add_argument("--calib", help="calibration images for λ (.npz, CIFAR or MNIST archive)")
    group.add_argument("--calib-n", type=_positive_int, default=2000, help="use the first N calibration images (2000)")


def _pair(text: str, kind=str) -> tuple:
    parts = text.split(",")
    try:
        values = tuple(kind(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 2 or not all(values):
        raise argparse.ArgumentTypeError(f"must be two comma-separated values, got {text!r}")
    return values


def add_data_options(parser: argparse.ArgumentParser) -> None:
    """How to read --data and --calib beyond the defaults."""
    group = parser.add_argument_group("reading --data and --calib")
    group.add_argument("--data-keys", type=_pair, metavar="X,Y",
                       help="names of the image and label arrays in an .npz, or the stems of X.npy/Y.npy in a folder "
                            "(default: x,y, then x_test,y_test and x_train,y_train)")
    group.add_argument("--data-layout", choices=("auto", "nhwc", "nchw"),
                       help="arrays are channels-last (nhwc) or channels-first (nchw); auto (default for .npz/.npy): "
                            "whichever matches the model's input shape")
    group.add_argument("--image-size", type=lambda t: _pair(t, int), metavar="H,W",
                       help="resize the images of an image folder (class subfolders) to H x W (default: no resizing; "
                            "they must then share one size)")


def add_conversion_options(parser: argparse.ArgumentParser) -> None:
    """Method switches, run options, data and model-reading options, for every converting command."""
    add_method_options(parser)
    add_run_options(parser)
    add_data_options(parser)
    add_model_options(parser)


def add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    parser.add_argument("--seed", type=int, default=0, help="seed for Poisson input and any randomness (0)")
    parser.add_argument("--batch-size", type=_positive_int, default=100, help="images per batch (100)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated integers, got {text}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"must be comma-separated integers, got {text!r}")
    return values


def add_reproduce_parser(sub) -> None:
    rep = sub.add_parser(
        "reproduce", help="the paper's Figures 3a-3e, 4, 5 and Table 2 (CSV, JSON, PNG; resumable)",
        description="Reproduce a figure of the paper: writes OUT/FIGURE.csv, .json and .png. Every simulation is "
        "cached under OUT/cache as soon as it finishes, so a rerun skips what is done and an interrupted run "
        "loses only the simulation in progress. A method whose network does not depend on T is simulated once, at "
        "the largest T, and read after every t; one that does (spread TRE, rate or delay calibration) needs one run "
        "per T.")
    rep.add_argument("figure", choices=[*FIGURES, "all"],
                     help="; ".join(f"{name}: {what}" for name, what in FIGURES.items()) + "; all of them")
    rep.add_argument("--model", action="append", required=True,
                     help="CNN (.keras/.h5); give it several times for fig3b's checkpoints (fig3a averages them; "
                     "other figures use the first)")
    rep.add_argument("--model-nobn", help="the same network trained without BN and biases (fig3d)")
    rep.add_argument("--data", required=True, help="test images (.npz with x/y, MNIST .npz, CIFAR batch folder)")
    rep.add_argument("--calib", required=True, help="calibration images for λ")
    rep.add_argument("--calib-n", type=_positive_int, default=2000, help="use the first N calibration images (2000)")
    rep.add_argument("--n", type=_positive_int, help="evaluate the first N test images (default: all)")
    rep.add_argument("--timesteps", type=_positive_int, help="the T of fig3a (default 128) and fig5 (default 64)")
    rep.add_argument("--timesteps-list", type=_int_list,
                     help="comma-separated T axis (default 32,64,128,256,512,1024); fig3b uses 128 and 256, "
                     "those of them listed, else the two largest")
    rep.add_argument("--bits-list", type=_int_list, help="fig4's weight bits (32,10,9,8,7)")
    rep.add_argument("--rounding", choices=CHOICES["rounding"], help="fig4's rounding to integers (trunc)")
    rep.add_argument("--layers", type=_int_list, help="fig5's spiking layers, 1-based (4,8,12,16)")
    rep.add_argument("--near-zero", type=float, default=0.1,
                     help="table2: accuracy loss (points) that counts as near-zero (0.1)")
    rep.add_argument("--out", required=True, help="output folder (and its cache/)")
    add_run_options(rep)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="spkeras",
        description="Convert a trained CNN into a spiking neural network, simulate it step by step, "
        "and measure accuracy at every timestep, spikes, synaptic operations and energy.",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"spkeras {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="layers, neurons, CNN operations (Eq. 13) and what will spike")
    info.add_argument("model", help=f"{MODEL_HELP}, or a converted network (.snn)")
    options.add_switch(info, "spiking_pools")
    options.add_switch(info, "maxpool")
    info.add_argument("--json", help="also write the table as JSON")
    add_model_options(info)

    conv = sub.add_parser("convert", help="convert a CNN into a spiking network file (.snn)")
    conv.add_argument("model", help=MODEL_HELP)
    conv.add_argument("-o", "--output", required=True, help="output .snn file (safetensors + JSON metadata)")
    conv.add_argument("--timesteps", type=_positive_int, default=256, help="T the network is made for (spread TRE)")
    add_conversion_options(conv)

    ev = sub.add_parser("evaluate", help="evaluate CNN and SNN on a dataset; accuracy at every timestep")
    ev.add_argument("model", help=f"{MODEL_HELP}, or a converted network (.snn: no conversion)")
    ev.add_argument("--data", required=True, help="test images (.npz with x/y, MNIST .npz, CIFAR batch folder)")
    ev.add_argument("--timesteps", type=_positive_int, default=256, help="T, the simulation length (256)")
    ev.add_argument("--n", "--num-images", dest="n", type=_positive_int,
                    help="evaluate the first N images (spell it --num-images under torchrun, whose parser takes --n)")
    ev.add_argument("--mode", choices=("simulate", "count"), default="simulate",
                    help="simulate: time-stepped IF dynamics; count: the closed-form spike-count estimate")
    ev.add_argument("--checkpoints", type=_int_list,
                    help="count mode: comma-separated t to evaluate (default: powers of two and T)")
    ev.add_argument("--chunk", type=_positive_int, default=8,
                    help="timesteps per batch through the stateless layers (8): memory ∝ batch size × chunk")
    ev.add_argument("--conv", choices=("auto", "dense"), default="auto",
                    help="auto: on the CPU, a conv layer (≥ 64 output channels) whose input spikes are sparse "
                         "(< 10 %% nonzero) runs event-driven, each spike adding its weights (work ∝ spikes); "
                         "dense: always the dense convolution. Same current (Eq. 3), different float rounding order")
    ev.add_argument("--early-exit", type=_positive_int, metavar="K",
                    help="stop each image once its prediction has been the same for K steps: a different "
                         "readout, reported with the mean stop step and the work saved")
    ev.add_argument("--json", help="write the full result as JSON")
    ev.add_argument("--csv", help="write accuracy and MOps per timestep as CSV")
    ev.add_argument("--plot", help="write accuracy-vs-timestep PNG (MOps plot beside it)")
    add_conversion_options(ev)

    export = sub.add_parser("export", help="write a converted network as a NIR graph (neuromorphic exchange format)")
    export.add_argument("model", help=f"{MODEL_HELP} (converted first, needs --calib), or a converted network (.snn)")
    export.add_argument("--nir", required=True, help="output NIR file (HDF5; see docs/nir.md for the neuron semantics)")
    export.add_argument("--timesteps", type=_positive_int, default=256, help="T the network is made for (spread TRE)")
    add_conversion_options(export)

    add_reproduce_parser(sub)

    demo = sub.add_parser("demo", help="built-in demo: ECC, ecc+ and 2017-SNN on a small MNIST CNN, offline")
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
        with warnings.catch_warnings():  # library noise (deprecations, pickle protocol notes) is not for CLI users
            warnings.filterwarnings("ignore", module=r"(torch|keras|onnx|h5py|numpy|safetensors|nir|tqdm)(\.|$)")
            return getattr(commands, f"run_{args.command}")(args)
    except SpkerasError as exc:
        print(f"spkeras: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # an output path that cannot be written, a full disk…
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"spkeras: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("spkeras: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
