"""The calibrations as they were before the layer walk, kept as the judge of
:mod:`spkeras.layerwise`: every layer n is measured by a full simulation from the input of the
network cut after n (rate calibration) or of the whole network (Spike-Norm), O(L²) layer
simulations. ``benchmarks/conversion.py`` times them against the walk."""

from __future__ import annotations

import torch

from spkeras.methods.framework import build, prepare
from spkeras.methods.rate_calibration import (StepSums, channel_means, correct, correctable, rate_model_means,
                                              set_step_bias)
from spkeras.methods.readout_calibration import calibrate_readout_delay
from spkeras.simulate import MaxCurrent, NeuronCounts, RunOptions, simulate
from spkeras.snn import SpikingNetwork


def prefix(net: SpikingNetwork, name: str) -> SpikingNetwork:
    """The network cut after node ``name`` (which becomes its output); tensors are shared."""
    nodes = net.graph.nodes[: [n.name for n in net.graph.nodes].index(name) + 1]
    return SpikingNetwork(net.graph.replace(nodes, name), net.method, net.timesteps, net.lambdas, net.cnn)


def calibrate_rates_by_prefixes(net: SpikingNetwork, images: torch.Tensor, iterations: int,
                                device: str = "cpu") -> SpikingNetwork:
    """Step-bias and rate calibration, each layer measured by simulating the prefix up to it from
    the input."""
    targets, target_currents = rate_model_means(net, images)
    options = RunOptions(timesteps=net.timesteps, readout="spikes", device=device)
    for node in net.spike_nodes:
        if net.method.step_bias:
            measured = StepSums(node.name, net.timesteps)
            simulate(prefix(net, node.name), images, options, [measured])
            set_step_bias(node, measured.means(), target_currents[node.name], net.graph.dtype)
        for _ in range(iterations if correctable(net, node) else 0):
            rates, counts = StepSums(node.name, net.timesteps, of="spikes"), NeuronCounts([node.name])
            simulate(prefix(net, node.name), images, options, [rates, counts])
            # the mean rate as the earlier procedure computed it, from per-neuron counts: the same bits
            assert torch.equal(rates.total_means(), channel_means(counts.totals[node.name]))
            correct(net, node, targets[node.name], rates)
    return net


def spike_norm_by_full_runs(graph, net: SpikingNetwork, images: torch.Tensor, device: str = "cpu") -> SpikingNetwork:
    """Spike-Norm, each layer's largest current probed in a simulation of the whole network."""
    lambdas = dict(net.lambdas)
    for node in net.spike_nodes:
        peak = MaxCurrent(node.name)
        simulate(net, images, RunOptions(timesteps=net.method.spikenorm_timesteps, device=device), [peak])
        current = net.graph.node(node.name).attrs["threshold"]
        lambdas[node.name] = lambdas[node.name] * peak.value / current
        net = build(graph, lambdas, net.method, net.timesteps, net.cnn)
    return net


def convert_by_full_runs(cnn, calibration: torch.Tensor, method, timesteps: int, device: str = "cpu") -> SpikingNetwork:
    """The whole conversion with the calibrations above instead of the layer walk."""
    prepared = prepare(cnn, calibration, method, device=device)
    net = build(prepared.graph, prepared.lambdas, method, timesteps, prepared.reference)
    if method.statistic == "spikenorm":
        net = spike_norm_by_full_runs(prepared.graph, net, calibration[: method.spikenorm_images], device)
    if method.rate_calibration or method.step_bias:
        net = calibrate_rates_by_prefixes(net, calibration[: method.rate_calibration_images], method.rate_calibration,
                                          device)
    if method.delay_calibration_images:
        # the readout of the rate-calibration images and of the rest, as two full simulations
        calibrated = method.rate_calibration or method.step_bias
        split = min(method.rate_calibration_images, method.delay_calibration_images) if calibrated else 0
        net = calibrate_readout_delay(net, calibration[: method.delay_calibration_images], device, split=split)
    return net
