"""The unifying conversion framework (Proposition 1, Eq. 2–6), implemented once.

Every method is a :class:`~spkeras.method.Method` preset; this module turns a CNN
graph plus calibration images into a spiking graph for any preset:

1. canonicalise the CNN (drop dropout, fold BN with or without ε, drop the final softmax); unless
   ``maxpool='gate'``, move each ReLU after the max pool it feeds (max(ReLU(z)) = ReLU(max(z)));
2. choose the spiking sites: every ReLU, every average pool (``spiking_pools``), the output;
3. calibrate λ_n at every site; a clipped ReLU (ReLU6: min(max(x, 0), c)) gets λ_n ≤ c, so the
   neuron's saturation at one spike per step represents the clip;
4. replace ReLUs by IF neurons (``spike`` nodes) and rescale synapses so that the current into
   site n is in units of λ_n / V_thr^n: with input in units u_in, W ← (u_in V_thr/λ_n)·W and
   b ← (V_thr/λ_n)·b. With V_thr = κ this is Eq. 8 (CN); with V_thr = 1, weight normalisation;
   with weights kept, V_thr = λ_n/u_in, threshold balancing (Remark 1);
5. add TRE charge (Eq. 9) and the reset rule; a max pool reading spikes (``maxpool='gate'``)
   becomes a gate that passes the spikes of the input with the largest count so far, one reading
   currents passes the change of its window's largest accumulated current (``'accumulated'``)
   or its largest current at each step (``'current'``);
6. the calibrations that simulate the network on calibration images, where the method asks:
   Spike-Norm's thresholds, per-channel rate correction, the readout delay.

Steps 1–3 and the neurons of step 4 do not depend on T: :func:`prepare` does them once, and its
:meth:`PreparedConversion.network` does the rest for any T. :func:`convert` is both in one call;
every caller (API, CLI, ``reproduce``, the demo, the benchmarks) converts through them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..calibrate import calibrate
from ..errors import ConfigError
from ..ir import STATELESS_OPS, Graph, GraphError, Node, feeding_layer, insert_after, unique_name
from ..layerwise import LayerWalk
from ..ops import apply_stateless
from ..passes import canonicalise
from ..progress import announce
from ..quantise import quantise
from ..simulate import MaxCurrent, RunOptions
from ..snn import SpikingNetwork
from . import ecc
from .channel_balance import balance_channels
from .rate_calibration import calibrate_rates
from .readout_calibration import calibrate_readout_delay
from ..method import Method

POOL_OPS = ("avgpool", "adaptive_avgpool", "global_avgpool")
SCALED_OPS = POOL_OPS + ("maxpool",)
MERGING_OPS = ("add", "concat")


def spike_sites(graph: Graph, spiking_pools: bool) -> list[str]:
    """Names of the CNN nodes whose outputs become spiking neurons, in topological order: every
    ReLU, the output and, with ``spiking_pools``, every average pool of non-negative values (a
    neuron there would cut off the negative values of a pool over raw conv outputs)."""
    positive = non_negative(graph)
    sites = []
    for node in graph.nodes:
        pool_site = spiking_pools and node.op in POOL_OPS and node.name in positive
        if node.op == "relu" or pool_site or node.name == graph.output:
            sites.append(node.name)
    return sites


def non_negative(graph: Graph) -> set[str]:
    """The nodes whose values cannot be negative: ReLUs, and pools, padding, flattening and
    concatenation of such values."""
    positive = set()
    for node in graph.nodes:
        if node.op == "relu" or (node.op in (*SCALED_OPS, "pad", "flatten", "concat")
                                 and all(i in positive for i in node.inputs)):
            positive.add(node.name)
    return positive


@dataclass
class PreparedConversion:
    """The part of a conversion that does not depend on T: the canonical CNN (``reference``, BN
    folded with ε), the neuron-bearing graph and λ of every spike node, for ``method``.

    :meth:`network` then runs every T-dependent step in one place. ``key`` identifies what the
    preparation depends on (the method's :meth:`~spkeras.method.Method.preparation_key`), so a
    caller can reuse one preparation for every method and T that shares it.
    """

    graph: Graph
    lambdas: dict[str, float]
    reference: Graph
    method: Method
    calibration: torch.Tensor | None
    device: str = "cpu"

    def __iter__(self):
        raise ConfigError("prepare() returns a PreparedConversion: use its .graph, .lambdas and .reference, "
                          "or .network(T) for the converted network")

    @property
    def key(self) -> dict:
        return self.method.preparation_key()

    def network(self, timesteps: int, method: Method | None = None) -> SpikingNetwork:
        """The spiking network for T steps: build (normalise, Eq. 7–10; quantise, section 4.4),
        then whatever the method simulates calibration images for, in order: Spike-Norm's
        thresholds, rate calibration, the readout-delay choice. ``method`` (default: the
        prepared one) may be any method with the same preparation key."""
        method = method or self.method
        if method.preparation_key() != self.key:
            raise ConfigError(f"method {method.name!r} needs its own preparation (it differs in "
                              f"{', '.join(k for k, v in method.preparation_key().items() if self.key[k] != v)})")
        if timesteps < 1:
            raise ConfigError(f"timesteps must be ≥ 1, got {timesteps}")
        if self.calibration is None and method.simulates_calibration:
            raise ConfigError(f"method {method.name!r} simulates calibration images: give them (--calib)")
        net = build(self.graph, self.lambdas, method, timesteps, self.reference)
        if method.statistic == "spikenorm":
            net = spike_norm(self.graph, net, self.calibration[: method.spikenorm_images], self.device)
        walk = None
        if method.rate_calibration or method.step_bias:
            net, walk = calibrate_rates(net, self.calibration[: method.rate_calibration_images],
                                        method.rate_calibration, self.device)
        if method.delay_calibration_images:
            net = calibrate_readout_delay(net, self.calibration[: method.delay_calibration_images], self.device,
                                          walk=walk)
        return net


def prepare(cnn: Graph, calibration: torch.Tensor | None, method: Method, batch_size: int = 100,
            device: str = "cpu") -> PreparedConversion:
    """Steps 1–3 and the neurons of step 4, which do not depend on T (see the module docstring).

    ``calibration`` holds channels-first images; it may be None only when the method needs no
    calibration image (``statistic`` none or model, and no simulated calibration).
    """
    if calibration is None and method.simulates_calibration:
        raise ConfigError(f"method {method.name!r} simulates calibration images: give them (--calib)")
    reference = canonicalise(cnn, use_eps=True)
    folded = reference if method.cmb else canonicalise(cnn, use_eps=False)
    if method.channel_balance:
        if calibration is None:
            raise ConfigError("channel balancing (channel_balance) needs calibration images (--calib)")
        folded = balance_channels(folded, calibration, batch_size, device)
    if method.maxpool != "gate":
        folded = pool_before_relu(folded.clone())
    sites = spike_sites(folded, method.spiking_pools)
    lambdas = site_lambdas(folded, sites, calibration, method, batch_size, device)
    graph, spike_lambdas = insert_neurons(folded.clone(), sites, lambdas)
    mark_max_pools(graph, method.maxpool)
    return PreparedConversion(graph, spike_lambdas, reference, method, calibration, device)


def convert(cnn: Graph, calibration: torch.Tensor | None, method: Method, timesteps: int, batch_size: int = 100,
            device: str = "cpu") -> SpikingNetwork:
    """Convert an imported CNN graph into a spiking network for T steps under ``method``: the one
    conversion, ``prepare(cnn, calibration, method).network(timesteps)``."""
    return prepare(cnn, calibration, method, batch_size, device).network(timesteps)


def build(graph: Graph, lambdas: dict[str, float], method: Method, timesteps: int, cnn: Graph) -> SpikingNetwork:
    """Normalise a copy of the neuron-bearing graph for T steps (a fractional readout delay
    becomes a number of steps) and quantise it if asked (section 4.4)."""
    graph = graph.clone()
    method = method_for(method, timesteps)
    normalise(graph, lambdas, method, timesteps)
    if method.bits is not None:
        quantise(graph, method.bits, method.rounding)
    return SpikingNetwork(graph=graph, method=method, timesteps=timesteps, lambdas=dict(lambdas), cnn=cnn)


def method_for(method: Method, timesteps: int) -> Method:
    """The method for a T-step network: a fractional readout delay becomes ⌊fraction·T⌋ steps."""
    if method.readout_delay_fraction:
        return method.with_options(readout_delay=int(method.readout_delay_fraction * timesteps))
    return method


def site_lambdas(graph, sites, calibration, method: Method, batch_size: int, device: str) -> dict[str, float]:
    """λ_n for each site from the method's statistic."""
    if method.statistic == "none":
        return cap_lambdas(graph, {s: 1.0 for s in sites})
    if method.statistic == "model":
        return cap_lambdas(graph, model_bounds(graph, sites))
    if calibration is None:
        raise ConfigError(f"method {method.name!r} needs calibration images (--calib) for λ")
    percentile = method.percentile if method.statistic == "percentile" else None
    return cap_lambdas(graph, calibrate(graph, sites, calibration, percentile, batch_size, device))


def pool_before_relu(graph: Graph) -> Graph:
    """Take each max pool over the currents before the ReLU that feeds it: ReLU → max pool
    becomes max pool → ReLU (max(ReLU(z)) = ReLU(max(z)), min(·, c) too, since both are monotone),
    so one neuron per pooled unit receives the largest current of its window. A ReLU that also
    feeds other layers stays for them; the pool then reads its input and gets a ReLU of its own."""
    for pool in graph.nodes_of("maxpool"):
        relu = graph.node(pool.inputs[0])
        if relu.op != "relu":
            continue
        moved = Node(unique_name(graph, f"{pool.name}_relu"), "relu", [], {}, dict(relu.attrs), pool.shape,
                     relu.source)
        pool.inputs = [relu.inputs[0]]
        graph = insert_after(graph, pool.name, moved)
        if not graph.consumers(relu.name):
            graph = graph.replace([n for n in graph.nodes if n.name != relu.name])
    return graph


def cap_lambdas(graph: Graph, lambdas: dict[str, float]) -> dict[str, float]:
    """λ_n ≤ c at a clipped ReLU min(max(x, 0), c): a neuron's rate saturates at one spike per step,
    which then stands for at most c, so the clip is represented by the neuron itself."""
    capped = {}
    for site, lam in lambdas.items():
        cap = graph.node(site).attrs.get("max_value") if graph.node(site).op == "relu" else None
        capped[site] = lam if cap is None else min(lam, float(cap))
    return capped


def model_bounds(graph: Graph, sites: list[str]) -> dict[str, float]:
    """Model-based normalisation (Diehl et al. 2015): the largest activation the weights allow
    for inputs in [0, 1], propagated layer by layer: Σ_j max(W_ij, 0)·bound_in + max(b_i, 0)."""
    dtype = graph.dtype
    bound = {graph.input.name: torch.ones(graph.input.shape, dtype=dtype)}
    for node in graph.nodes[1:]:
        inputs = [bound[i] for i in node.inputs]
        if node.op in ("conv2d", "dense", "affine"):
            positive = Node(node.name, node.op, node.inputs, {k: v.clamp(min=0) for k, v in node.params.items()},
                            node.attrs, node.shape)
            bound[node.name] = apply_stateless(positive, [inputs[0].unsqueeze(0)])[0]
        elif node.op == "relu":
            cap = node.attrs.get("max_value")
            bound[node.name] = inputs[0] if cap is None else inputs[0].clamp(max=float(cap))
        else:
            bound[node.name] = apply_stateless(node, [x.unsqueeze(0) for x in inputs])[0]
    return {s: float(bound[s].max()) for s in sites}


def spike_norm(graph: Graph, net: SpikingNetwork, images: torch.Tensor, device: str) -> SpikingNetwork:
    """Spike-Norm (Sengupta et al. 2019): layer by layer, V_thr^n is the largest input current
    layer n receives while the layers below it, already converted, spike on calibration images.

    One :class:`~spkeras.layerwise.LayerWalk` up the network: layer n's current comes from the
    kept spike trains of the layers below, then n is rebuilt with its new threshold and its own
    spike trains are kept for the layers above."""
    lambdas = dict(net.lambdas)
    walk = LayerWalk(net, images, RunOptions(timesteps=net.method.spikenorm_timesteps, device=device))
    spikes = net.spike_nodes
    for index, node in enumerate(spikes, start=1):
        announce(f"Spike-Norm thresholds: layer {index}/{len(spikes)} ({images.shape[0]} images, "
                 f"T={net.method.spikenorm_timesteps})")
        peak = MaxCurrent(node.name)
        walk.run(net, node.name, [peak])
        if not peak.value > 0:
            raise GraphError(f"Spike-Norm: {node.source or node.name} receives no positive current on the calibration images")
        # the threshold of the network just simulated: the layers below have been rebalanced since
        current = net.graph.node(node.name).attrs["threshold"]
        lambdas[node.name] = lambdas[node.name] * peak.value / current
        net = build(graph, lambdas, net.method, net.timesteps, net.cnn)
        if walk.needed(node.name):
            walk.run(net, node.name, keep=True)
    return net


def insert_neurons(graph: Graph, sites: list[str], lambdas: dict[str, float]) -> tuple[Graph, dict[str, float]]:
    """Turn each site into a ``spike`` node: ReLUs in place, other sites get one appended."""
    spike_lambdas = {}
    for site in sites:
        node = graph.node(site)
        if node.op == "relu":
            node.op = "spike"
            spike_lambdas[site] = lambdas[site]
            continue
        name = unique_name(graph, f"{site}_spike")
        graph = insert_after(graph, site, Node(name=name, op="spike", shape=node.shape, source=node.source))
        spike_lambdas[name] = lambdas[site]
    leftover = [n for n in graph.nodes if n.op not in ("input", "spike", *STATELESS_OPS)]
    if leftover:
        raise GraphError(f"cannot convert {leftover[0].source or leftover[0].name}: unexpected {leftover[0].op!r} node")
    return graph, spike_lambdas


def mark_max_pools(graph: Graph, mode: str) -> None:
    """How each max pool of the spiking graph runs: a ``gate`` over the spikes it reads, or over
    currents either ``accumulate``-d (unless ``mode`` is ``'current'``) or step by step."""
    for pool in graph.nodes_of("maxpool"):
        pool.attrs["gate"] = graph.node(pool.inputs[0]).op == "spike"
        pool.attrs["accumulate"] = not pool.attrs["gate"] and mode != "current"


def threshold(method: Method, lam: float, input_unit: float) -> float:
    """V_thr^n: κ (CN, Eq. 8) or 1 under weight normalisation; λ_n/u_in under threshold balancing."""
    if method.threshold_rule == "balance":
        return lam / input_unit
    return ecc.cn_threshold(method.kappa) if method.cn else 1.0


def normalise(graph: Graph, lambdas: dict[str, float], method: Method, timesteps: int) -> None:
    """Propagate units through the graph and rescale synapses in place (Proposition 1).

    ``unit[x]`` is the CNN value that one SNN unit of node x stands for: 1 for the input,
    α·λ_n for a spike (rate 1 ⇔ activation α·λ_n: a threshold scaled by α, as in RMP-SNN, makes
    each spike stand for α·λ_n, and the layers above take that unit, so the scaling clips each
    layer at α·λ_n instead of compounding from layer to layer). Linear nodes keep their input's
    unit, except the node feeding a neuron, which is rescaled by u_in·V_thr/λ_n.
    """
    unit = {graph.input.name: 1.0}
    for node in graph.nodes[1:]:
        if node.op == "spike":
            source = graph.node(node.inputs[0])
            lam = lambdas[node.name]
            v_thr = threshold(method, lam, unit[source.name])
            # threshold balancing keeps the weights: the factor is 1 by construction, so use 1 exactly
            rescale(feeding_layer(graph, node),
                    1.0 if method.threshold_rule == "balance" else unit[source.name] * v_thr / lam)
            configure_neuron(node, v_thr * method.threshold_scale, method, timesteps)
            unit[node.name] = lam * method.threshold_scale
            continue
        first = unit[node.inputs[0]]
        if node.op in ("conv2d", "dense", "affine") and "bias" in node.params:
            node.params["bias"] = node.params["bias"] / first
        if node.op in MERGING_OPS:
            node.attrs["coefficients"] = [unit[i] / first for i in node.inputs]
        unit[node.name] = first


def rescale(node: Node, factor: float) -> None:
    """Multiply a linear node's output by ``factor`` (weights and bias, or its scale attribute)."""
    if node.op in ("conv2d", "dense", "affine"):
        for key in ("weight", "bias"):
            if key in node.params:
                node.params[key] = node.params[key] * factor
    elif node.op in SCALED_OPS:
        node.attrs["scale"] = node.attrs.get("scale", 1.0) * factor
    elif node.op in MERGING_OPS:
        node.attrs["coefficients"] = [c * factor for c in node.attrs["coefficients"]]
    else:
        raise GraphError(f"a spiking neuron cannot follow {node.source or node.name} ({node.op})")


def configure_neuron(node: Node, v_thr: float, method: Method, timesteps: int) -> None:
    """Threshold, reset rule and TRE charge (Eq. 9, or V(0) = η·V_thr) of one spike node."""
    node.attrs = {
        "threshold": v_thr,
        "reset": method.reset,
        "v_init": ecc.tre_initial_potential(method.eta, v_thr) if method.tre == "initial" else 0.0,
        "step_current": ecc.tre_step_current(method.eta, v_thr, timesteps) if method.tre == "spread" else 0.0,
    }
