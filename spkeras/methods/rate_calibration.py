"""Light post-conversion calibration (no retraining): per-channel bias correction.

After conversion, each spiking layer's mean rate over T steps falls short of what the ideal
rate model predicts: spikes arrive late, residual charge stays behind. On calibration images,
for every spiking layer n and channel c, the error e_c = mean(r*_c) − mean(N_c(T)/T) between the
rate model r* = clip(Z/V_thr, 0, 1) (the CNN's activation clipped to λ, in units of λ) and the
simulated rate is added back as per-step current, b_c ← b_c + e_c·V_thr, to the layer feeding n.
Layers are corrected in order, each ``iterations`` times, simulating only the layers up to the
one being corrected (bias correction in the spirit of Li et al. 2021, "A free lunch from ANN:
towards efficient, accurate spiking neural networks calibration").
"""

from __future__ import annotations

import torch

from ..ir import Node
from ..ops import apply_linear, run_graph
from ..snn import SpikingNetwork


def channel_means(value: torch.Tensor) -> torch.Tensor:
    """Mean over images and positions, per channel (per unit for flat layers)."""
    return value.double().mean(dim=(0, 2, 3)) if value.dim() == 4 else value.double().mean(dim=0)


def rate_model_means(net: SpikingNetwork, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-channel mean rate r* = clip(Z/V_thr, 0, 1) of every spike node, input rate = pixel value."""
    means = {}

    def apply(node: Node, inputs):
        if node.op == "spike":
            return torch.clamp(inputs[0] / node.attrs["threshold"], 0, 1)
        return apply_linear(node, inputs)

    def observe(node, value):
        if node.op == "spike":
            means[node.name] = channel_means(value)

    with torch.no_grad():
        run_graph(net.graph, images, apply=apply, observe=observe)
    return means


def prefix(net: SpikingNetwork, name: str) -> SpikingNetwork:
    """The network cut after node ``name`` (which becomes its output); tensors are shared."""
    nodes = net.graph.nodes[: [n.name for n in net.graph.nodes].index(name) + 1]
    return SpikingNetwork(net.graph.replace(nodes, name), net.method, net.timesteps, net.lambdas, net.cnn)


def calibrate_rates(net: SpikingNetwork, images: torch.Tensor, iterations: int, device: str = "cpu") -> SpikingNetwork:
    """Correct biases in place, layer by layer, so that simulated mean rates after T steps match
    the rate model."""
    from ..simulate import simulate

    targets = rate_model_means(net, images)
    steps = net.timesteps
    for node in net.spike_nodes:
        layer = net.graph.node(node.inputs[0])
        if layer.op not in ("conv2d", "dense") or (node.name == net.graph.output and net.method.readout == "potential"):
            continue
        for _ in range(iterations):
            record = simulate(prefix(net, node.name), images, steps, readout="spikes", device=device,
                              keep_neuron_counts=[node.name])
            simulated = channel_means(record.neuron_counts[node.name]) / steps
            error = (targets[node.name] - simulated) * node.attrs["threshold"]
            weight = layer.params["weight"]
            bias = layer.params.get("bias", torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device))
            layer.params["bias"] = bias + error.to(bias.dtype)
    return net
