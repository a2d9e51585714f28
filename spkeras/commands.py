"""The CLI's subcommands, each a thin wrapper over the Python API."""

from __future__ import annotations

from pathlib import Path

from . import api, distributed
from .atomic import write_json, write_text
from .evaluation import EvaluationResult, default_checkpoints
from .formatting import format_table
from .ir import neurons
from .methods.framework import pool_before_relu, spike_sites
from .metrics import cnn_operations
from .options import method_overrides
from .passes import canonicalisation_report, canonicalise
from .plots import plot_curves
from .snn import save_snn


def model_argument(args):
    """The model to hand to the API: the path itself, or the imported graph when --input-shape or
    --torch-class (PyTorch, ONNX) or --input-scale/--input-mean/--input-std say how to read it."""
    shape, torch_class = getattr(args, "input_shape", None), getattr(args, "torch_class", None)
    preprocessing = {key: getattr(args, f"input_{key}", None) for key in ("scale", "mean", "std")}
    preprocessing = {k: v for k, v in preprocessing.items() if v is not None} or None
    if shape is None and torch_class is None and preprocessing is None:
        return args.model
    return api.load_model(args.model, input_shape=shape, torch_class=torch_class, preprocessing=preprocessing)


def data_argument(args, path):
    """The data to hand to the API: the path itself, or the dataset read with --data-keys,
    --data-layout and --image-size when given."""
    options = {"keys": args.data_keys, "layout": args.data_layout, "image_size": args.image_size}
    if path is None or all(v is None for v in options.values()):
        return path
    return api.as_dataset(path, **{k: v for k, v in options.items() if v is not None})


def run_info(args) -> int:
    loaded = api.load_model(model_argument(args))
    graph = loaded.cnn if isinstance(loaded, api.SpikingNetwork) else canonicalise(loaded)
    passes = [] if isinstance(loaded, api.SpikingNetwork) else canonicalisation_report(loaded)
    moved = pool_before_relu(graph.clone()) if args.maxpool != "gate" else graph
    shown = {n.name for n in graph.nodes}  # a ReLU moved after its max pool: the pool's row carries its neurons
    sites = {s if s in shown else moved.node(s).inputs[0] for s in spike_sites(moved, args.spiking_pools)}
    ops = cnn_operations(graph)
    rows = []
    for node in graph.nodes:
        rows.append([node.name, node.op, node.source, "x".join(map(str, node.shape)), neurons(node),
                     "yes" if node.name in sites else "", f"{ops.per_layer.get(node.name, 0) / 1e6:.3f}"])
    print(format_table(["node", "op", "from", "shape", "neurons", "spiking", "MMAC"], rows))
    spiking = [r for r in rows if r[5]]
    print(f"\n{len(spiking)} spiking layers, {sum(r[4] for r in spiking)} spiking neurons; "
          f"CNN per image: {ops.macs / 1e6:.2f} M multiply-accumulates, {ops.eq13 / 1e6:.2f} MOps by Eq. 13")
    print("\n".join(["passes (the table shows their result):", *[f"  {line}" for line in passes]]) if passes else
          "passes: nothing to fold or remove" + (" (a converted network)" if isinstance(loaded, api.SpikingNetwork) else ""))
    if args.json:
        write_json(args.json, {"model": args.model, "macs_per_image": ops.macs, "eq13_ops_per_image": ops.eq13,
                               "passes": passes,
                               "layers": [dict(zip(["node", "op", "source", "shape", "neurons", "spiking", "mmac"], r))
                                          for r in rows]})
    return 0


def run_convert(args) -> int:
    net = api.convert(model_argument(args), calibration=data_argument(args, args.calib), method=args.method,
                      timesteps=args.timesteps, calib_n=args.calib_n, batch_size=args.batch_size, device=args.device,
                      **method_overrides(args))
    save_snn(net, args.output)
    print(f"wrote {args.output}: {net.method.name}, {len(net.spike_nodes)} spiking layers, made for T={net.timesteps}")
    return 0


def summary(result: EvaluationResult) -> str:
    """A short text report of one evaluation."""
    shown = [t for t in default_checkpoints(result.timesteps) if t >= min(8, result.timesteps)]
    rows = [[t, result.snn_accuracy[t - 1] * 100, result.agreement[t - 1] * 100, result.mops_at(t)]
            for t in shown if result.snn_accuracy[t - 1] is not None]
    head = (f"{result.method} | mode: {result.mode} ({result.mode_description}) | n={result.n} | "
            f"device={result.device} | CNN accuracy {result.cnn_accuracy * 100:.2f}%")
    table = format_table(["T", "SNN acc %", "agree w/ CNN %", "MOps/image"], rows)
    energy = result.energy_pj
    tail = (f"energy per image: SNN {energy['snn_per_image'] / 1e6:.2f} µJ vs CNN {energy['cnn_per_image'] / 1e6:.2f} µJ "
            f"({energy['ac_pj']} pJ/AC, {energy['mac_pj']} pJ/MAC); SNN time {result.timings['snn_s']:.1f} s"
            f"{_event_share(result.timings)}, peak memory {result.timings['peak_memory_mb']:.0f} MiB")
    return "\n".join([head, table, tail, *result.notes])


def _event_share(timings: dict) -> str:
    """How much of the conv work ran event-driven, for the summary line."""
    share = timings.get("event_conv_share")
    return "" if share is None else f" ({share:.0%} of conv-layer calls event-driven)"


def run_evaluate(args) -> int:
    model = model_argument(args)
    switches = method_overrides(args)
    result = api.evaluate(model, data=data_argument(args, args.data), calibration=data_argument(args, args.calib),
                          method=args.method, timesteps=args.timesteps,
                          n=args.n, mode=args.mode, readout=switches.pop("readout"), device=args.device,
                          seed=args.seed, batch_size=args.batch_size, calib_n=args.calib_n,
                          checkpoints=args.checkpoints, chunk=args.chunk, early_exit=args.early_exit, conv=args.conv,
                          **switches)
    if model is not args.model:
        result.model = str(args.model)
    if distributed.world(args.device)[0] != 0:
        return 0  # rank 0 reports for the whole evaluation
    print(summary(result))
    if args.json:
        result.save_json(args.json)
    if args.csv:
        result.save_csv(args.csv)
    if args.plot:
        plot_curves({result.method: result}, "accuracy", args.plot)
        plot_curves({result.method: result}, "mops", Path(args.plot).with_name(Path(args.plot).stem + "_mops.png"))
    return 0


def run_reproduce(args) -> int:
    from .reproduce import Settings, reproduce, summary

    settings = Settings(
        models=args.model, data=args.data, calib=args.calib, out=args.out, model_nobn=args.model_nobn, n=args.n,
        calib_n=args.calib_n, device=args.device, seed=args.seed, batch_size=args.batch_size,
        timesteps=args.timesteps, timesteps_list=args.timesteps_list, bits_list=args.bits_list,
        rounding=args.rounding, layers=args.layers, near_zero=args.near_zero,
    )
    print(summary(reproduce(args.figure, settings), args.out))
    return 0


def run_export(args) -> int:
    """Convert (unless given a .snn) and write the spiking network as a NIR graph."""
    import sys

    from .export.nir import write_nir

    loaded = api.load_model(model_argument(args))
    net = loaded if isinstance(loaded, api.SpikingNetwork) else api.convert(
        loaded, calibration=data_argument(args, args.calib), method=args.method, timesteps=args.timesteps,
        calib_n=args.calib_n, batch_size=args.batch_size, device=args.device, **method_overrides(args))
    for warning in write_nir(net, args.nir):
        print(f"spkeras: warning: {warning}", file=sys.stderr)
    print(f"wrote {args.nir}: NIR graph of {net.method.name}, {len(net.spike_nodes)} spiking layers, "
          f"made for T={net.timesteps}")
    return 0


def run_demo(args) -> int:
    from .demo import run_demo as demo

    print(demo(args.out, device=args.device, seed=args.seed))
    return 0
