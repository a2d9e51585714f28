"""Layer-by-layer simulation for the calibrations that set one spiking layer at a time.

Spike-Norm and rate calibration change spike node n (and the synapses into it) using a
simulation of the layers below n, which are already final. Re-simulating the network from the
input for every n costs O(L²) layer-simulations. A :class:`LayerWalk` instead keeps the spike
trains of the layers below (every step, every calibration image, as booleans, in the blocks of
images and steps the simulation runs in) and simulates only
node n and the stateless nodes that compute its current from them: each layer is then
simulated once per calibration round, plus once to keep its final spike trains.

Every value is computed exactly as the full simulator computes it (:func:`spkeras.simulate.
simulate`): the same batches of images, the same chunks of steps, the same per-batch rules for
silent inputs and event-driven convolutions, the same neuron update. A walk's measurements of
node n therefore equal those of a full simulation of the network cut after n.
"""

from __future__ import annotations

import torch

from .encoding import make_encoder
from .ir import Graph, GraphError, Node
from .simulate import BatchState, Recorder, RunOptions, _Neurons, _Value, event_convolutions
from .snn import SpikingNetwork

BOUNDARY_OPS = ("input", "spike")
CURRENT_STORE_BYTES = 2 << 30  # input currents a walk keeps between two runs of one node


def segment(graph: Graph, name: str) -> list[Node]:
    """Spike node ``name`` and the stateless nodes that compute its input current from spike
    nodes below it or the input, in topological order."""
    needed = {name}
    for node in reversed(graph.nodes):
        if node.name in needed and (node.name == name or node.op not in BOUNDARY_OPS):
            needed.update(node.inputs)
    return [n for n in graph.nodes if n.name in needed and (n.name == name or n.op not in BOUNDARY_OPS)]


def boundary(nodes: list[Node]) -> set[str]:
    """The spike nodes (and the input) whose outputs a segment (:func:`segment`) reads."""
    inside = {n.name for n in nodes}
    return {i for n in nodes for i in n.inputs if i not in inside}


def unpack(block: torch.Tensor, spare: dict[str, torch.Tensor], name: str, dtype: torch.dtype) -> torch.Tensor:
    """Kept boolean spike trains as 0/1 values of ``dtype``, written into a buffer that is reused
    for every block of ``name`` (fresh memory for every block would cost a page fault per page)."""
    buffer = spare.get(name)
    if buffer is None or buffer.numel() < block.numel():
        buffer = spare[name] = torch.empty(block.numel(), dtype=dtype, device=block.device)
    return buffer[: block.numel()].view(block.shape).copy_(block)


class LayerWalk:
    """Simulates a network one spike node at a time over ``images`` (see the module docstring).

    ``run(net, name, recorders)`` simulates spike node ``name`` of ``net`` for every image and
    step from the kept outputs below it; ``keep=True`` also keeps its spike trains for the nodes
    above. Nodes are run in topological order, each after every node it reads has been kept.
    ``net`` may change between calls (a calibration's corrections), but not below a kept node.
    """

    def __init__(self, net: SpikingNetwork, images: torch.Tensor, options: RunOptions):
        self.images = images
        self.options = options
        self.kept: dict[str, dict[tuple[int, int], torch.Tensor]] = {}  # name → (first image, t0) → block
        spikes = [n.name for n in net.spike_nodes]
        reads = {s: boundary(segment(net.graph, s)) for s in spikes}
        self.readers = {name: {s for s in spikes if name in reads[s]} for name in spikes}

    def needed(self, name: str) -> bool:
        """Whether a spike node above reads ``name`` (so its spike trains are worth keeping)."""
        return bool(self.readers[name])

    def run(self, net: SpikingNetwork, name: str, recorders: list[Recorder] = (), keep: bool = False,
            store: "CurrentStore | None" = None, readout: bool = False) -> None:
        """Simulate spike node ``name`` over every image and step, handing its current and spikes
        to ``recorders``; with ``keep``, keep its spike trains for the nodes above. With a
        ``store``, the first run given it keeps the node's input current and the next reads it
        instead of computing the layers below again (:class:`CurrentStore`). With ``readout``,
        ``name`` is the output, run as the network reads it (an output read from its potential
        does not fire), and the recorders get its cumulative readout as in a full simulation."""
        options = self.options
        graph = net.to(options.device).graph
        nodes = segment(graph, name)
        sources = boundary(nodes)
        missing = sorted(s for s in sources if s != graph.input.name and s not in self.kept)
        if missing:
            raise GraphError(f"layer walk: {name} reads {missing[0]}, which has not been kept yet")
        fire = not (readout and net.method.readout == "potential")
        out = {} if keep else None
        events = event_convolutions(options)
        spare: dict[str, torch.Tensor] = {}  # one float buffer per source, reused block after block
        for start in range(0, self.images.shape[0], options.batch_size):
            batch = self.images[start : start + options.batch_size].to(options.device)
            encoder = (make_encoder(batch, net.method, torch.arange(start, start + batch.shape[0]), options.seed)
                       if graph.input.name in sources else None)
            neurons = _Neurons(graph.node(name), batch.shape[0], batch.device, fire=fire, dtype=batch.dtype)
            state = BatchState(graph, events)
            for recorder in recorders:
                recorder.begin_batch(graph, batch.shape[0])
            total = 0.0  # the output's spike count so far, for its readout
            for t0 in range(0, options.timesteps, options.chunk):
                steps = min(options.chunk, options.timesteps - t0)
                current = store.get((start, t0)) if store is not None else None
                if current is None:
                    current = self._current(graph, nodes, sources, encoder, state, spare, start, t0, steps, batch.dtype)
                    if store is not None:
                        store.put((start, t0), current, spare)
                fired = state.fire(nodes[-1], neurons, current, steps, recorders, owned=store is None).tensor
                for recorder in recorders if fire else ():
                    recorder.spikes(name, fired)
                if readout:
                    scores = total + fired.cumsum(0) if fire else fired
                    total = total + fired.sum(0) if fire else total
                    for recorder in recorders:
                        recorder.readout(scores, t0)
                if out is not None:
                    out[start, t0] = fired.bool()
            for recorder in recorders:
                recorder.end_batch()
        if out is not None:
            self._keep(name, out, sources)

    def _current(self, graph: Graph, nodes: list[Node], sources: set[str], encoder, state: BatchState, spare: dict,
                 start: int, t0: int, steps: int, dtype: torch.dtype) -> _Value:
        """The input current of the segment's spike node (its last node) for one block of images and steps."""
        values = {s: _Value(unpack(self.kept[s][start, t0], spare, s, dtype), False)
                  for s in sources if s != graph.input.name}
        if encoder is not None:
            values[graph.input.name] = _Value(encoder.next(steps), encoder.constant)
        for node in nodes[:-1]:
            values[node.name] = state.linear(node, [values[i] for i in node.inputs], steps)
        return values[nodes[-1].inputs[0]]

    def _keep(self, name: str, trains: dict, sources: set[str]) -> None:
        """Keep ``name``'s spike trains and let go of those no node above still needs."""
        self.kept[name] = trains
        for source in sources:
            if source in self.readers:
                self.readers[source].discard(name)
                if not self.readers[source]:
                    self.kept.pop(source, None)


class CurrentStore:
    """One spike node's input current for every block of a walk, kept from one run to the next
    while nothing that feeds the node changes (its own step bias and initial potential may: they
    act inside the neuron). The layers below are then computed once for both runs. Beyond
    ``budget`` bytes nothing is kept, and the next run computes the current again."""

    def __init__(self, budget: int = CURRENT_STORE_BYTES):
        self.budget = budget
        self.blocks: dict[tuple[int, int], _Value] = {}
        self.size = 0  # bytes asked to keep so far; past the budget, nothing is kept

    def get(self, key: tuple[int, int]) -> _Value | None:
        return self.blocks.get(key)

    def put(self, key: tuple[int, int], current: _Value, spare: dict[str, torch.Tensor]) -> None:
        tensor = current.tensor
        if any(tensor.untyped_storage().data_ptr() == b.untyped_storage().data_ptr() for b in spare.values()):
            current = _Value(tensor.clone(), current.constant)  # a view of a buffer the next block overwrites
        self.size += current.tensor.untyped_storage().nbytes()
        if self.size > self.budget:
            self.blocks = {}
            return
        self.blocks[key] = current
