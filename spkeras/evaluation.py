"""Evaluation: CNN and SNN on the same images, and every measurement in one result."""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import resource
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .atomic import write_json, write_text
from .closed_form import closed_form
from .data import DataError, Dataset
from .errors import ConfigError
from .ir import Graph, neurons
from .metrics import ENERGY_PER_AC_PJ, ENERGY_PER_MAC_PJ, cnn_operations, energy_pj, fan_out
from .ops import run_graph, to_channels_first
from .simulate import RunOptions, SimulationRecord, simulate
from .snn import SpikingNetwork
from .version import __version__

MODES = {
    "simulate": "time-stepped integrate-and-fire simulation (Eq. 2-4), every timestep",
    "count": "closed-form spike counts (one forward pass per evaluated t); ignores spike timing",
}


@dataclass
class EvaluationResult:
    """Everything one evaluation measured; :meth:`to_dict` is the JSON document.

    Accuracies are fractions. ``snn_accuracy[t-1]`` and ``agreement[t-1]`` are after t steps
    (None where the mode did not evaluate t). Operation counts are per image.
    """

    method: str
    mode: str
    timesteps: int
    n: int
    readout: str
    cnn_accuracy: float
    snn_accuracy: list[float | None]
    agreement: list[float | None]
    evaluated_timesteps: list[int]
    spikes_per_layer: list[dict]
    synops: dict
    input_macs: dict
    macs: dict
    energy_pj: dict
    timings: dict
    settings: dict
    lambdas: dict
    device: str
    seed: int
    model: str = ""
    data: str = ""
    converted_for_timesteps: int = 0
    mode_description: str = ""
    spkeras_version: str = __version__
    notes: list[str] = field(default_factory=list)
    processes: int = 1
    early_exit: dict | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def accuracy_at(self, t: int) -> float | None:
        """SNN accuracy after t steps."""
        return self.snn_accuracy[t - 1]

    def mops_at(self, t: int) -> float | None:
        """Synaptic operations per image (millions) during the first t steps."""
        return self.synops["mops_per_image"][t - 1]

    def save_json(self, path) -> None:
        write_json(path, self.to_dict())

    def save_csv(self, path) -> None:
        """One row per timestep: accuracy, agreement with the CNN, cumulative MOps."""
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["t", "mode", "snn_accuracy", "cnn_accuracy", "agreement", "synops_mops_per_image"])
        for t in range(1, self.timesteps + 1):
            if self.snn_accuracy[t - 1] is None:
                continue
            writer.writerow([t, self.mode, self.snn_accuracy[t - 1], self.cnn_accuracy, self.agreement[t - 1],
                             self.synops["mops_per_image"][t - 1]])
        write_text(path, buffer.getvalue())


def checked_images(data: Dataset, graph: Graph) -> torch.Tensor:
    """Channels-first images, checked against the model's input shape. A dataset of layout
    ``auto`` is read channels-last or channels-first, whichever matches the model."""
    x = torch.from_numpy(np.ascontiguousarray(data.x))
    expected = tuple(graph.input.shape)
    readings = {"nhwc": to_channels_first(x), "nchw": x}
    fits = [name for name, value in readings.items()
            if data.layout in (name, "auto") and tuple(value.shape[1:]) == expected]
    if len(fits) == 2:
        raise DataError(f"{data.source}: images of shape {tuple(data.x.shape[1:])} fit the model's {expected} "
                        "channels-first and channels-last; say which (layout='nchw' or 'nhwc', --data-layout)")
    if not fits:
        shown = {"nhwc": "(H, W, C)", "nchw": "(C, H, W)", "auto": "(either layout)"}[data.layout]
        raise DataError(f"{data.source}: images have shape {tuple(data.x.shape[1:])} {shown} but the model expects "
                        f"{expected} (C, H, W)")
    return readings[fits[0]]


def images_and_labels(data: Dataset, graph: Graph) -> tuple[torch.Tensor, torch.Tensor]:
    """Channels-first images and labels, checked against the model's input shape and classes."""
    if not data.labelled:
        raise DataError(f"{data.source}: images without labels serve for calibration only; give (x, y) to evaluate")
    x = checked_images(data, graph)
    classes = graph.node(graph.output).shape[0]
    y = torch.from_numpy(data.y)
    if int(y.max()) >= classes or int(y.min()) < 0:
        raise DataError(f"{data.source}: labels run from {int(y.min())} to {int(y.max())} but the model has {classes} outputs")
    return x, y


def cnn_predictions(cnn: Graph, images: torch.Tensor, batch_size: int, device: str) -> torch.Tensor:
    """The CNN's predicted class for every image."""
    out = []
    with torch.no_grad():
        for start in range(0, images.shape[0], batch_size):
            out.append(run_graph(cnn, images[start : start + batch_size].to(device)).argmax(dim=1).cpu())
    return torch.cat(out)


def peak_memory_mb(device: str) -> float:
    """Peak resident memory of this process (CPU) or peak allocated GPU memory, in MiB."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def default_checkpoints(timesteps: int) -> list[int]:
    """Powers of two up to T, and T: where the closed form is evaluated by default."""
    return sorted({2 ** k for k in range(int(math.log2(timesteps)) + 1)} | {timesteps})


def run_snn(net: SpikingNetwork, images, options: RunOptions, mode: str = "simulate", checkpoints=None,
            image_ids=None) -> SimulationRecord:
    """Run the network time-stepped (``simulate``) or in closed form (``count``, at ``checkpoints``:
    default powers of two and T); both fill a :class:`SimulationRecord`. ``image_ids`` number the
    images (Poisson input)."""
    if options.early_exit is not None and mode != "simulate":
        raise ConfigError("early exit is a readout of the time-stepped simulation; use --mode simulate")
    if mode == "simulate":
        return simulate(net, images, options, image_ids=image_ids)
    if mode == "count":
        return closed_form(net, images, checkpoints or default_checkpoints(options.timesteps), readout=options.readout,
                           batch_size=options.batch_size, device=options.device, seed=options.seed,
                           image_ids=image_ids)
    raise ConfigError(f"mode must be simulate or count, got {mode!r}")


def layer_table(net: SpikingNetwork, record: SimulationRecord, n: int, fanouts: dict[str, torch.Tensor]) -> list[dict]:
    """Spikes per layer at the final step: per image, per neuron, rate, synops per image."""
    rows = []
    steps = record.steps[-1]
    for index, name in enumerate(record.layers):
        node = net.graph.node(name)
        count = neurons(node)
        per_image = float(record.spikes[-1, index]) / n
        rows.append({
            "layer": name,
            "source": node.source or ("input encoding" if node.op == "input" else name),
            "neurons": count,
            "threshold": node.attrs.get("threshold"),
            "spikes_per_image": per_image,
            "spikes_per_neuron": per_image / count,
            "rate": per_image / count / steps,
            "synops_per_image": float(record.synops[-1, index]) / n,
            "fan_out_mean": float(fanouts[name].mean()),
        })
    return rows


def summarise(net: SpikingNetwork, record: SimulationRecord, labels: torch.Tensor, cnn_pred: torch.Tensor,
              timesteps: int, readout: str, energy: tuple[float, float] = (ENERGY_PER_AC_PJ, ENERGY_PER_MAC_PJ)) -> dict:
    """Accuracy, agreement, operation counts and energy as the result's fields."""
    n = labels.shape[0]
    accuracy, agreement, mops = [None] * timesteps, [None] * timesteps, [None] * timesteps
    for row, t in enumerate(record.steps):
        accuracy[t - 1] = float((record.predictions[row] == labels).double().mean())
        agreement[t - 1] = float((record.predictions[row] == cnn_pred).double().mean())
        mops[t - 1] = float(record.synops[row].sum()) / n / 1e6
    synops_final = float(record.synops[-1].sum()) / n
    fanouts = fan_out(net.graph)
    analog_synapses = float(fanouts[net.graph.input.name].sum()) if net.method.encoding == "analog" else 0.0
    steps_run = float(record.exit_steps.double().mean()) if record.exit_steps is not None else timesteps
    input_macs = analog_synapses * steps_run
    ops = cnn_operations(net.cnn)
    ac_pj, mac_pj = energy
    snn_energy = energy_pj(synops_final, input_macs, ac_pj, mac_pj)
    cnn_energy = energy_pj(0.0, ops.macs, ac_pj, mac_pj)
    return {
        "snn_accuracy": accuracy, "agreement": agreement, "evaluated_timesteps": list(record.steps),
        "spikes_per_layer": layer_table(net, record, n, fanouts),
        "synops": {"per_image": synops_final, "mops_per_image": mops,
                   "mops_per_image_per_timestep": synops_final / timesteps / 1e6},
        "input_macs": {"per_image": input_macs, "mops_per_image": input_macs / 1e6,
                       "note": "analog input: the first layer's multiply-accumulates at every step"
                       if analog_synapses else "spiking input: counted in synops"},
        "macs": {"eq13_per_image": ops.eq13, "mac_per_image": ops.macs, "eq13_mops_per_image": ops.eq13 / 1e6,
                 "nominal_mac_per_image": ops.nominal_macs},
        "energy_pj": {"snn_per_image": snn_energy, "cnn_per_image": cnn_energy,
                      "snn_over_cnn": snn_energy / cnn_energy if cnn_energy else None,
                      "ac_pj": ac_pj, "mac_pj": mac_pj},
        "early_exit": early_exit_summary(record, timesteps),
    }


def early_exit_summary(record: SimulationRecord, timesteps: int) -> dict | None:
    """How early images stopped (None without early exit)."""
    if record.exit_steps is None:
        return None
    exits = record.exit_steps.double()
    return {"mean_exit_step": float(exits.mean()), "stopped_before_t": float((exits < timesteps).double().mean()),
            "image_steps_saved": 1.0 - float(exits.mean()) / timesteps,
            "note": "a different readout: each image stops once its prediction has been stable for "
                    "the given number of steps; later predictions repeat it, operations stop there"}
