"""Export a converted network as a NIR graph (Neuromorphic Intermediate Representation, ``nir``).

Time is discrete: one NIR time unit is one simulation step, and every node's output at step t
is computed from its inputs at step t (edges have no delay). Incoming edges of a node are summed
(NIR fan-in), which carries residual additions.

Mapping (spkeras IR → NIR):

* ``input`` → ``Input`` of shape (C, H, W) or (F,). What it receives depends on the method's
  input encoding, stated in the graph metadata ``input``: with ``analog`` the image itself
  (pixels in [0, 1]) at every step; with ``algorithm1`` the spike train of Algorithm 1
  (V += κ₀·x; spike when V > κ₀; V −= κ₀), with ``poisson`` Bernoulli spikes (p = pixel).
  NIR has no input encoder, so spike-encoded inputs are announced with a warning.
* ``conv2d`` → ``Conv2d`` (symmetric padding only; asymmetric padding is refused),
  ``dense`` → ``Affine``; their bias includes the per-step TRE current of the neurons they feed
  (Eq. 9: each step V ← V + Z(t) + η·V_thr/T, so the constant joins Z's bias exactly).
* ``avgpool`` → ``SumPool2d`` followed, unless it is 1, by a 1×1 ``Conv2d`` with the diagonal
  weight scale/(kh·kw) (our pools carry a ``scale`` attribute) and the TRE bias if any;
  ``global_avgpool`` → ``SumPool2d`` over the whole map, that 1×1 ``Conv2d``, ``Flatten``.
* ``flatten`` → ``Flatten`` (start_dim 0, channels-first order). ``add`` → fan-in edges; a
  coefficient other than 1 becomes a 1×1 ``Conv2d`` (or diagonal ``Affine``) on that branch.
* ``spike`` → ``IF`` with r = 1, v_threshold = V_thr, v_reset = 0; with a potential readout
  the output layer, which never fires, is an ``I`` (integrator) node.

Reset semantics. NIR's ``IF`` resets to ``v_reset`` when v > v_threshold; it has no flag for
reset by subtraction. spkeras neurons fire when V ≥ V_thr and, by default, reset by subtraction
(V ← V − V_thr), keeping the surplus charge, which conversion accuracy depends on. We keep the
standard node and state the exact dynamics in every IF node's metadata: ``reset`` =
``subtract`` or ``zero``, ``spike_condition`` = ``v >= v_threshold``, ``spikes_per_step`` =
``at most one``, ``v_init`` = 0, and the graph's ``neuron_model`` says the same in words. A
warning is printed on export, because readers differ: sinabs (``sinabs.from_nir``) maps IF to its
IAF layer, which resets by subtraction (but adds a floor at −v_threshold and may emit several
spikes per step unless configured with ``SingleSpike`` and ``min_v_mem=None``); Norse maps IF to
reset-to-v_reset; snnTorch 1.0 maps IF to a leaky neuron (β = 0.9). docs/nir.md has the table.

Refused, with a one-line ModelError naming the layer and why (``NO_PRIMITIVE``): max pooling,
concatenation, per-channel affine maps, stand-alone padding and adaptive pooling, which NIR has
no primitive for; an initial membrane potential (TRE given as V(0), ``--tre
initial``: NIR nodes start at rest), asymmetric convolution padding, and TRE current that has no
bias to join.
"""

from __future__ import annotations

import os

import numpy as np

from ..version import __version__
from ..atomic import atomic_path
from ..errors import ModelError
from ..snn import SpikingNetwork

INPUTS = {
    "analog": "the image itself (pixels in [0, 1], channels first) as a constant current at every step",
    "algorithm1": "the spike train of Algorithm 1 for each image: V += kappa0*x; spike when V > kappa0; "
                  "V -= kappa0 (kappa0 in metadata); spkeras.encoding.make_encoder produces it",
    "poisson": "Bernoulli spike trains: at each step a pixel spikes with probability equal to its value in [0, 1]",
}
NEURON_MODEL = ("discrete time, one NIR time unit per step: v <- v + I(t), where I(t) is the summed input of the "
                "step including the bias; spike when v >= v_threshold (at most one spike per step); then "
                "v <- v - v_threshold (reset: subtract) or v <- 0 (reset: zero); v starts at 0; no leak, no floor")


NO_PRIMITIVE = {
    "maxpool": "NIR has no max-pooling primitive (neither over currents nor as a spike gate)",
    "concat": "NIR has no concatenation primitive (its edges sum their inputs)",
    "affine": "NIR's Affine is a dense layer; a per-channel scale of a feature map has no primitive",
    "pad": "NIR has no padding primitive apart from a Conv2d's own",
    "adaptive_avgpool": "NIR has no adaptive pooling primitive",
}


def _nir():
    try:
        import nir
    except ImportError:
        raise ModelError("NIR export needs the nir package: pip install nir") from None
    return nir


def to_nir(net: SpikingNetwork):
    """The NIR graph of ``net`` and the warnings its export deserves (see the module docstring)."""
    nir = _nir()
    exporter = _Exporter(nir, net)
    graph = exporter.run()
    return graph, exporter.warnings


def write_nir(net: SpikingNetwork, path: str | os.PathLike) -> list[str]:
    """Write ``net`` as a NIR (HDF5) file atomically; returns the warnings."""
    graph, warnings = to_nir(net)
    nir = _nir()
    with atomic_path(path) as tmp:
        nir.write(tmp, graph)
    return warnings


class _Exporter:
    def __init__(self, nir, net: SpikingNetwork):
        self.nir, self.net, self.graph = nir, net, net.graph
        self.nodes: dict = {}
        self.edges: list[tuple[str, str]] = []
        self.outs: dict[str, list[str]] = {}  # IR node → NIR nodes whose summed output is its value
        self.warnings: list[str] = []

    # ---------------------------------------------------------------- helpers

    def put(self, base: str, node, sources: list[str]) -> str:
        special = isinstance(node, (self.nir.Input, self.nir.Output))
        name, k = base, 0
        while name in self.nodes or (not special and name in ("input", "output")):
            k += 1
            name = f"{base}_{k}"
        self.nodes[name] = node
        self.edges += [(source, name) for source in sources]
        return name

    def scale_node(self, shape: tuple[int, ...], factor: float, bias: float):
        """y = factor·x + bias per channel: a 1×1 Conv2d on maps, a diagonal Affine on vectors."""
        channels = shape[0]
        weight = (np.eye(channels, dtype=np.float32) * np.float32(factor))
        bias = np.full(channels, bias, dtype=np.float32)
        if len(shape) == 3:
            return self.nir.Conv2d(input_shape=tuple(shape[1:]), weight=weight.reshape(channels, channels, 1, 1),
                                   stride=1, padding=0, dilation=1, groups=1, bias=bias)
        return self.nir.Affine(weight=weight, bias=bias)

    def step_currents(self) -> dict[str, float]:
        """IR node → TRE current per step of the neuron it feeds (to join that node's bias)."""
        pending = {}
        for spike in self.graph.nodes_of("spike"):
            if "step_bias" in spike.params:
                raise ModelError(
                    f"{spike.source or spike.name}: a per-step current correction (step bias) cannot be expressed "
                    "in NIR, whose biases are constant; convert with --step-bias off")
            if "initial_potential" in spike.params:
                raise ModelError(
                    f"{spike.source or spike.name}: per-channel initial potentials from rate calibration cannot be "
                    "expressed in NIR, whose neurons start at rest; convert with --potential-share 0")
            if spike.attrs.get("v_init", 0.0):
                raise ModelError(
                    f"{spike.source or spike.name}: TRE as an initial membrane potential (v_init = "
                    f"{spike.attrs['v_init']:g}) cannot be expressed in NIR, whose neurons start at rest; "
                    "convert with --tre spread or --tre off")
            current = float(spike.attrs.get("step_current", 0.0))
            if current:
                source = spike.inputs[0]
                if len(self.graph.consumers(source)) != 1 or self.graph.node(source).op == "input":
                    raise ModelError(f"{spike.source or spike.name}: its TRE current has no bias to join in NIR")
                pending[source] = current
        return pending

    # ---------------------------------------------------------------- translation

    def run(self):
        nir, graph = self.nir, self.graph
        pending = self.step_currents()
        first = graph.input
        self.outs[first.name] = [self.put("input", nir.Input(input_type=np.array(first.shape)), [])]
        for node in graph.nodes[1:]:
            handler = getattr(self, f"_{node.op}", None)
            if handler is None:
                reason = NO_PRIMITIVE.get(node.op, "NIR has no primitive for it")
                raise ModelError(f"{node.source or node.name}: operator {node.op!r} cannot be exported to NIR: {reason}")
            self.outs[node.name] = handler(node, [self.outs[i] for i in node.inputs], pending.get(node.name, 0.0))
        out = graph.node(graph.output)
        self.put("output", nir.Output(output_type=np.array(out.shape)), self.outs[graph.output])
        self.add_warnings()
        return nir.NIRGraph(nodes=self.nodes, edges=self.edges, metadata=self.metadata())

    def in_shape(self, node) -> tuple[int, ...]:
        return tuple(self.graph.node(node.inputs[0]).shape)

    def _conv2d(self, node, sources, current):
        top, bottom, left, right = node.attrs["padding"]
        if top != bottom or left != right:
            raise ModelError(f"{node.source or node.name}: padding (top, bottom, left, right) = "
                             f"{(top, bottom, left, right)} is asymmetric; NIR's Conv2d pads symmetrically")
        weight = node.params["weight"].detach().cpu().float().numpy()
        bias = _bias(node, weight.shape[0]) + np.float32(current)
        conv = self.nir.Conv2d(input_shape=self.in_shape(node)[1:], weight=weight, stride=tuple(node.attrs["stride"]),
                               padding=(top, left), dilation=1, groups=node.attrs.get("groups", 1), bias=bias,
                               metadata=_meta(node, current))
        if conv.groups != 1:  # nir infers the input channels as weight.shape[1], which is C/groups
            conv.input_type = {"input": np.array(self.in_shape(node))}
        return [self.put(node.name, conv, sources[0])]

    def _dense(self, node, sources, current):
        weight = node.params["weight"].detach().cpu().float().numpy()
        bias = _bias(node, weight.shape[0]) + np.float32(current)
        return [self.put(node.name, self.nir.Affine(weight=weight, bias=bias, metadata=_meta(node, current)),
                         sources[0])]

    def _pool(self, node, sources, current, kernel, stride) -> str:
        """SumPool2d, then the 1×1 scale (scale/area, and the TRE bias) unless it is the identity."""
        pool = self.nir.SumPool2d(kernel_size=np.array(kernel), stride=np.array(stride), padding=np.array([0, 0]),
                                  metadata=_meta(node, current))
        name = self.put(node.name, pool, sources[0])
        factor = float(node.attrs.get("scale", 1.0)) / (kernel[0] * kernel[1])
        if factor == 1.0 and not current:
            return name
        channels = self.in_shape(node)[0]
        out_shape = (channels, *(node.shape[1:] if len(node.shape) == 3 else (1, 1)))
        return self.put(f"{node.name}_scale", self.scale_node(out_shape, factor, current), [name])

    def _avgpool(self, node, sources, current):
        return [self._pool(node, sources, current, list(node.attrs["kernel"]), list(node.attrs["stride"]))]

    def _global_avgpool(self, node, sources, current):
        channels, h, w = self.in_shape(node)
        last = self._pool(node, sources, current, [h, w], [h, w])
        flat = self.nir.Flatten(input_type=np.array([channels, 1, 1]), start_dim=0, end_dim=-1)
        return [self.put(f"{node.name}_flatten", flat, [last])]

    def _flatten(self, node, sources, current):
        flat = self.nir.Flatten(input_type=np.array(self.in_shape(node)), start_dim=0, end_dim=-1)
        return [self.put(node.name, flat, sources[0])]

    def _add(self, node, sources, current):
        coefficients = node.attrs.get("coefficients") or [1.0] * len(node.inputs)
        terms = []
        for k, (branch, factor) in enumerate(zip(sources, coefficients)):
            bias = current if k == 0 else 0.0
            if factor == 1.0 and not bias:
                terms += branch
            else:
                terms.append(self.put(f"{node.name}_{k}", self.scale_node(tuple(node.shape), factor, bias), branch))
        return terms

    def _spike(self, node, sources, current):
        shape = tuple(node.shape)
        a = node.attrs
        meta = {
            "reset": a["reset"], "spike_condition": "v >= v_threshold", "spikes_per_step": "at most one",
            "v_init": float(a.get("v_init", 0.0)), "step_current": float(a.get("step_current", 0.0)),
            "step_current_in": self.graph.node(node.inputs[0]).name if a.get("step_current") else "",
            "source": node.source or node.name,
        }
        ones = np.ones(shape, dtype=np.float32)
        if node.name == self.graph.output and self.net.method.readout == "potential":
            meta["readout"] = "membrane potential (this layer integrates and never fires)"
            neuron = self.nir.I(r=ones, metadata=meta)
        else:
            neuron = self.nir.IF(r=ones, v_threshold=ones * np.float32(a["threshold"]),
                                 v_reset=np.zeros(shape, dtype=np.float32), metadata=meta)
        return [self.put(node.name, neuron, sources[0])]

    # ---------------------------------------------------------------- metadata and warnings

    def metadata(self) -> dict:
        method = self.net.method
        return {
            "producer": f"spkeras {__version__}", "method": method.name, "timesteps": int(self.net.timesteps),
            "encoding": method.encoding, "input": INPUTS[method.encoding], "kappa0": float(method.kappa0),
            "readout": method.readout, "readout_delay": int(method.readout_delay), "neuron_model": NEURON_MODEL,
            "reset": ",".join(sorted({n.attrs["reset"] for n in self.graph.nodes_of("spike")})),
            "time_step": "one NIR time unit per simulation step; edges have no delay",
        }

    def add_warnings(self) -> None:
        resets = {n.attrs["reset"] for n in self.graph.nodes_of("spike")}
        how = "reset by subtraction" if resets == {"subtract"} else "reset to zero" if resets == {"zero"} else \
            "reset by subtraction or to zero"
        self.warnings.append(
            f"NIR's IF node fires when v > v_threshold and resets to v_reset; these neurons fire when v >= v_threshold "
            f"and {how}, as each IF node's metadata states (reset, spike_condition): readers that ignore the metadata "
            "simulate different dynamics (see docs/nir.md)")
        if self.net.method.readout_delay:
            self.warnings.append(f"the output is read only from what it accumulates after step "
                                 f"{self.net.method.readout_delay} (graph metadata 'readout_delay'); NIR graphs carry no "
                                 "readout rule, so a reader must apply it itself")
        encoding = self.net.method.encoding
        if encoding != "analog":
            self.warnings.append(f"NIR has no input encoder: the graph's input expects {INPUTS[encoding]}, "
                                 "not the image (graph metadata 'input')")


def _bias(node, channels: int) -> np.ndarray:
    bias = node.params.get("bias")
    return np.zeros(channels, dtype=np.float32) if bias is None else bias.detach().cpu().float().numpy().copy()


def _meta(node, current: float) -> dict:
    meta = {"source": node.source or node.name}
    if current:
        meta["bias_includes_step_current"] = float(current)
    return meta
