"""The closed-form spike-count model (the paper's tool's estimate): one forward pass per t.

It ignores *when* spikes arrive. With total input current Z over t steps, a neuron that
resets by subtraction fires N = clip(⌊(V(0) + Z + t·b_TRE + Σ c(t))/V_thr⌋, 0, t) times (c: a per-step
current correction, where calibrated). This is exact
when no current is negative and none exceeds V_thr in one step; otherwise (and for reset to
zero) it is an estimate, and every output produced by it is labelled ``count``.
"""

from __future__ import annotations

import time

import torch

from .encoding import make_encoder
from .ir import Node, charge_of_step_biases, initial_potential
from .metrics import flat_fan_outs, source_layers
from .ops import apply_stateless, run_graph
from .progress import progress_bar
from .simulate import SimulationRecord
from .snn import SpikingNetwork


def spike_count(node: Node, current: torch.Tensor, steps: int, fire: bool = True) -> torch.Tensor:
    """Closed-form spike count of a spike node after ``steps`` steps of total input ``current``."""
    a = node.attrs
    potential = initial_potential(node) + current + steps * a["step_current"] + charge_of_step_biases(node, steps)
    if not fire:
        return potential
    return torch.clamp(torch.floor(potential / a["threshold"]), 0, steps)


def closed_form(
    net: SpikingNetwork,
    images: torch.Tensor,
    checkpoints: list[int],
    readout: str | None = None,
    batch_size: int = 100,
    device: str = "cpu",
    seed: int = 0,
    image_ids: torch.Tensor | None = None,
) -> SimulationRecord:
    """Closed-form counts at each checkpoint t (ascending), in the same record as a simulation."""
    started = time.perf_counter()
    readout = readout or net.method.readout
    graph = net.to(device).graph
    fanouts = flat_fan_outs(net.graph, device)
    layers = source_layers(graph)
    steps = sorted(set(checkpoints))
    n = images.shape[0]
    ids = torch.arange(n) if image_ids is None else image_ids
    predictions = torch.empty((len(steps), n), dtype=torch.int64)
    spikes = torch.zeros((len(steps), len(layers)), dtype=torch.float64)
    synops = torch.zeros_like(spikes)
    skip = {graph.input.name} if net.method.encoding == "analog" else set()
    if readout == "potential":
        skip.add(graph.output)
    for start in progress_bar(range(0, n, batch_size), desc="closed form", unit="batch"):
        batch = images[start : start + batch_size].to(device)
        encoder = make_encoder(batch, net.method, ids[start : start + batch.shape[0]], seed)
        input_counts, done = torch.zeros_like(batch), 0
        for k, t in enumerate(steps):
            input_counts = input_counts + encoder.counts(t - done) if not encoder.constant else encoder.counts(t)
            done = t
            observed = {}

            def apply(node, inputs, t=t):
                if node.op == "spike":
                    return spike_count(node, inputs[0], t, fire=not (node.name == graph.output and readout == "potential"))
                return apply_stateless(node, inputs, bias_scale=float(t))

            def observe(node, value):
                if node.name in layers:
                    observed[node.name] = value

            with torch.no_grad():
                out = run_graph(graph, input_counts, apply=apply, observe=observe)
            predictions[k, start : start + batch.shape[0]] = out.argmax(dim=-1).cpu()
            for index, name in enumerate(layers):
                if name in skip:
                    continue
                per_neuron = observed[name].sum(0).flatten().double()
                spikes[k, index] += float(per_neuron.sum())
                synops[k, index] += float(per_neuron @ fanouts[name].double())
    return SimulationRecord(mode="count", layers=layers, steps=steps, predictions=predictions, spikes=spikes,
                            synops=synops, seconds=time.perf_counter() - started)
