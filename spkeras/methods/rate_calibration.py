"""Light post-conversion calibration (no retraining): per-channel bias and potential correction.

After conversion, each spiking layer's mean rate over T steps falls short of what the ideal
rate model predicts: spikes arrive late, residual charge stays behind. On calibration images,
for every spiking layer n and channel c, the error e_c = mean(r*_c) − mean(N_c(T)/T) between the
rate model r* = clip(Z/V_thr, 0, 1) (the CNN's activation clipped to λ, in units of λ) and the
simulated rate is added back: a share s of it at once, as initial membrane potential
V_c(0) ← V_c(0) + s·T·e_c·V_thr of neuron n, the rest as per-step current, b_c ← b_c + (1 − s)·e_c·V_thr,
to the layer feeding n. Either way the charge over T steps grows by T·e_c·V_thr; the potential
arrives before the layers below have filled, which is when the simulation falls behind.
Layers are corrected in order, each ``iterations`` times, each from a simulation of the layers
up to the one being corrected (bias and potential correction in the spirit of Li et al. 2021, "A free lunch
from ANN: towards efficient, accurate spiking neural networks calibration").

With the method's ``step_bias``, each spike node n first gets a per-step correction of its input
current: while the layers below fill, the current Z_c(t) into channel c falls short of the rate
model's z*_c = mean(W·r*_{n−1} + b)_c, so c_c(t) = z*_c − mean(Z_c(t)) (means over images and
positions) is added at step t. The current into n depends only on the layers below, which are
final, so one simulation measures it exactly (a forward temporal bias correction in the spirit of
FTBC, 2024). The rate correction then runs on top of it.
"""

from __future__ import annotations

import numpy as np
import torch

from ..ir import Node, feeding_layer, neurons
from ..layerwise import CurrentStore, LayerWalk
from ..ops import apply_stateless, run_graph
from ..progress import announce
from ..simulate import Recorder, RunOptions
from ..snn import SpikingNetwork


def channel_means(value: torch.Tensor) -> torch.Tensor:
    """Mean over images and positions, per channel (per unit for flat layers), in float64 with
    numpy's fixed summation order (not a threaded reduction whose order follows the threads)."""
    array = value.detach().cpu().numpy()
    return torch.from_numpy(array.mean(axis=(0, 2, 3) if array.ndim == 4 else 0, dtype=np.float64))


def rate_model_means(net: SpikingNetwork, images: torch.Tensor) -> tuple[dict, dict]:
    """Per-channel means, for every spike node, of its rate r* = clip(Z/V_thr, 0, 1) and of its
    input current Z under the rate model (input rate = pixel value)."""
    rates, currents = {}, {}

    def apply(node: Node, inputs):
        if node.op == "spike":
            currents[node.name] = channel_means(inputs[0])
            return torch.clamp(inputs[0] / node.attrs["threshold"], 0, 1)
        return apply_stateless(node, inputs)

    def observe(node, value):
        if node.op == "spike":
            rates[node.name] = channel_means(value)

    with torch.no_grad():
        run_graph(net.graph, images, apply=apply, observe=observe)
    return rates, currents


def float64_sums(per_step: torch.Tensor) -> np.ndarray:
    """(steps, C): per-step sums over images and positions, accumulated in float64 in numpy's fixed
    order (casting on the fly, without a float64 copy of the whole tensor)."""
    array = per_step.detach().cpu().numpy()
    return np.add.reduce(array, axis=(1, 3, 4) if array.ndim == 5 else 1, dtype=np.float64)


class StepSums(Recorder):
    """Per-channel sums, over images and positions, of spike node ``name``'s input current
    (``of="current"``) or output spikes (``of="spikes"``) at each step: ``sums`` (T, C) in float64
    (numpy's fixed summation order), over ``images`` images; ``means()`` per image and position."""

    def __init__(self, name: str, steps: int, of: str = "current"):
        self.name, self.of = name, of
        self.sums: np.ndarray | None = None
        self.steps = steps
        self.images = 0
        self.done = 0
        self.positions = 1

    def begin_batch(self, graph, size: int) -> None:
        self.done = 0
        self.images += size
        node = graph.node(self.name)
        self.positions = neurons(node) // node.shape[0]

    def current(self, name: str, value, steps: int) -> None:
        if name != self.name or self.of != "current":
            return
        if value.constant:  # the same sums at every step of the chunk
            self._add(np.broadcast_to(float64_sums(value.tensor.unsqueeze(0)), (steps, value.tensor.shape[1])))
        else:
            self._add(float64_sums(value.tensor))

    def spikes(self, name: str, per_step: torch.Tensor) -> None:
        if name == self.name and self.of == "spikes":
            # counts of 0/1 values: exact in float32 below 2^24 per sum, whatever the order
            exact = per_step[0].numel() < 2**24
            self._add(float64_sums(per_step) if not exact else
                      per_step.sum(dim=(1, 3, 4) if per_step.ndim == 5 else 1).double().cpu().numpy())

    def _add(self, sums: np.ndarray) -> None:
        if self.sums is None:
            self.sums = np.zeros((self.steps, sums.shape[1]))
        self.sums[self.done : self.done + sums.shape[0]] += sums
        self.done += sums.shape[0]

    def means(self) -> torch.Tensor:
        """(T, C): the mean over images and positions at each step."""
        return torch.from_numpy(self.sums / (self.images * self.positions))

    def total_means(self) -> torch.Tensor:
        """(C,): the mean over images and positions of the sum over steps (for spikes: exact
        integer sums, so this equals the channel means of per-neuron counts bit for bit)."""
        return torch.from_numpy(self.sums.sum(0) / (self.images * self.positions))


def calibrate_rates(net: SpikingNetwork, images: torch.Tensor, iterations: int,
                    device: str = "cpu") -> tuple[SpikingNetwork, LayerWalk]:
    """Correct biases and initial potentials in place, layer by layer, so that simulated mean
    rates after T steps match the rate model; the share s is the method's ``potential_share``.
    Returns the network and the walk, which still keeps the spike trains below the output.

    With the method's ``step_bias``, each layer first gets its per-step current correction
    (module docstring); ``iterations`` may then be 0.

    One :class:`~spkeras.layerwise.LayerWalk` up the network: each layer is simulated once for its
    step bias, once per round from the kept spike trains of the (already corrected) layers below,
    then once more to keep its own (what a simulation of the network cut after that layer gives).
    The step-bias run and the first round share one computation of the layer's input current
    (:class:`~spkeras.layerwise.CurrentStore`, within its memory budget).
    """
    targets, target_currents = rate_model_means(net, images)
    steps = net.timesteps
    walk = LayerWalk(net, images, RunOptions(timesteps=steps, readout="spikes", device=device))
    spikes = net.spike_nodes
    for index, node in enumerate(spikes, start=1):
        announce(f"calibrating rates: layer {index}/{len(spikes)} ({images.shape[0]} images, T={steps})")
        rounds = iterations if correctable(net, node) else 0
        # the first rate round sees the same input current as the step-bias run: keep it for that round
        store = CurrentStore() if net.method.step_bias and rounds else None
        if net.method.step_bias:
            measured = StepSums(node.name, steps)
            walk.run(net, node.name, [measured], store=store)
            set_step_bias(node, measured.means(), target_currents[node.name], net.graph.dtype)
        for _ in range(rounds):
            rates = StepSums(node.name, steps, of="spikes")
            walk.run(net, node.name, [rates], store=store)
            store = None  # the correction changes the bias below the neuron
            correct(net, node, targets[node.name], rates)
        if walk.needed(node.name):
            walk.run(net, node.name, keep=True)
    return net, walk


def set_step_bias(node: Node, measured: torch.Tensor, target: torch.Tensor, dtype: torch.dtype) -> None:
    """Set spike node ``node``'s per-step correction c_c(t) = z*_c − mean Z_c(t) (module docstring)
    from its mean currents ``measured`` (T, C) over the calibration images."""
    gap = (target.unsqueeze(0) - measured).to(dtype)
    node.params["step_bias"] = gap.view(gap.shape + (1,) * (len(node.shape) - 1))


def correctable(net: SpikingNetwork, node: Node) -> bool:
    """Whether a spike node gets a rate correction: fed by a conv, dense or affine layer (whose
    bias takes it; :func:`~spkeras.ir.feeding_layer`), and not the output read from its potential
    (it does not fire)."""
    layer = feeding_layer(net.graph, node)
    return (layer.op in ("conv2d", "dense", "affine")
            and not (node.name == net.graph.output and net.method.readout == "potential"))


def correct(net: SpikingNetwork, node: Node, target: torch.Tensor, rates: StepSums) -> None:
    """Add the error e_c = (target − simulated rate)·V_thr back to spike node ``node``, from its
    spikes per step ``rates``: the share s as initial potential s·T·e_c, the rest as bias
    (1 − s)·e_c on the layer feeding it or, with the method's ``per_step_rates``, as the per-step
    correction (1 − s)·e_c(t), e_c(t) = (target − mean rate at step t)·V_thr."""
    layer = feeding_layer(net.graph, node)
    share, steps = net.method.potential_share, net.timesteps
    dtype = layer.params["weight"].dtype
    error = ((target - rates.total_means() / steps) * node.attrs["threshold"]).to(dtype)
    if share:
        add_initial_potential(node, share * steps * error)
    if share < 1 and net.method.per_step_rates:
        add_step_bias(node, ((1 - share) * (target.unsqueeze(0) - rates.means()) * node.attrs["threshold"]).to(dtype))
    elif share < 1:
        add_bias(layer, (1 - share) * error)


def add_step_bias(node: Node, per_step: torch.Tensor) -> None:
    """Add a per-step, per-channel current (T, C) to the spike node's ``step_bias``."""
    added = per_step.view(per_step.shape + (1,) * (len(node.shape) - 1))
    current = node.params.get("step_bias")
    node.params["step_bias"] = added if current is None else current + added


def add_initial_potential(node: Node, per_channel: torch.Tensor) -> None:
    """Add a per-channel charge to the spike node's initial potential (the ``initial_potential``
    parameter, on top of its ``v_init``)."""
    added = per_channel.view((-1,) + (1,) * (len(node.shape) - 1))
    current = node.params.get("initial_potential")
    node.params["initial_potential"] = added if current is None else current + added


def add_bias(layer: Node, per_channel: torch.Tensor) -> None:
    """Add a per-channel current to every step of a conv or dense layer's output."""
    weight = layer.params["weight"]
    bias = layer.params.get("bias", torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device))
    layer.params["bias"] = bias + per_channel
