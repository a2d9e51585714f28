"""Framework-neutral graph IR shared by every stage of the pipeline.

A :class:`Graph` is a list of :class:`Node` in topological order. Tensors are
channels-first (N, C, H, W) or (N, F); shapes stored on nodes omit the batch axis.
Importers produce a CNN graph; passes rewrite it; the converter turns it into a
spiking graph (``spike`` nodes replace ``relu``) that the simulator runs.

Operators and their fields (padding is (top, bottom, left, right); kernel and stride (h, w)):

==================  ==========================================  =========================================
op                  params                                      attrs
==================  ==========================================  =========================================
input               –                                           –
conv2d              weight (O, I/groups, kh, kw), bias (O)      stride, padding (zeros), groups (default 1)
                    optional
dense               weight (O, I), bias (O) optional            –
affine              weight (C), bias (C)                        – (per-channel x·w + b: a batch-norm that
                                                                cannot be folded, input preprocessing)
batchnorm           gamma, beta, mean, var                      eps
relu                –                                           max_value (None: plain ReLU; c: ReLU6 and
                                                                other clipped ReLUs, min(max(x, 0), c))
softmax, dropout    –                                           –
avgpool             –                                           kernel, stride, scale (default 1)
adaptive_avgpool    –                                           output_size (oh, ow), scale (default 1)
global_avgpool      –                                           scale (default 1)
maxpool             –                                           kernel, stride, padding (−∞: padded taps
                                                                never win; ceil mode is extra bottom/right
                                                                padding), scale (default 1), gate (spiking
                                                                networks only: the pool passes the spikes
                                                                of the input with the largest count)
pad                 –                                           padding (zeros)
flatten             –                                           – (channels-first order)
add                 –                                           coefficients (default all 1)
concat              –                                           coefficients (default all 1); joins its
                                                                inputs along the channel axis
spike               initial_potential (C, 1, 1) or (C) optional  threshold, reset, v_init, step_current
                    step_bias (T, C, 1, 1) or (T, C) optional
==================  ==========================================  =========================================

A global max pool is a ``maxpool`` whose kernel is the whole map, followed by ``flatten``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from .errors import ModelError

LINEAR_OPS = ("conv2d", "dense", "affine", "avgpool", "adaptive_avgpool", "global_avgpool", "pad", "flatten", "add",
              "concat")
STATELESS_OPS = LINEAR_OPS + ("maxpool",)  # what a spiking network computes between its neurons
WEIGHTED_OPS = ("conv2d", "dense")


class GraphError(ModelError):
    """A graph that the pipeline cannot handle; the message is one user-facing line."""


@dataclass
class Node:
    """One operator: its inputs are node names, params are tensors, attrs are JSON-able."""

    name: str
    op: str
    inputs: list[str] = field(default_factory=list)
    params: dict[str, torch.Tensor] = field(default_factory=dict)
    attrs: dict = field(default_factory=dict)
    shape: tuple[int, ...] = ()
    source: str = ""  # the layer this node came from, e.g. "conv2d_3 (Conv2D)"


@dataclass
class Graph:
    """A DAG of nodes in topological order; ``nodes[0]`` is the single input."""

    nodes: list[Node]
    output: str
    name: str = "model"

    def __post_init__(self):
        self._index = {n.name: n for n in self.nodes}

    def node(self, name: str) -> Node:
        return self._index[name]

    @property
    def input(self) -> Node:
        return self.nodes[0]

    def consumers(self, name: str) -> list[Node]:
        return [n for n in self.nodes if name in n.inputs]

    def replace(self, nodes: list[Node], output: str | None = None) -> "Graph":
        """A new graph with these nodes (params shared, not copied)."""
        return Graph(nodes=nodes, output=output or self.output, name=self.name)

    def to(self, device) -> "Graph":
        """A copy with every tensor on ``device`` (tensors already there are shared, not copied)."""
        nodes = [
            Node(n.name, n.op, list(n.inputs), {k: v.to(device) for k, v in n.params.items()}, dict(n.attrs),
                 n.shape, n.source)
            for n in self.nodes
        ]
        return Graph(nodes=nodes, output=self.output, name=self.name)

    def clone(self) -> "Graph":
        """A deep copy whose tensors can be modified freely."""
        return copy.deepcopy(self)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of its parameters (float32 for a graph without any)."""
        return next((p.dtype for n in self.nodes for p in n.params.values()), torch.float32)

    def nodes_of(self, *ops: str) -> list[Node]:
        return [n for n in self.nodes if n.op in ops]


def remove_node(graph: Graph, name: str) -> Graph:
    """Drop a single-input node, rewiring its consumers to its input."""
    victim = graph.node(name)
    if len(victim.inputs) != 1:
        raise GraphError(f"cannot bypass node {name!r}: it has {len(victim.inputs)} inputs")
    source = victim.inputs[0]
    kept = []
    for node in graph.nodes:
        if node.name == name:
            continue
        node.inputs = [source if i == name else i for i in node.inputs]
        kept.append(node)
    output = source if graph.output == name else graph.output
    return graph.replace(kept, output)


def insert_after(graph: Graph, after: str, new: Node) -> Graph:
    """Insert ``new`` (whose input is ``after``) and rewire ``after``'s consumers to it."""
    nodes = []
    for node in graph.nodes:
        if node.name != new.name:
            node.inputs = [new.name if i == after else i for i in node.inputs]
        nodes.append(node)
        if node.name == after:
            nodes.append(new)
    new.inputs = [after]
    output = new.name if graph.output == after else graph.output
    return graph.replace(nodes, output)


def unique_name(graph: Graph, base: str) -> str:
    """``base`` if unused in the graph, else ``base_1``, ``base_2``…"""
    taken = {n.name for n in graph.nodes}
    if base not in taken:
        return base
    k = 1
    while f"{base}_{k}" in taken:
        k += 1
    return f"{base}_{k}"


def neurons(node: Node) -> int:
    """Number of units in a node's output."""
    count = 1
    for d in node.shape:
        count *= d
    return count


def initial_potential(node: Node):
    """V(0) of a spike node: its ``v_init`` plus, where rate calibration set one, its per-channel
    ``initial_potential`` parameter (a float, or a tensor that broadcasts over the node's shape)."""
    v_init = float(node.attrs["v_init"])
    return v_init + node.params["initial_potential"] if "initial_potential" in node.params else v_init


def step_biases(node: Node, first: int, steps: int) -> torch.Tensor | None:
    """The per-step current correction of a spike node for steps first+1 … first+steps, shaped
    (steps, 1, …) to broadcast over a batch; None without one. Its rows are the network's T steps;
    a run longer than T repeats the last row (the correction the steady state needs)."""
    if "step_bias" not in node.params:
        return None
    table = node.params["step_bias"]
    rows = torch.arange(first, first + steps, device=table.device).clamp(max=table.shape[0] - 1)
    return table[rows].unsqueeze(1)


def charge_of_step_biases(node: Node, steps: int):
    """Σ over the first ``steps`` steps of a spike node's per-step correction (0 without one)."""
    biases = step_biases(node, 0, steps)
    return 0.0 if biases is None else biases.sum(0)


def feeding_layer(graph: Graph, spike: Node) -> Node:
    """The node whose scale and bias set spike node ``spike``'s input current: its input or,
    below a max pool over currents (or a flatten of a 1×1 map), the conv, dense or affine layer
    that feeds only it (max(a·z + b) = a·max(z) + b for a > 0 and a per-channel b, so both may
    move below the pool)."""
    source = graph.node(spike.inputs[0])
    if source.op in ("maxpool", "flatten"):
        below = graph.node(source.inputs[0])
        per_channel = source.op == "maxpool" or all(d == 1 for d in below.shape[1:])  # a flatten of a 1×1 map
        if below.op in ("conv2d", "dense", "affine") and len(graph.consumers(below.name)) == 1 and per_channel:
            return below
    return source
