"""Time-stepped integrate-and-fire simulation (Eq. 2–4), batched over time.

Stateless layers (conv, dense, pooling) process a whole chunk of timesteps as one batch;
only the membrane update steps through time. A value that is the same at every step (the
analog input and the layers it feeds before the first neuron) is computed once per batch.
"""

from __future__ import annotations

import ctypes
import time
from collections import Counter
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .encoding import make_encoder
from .errors import ConfigError
from .event_conv import EventConv, available as event_conv_available
from .ir import Graph, Node, initial_potential, step_biases
from .metrics import flat_fan_outs, source_layers
from .ops import apply_stateless
from .progress import progress_bar
from .snn import SpikingNetwork

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters
SYNAPSES = ("conv2d", "dense")
SILENT_ROWS_WORTH_SKIPPING = 0.1  # fraction of silent (image, step) rows above which a layer skips them
CONV_KERNELS = ("auto", "dense")


@dataclass(frozen=True)
class RunOptions:
    """How a network is run: T, readout and the execution settings that do not change the result
    (``batch_size``, ``chunk``, ``conv``: batch independence and float rounding aside).

    ``readout`` None means the network's own; ``seed`` drives Poisson input; ``early_exit=K``
    stops each image once its prediction has been the same for K steps (a different readout).
    """

    timesteps: int
    readout: str | None = None
    batch_size: int = 100
    chunk: int = 8
    device: str = "cpu"
    seed: int = 0
    conv: str = "auto"
    early_exit: int | None = None

    def __post_init__(self):
        if self.timesteps < 1:
            raise ConfigError(f"timesteps must be ≥ 1, got {self.timesteps}")
        if self.conv not in CONV_KERNELS:
            raise ConfigError(f"conv must be one of {', '.join(CONV_KERNELS)}, got {self.conv!r}")
        if self.early_exit is not None and self.early_exit < 1:
            raise ConfigError(f"early exit needs K ≥ 1, got {self.early_exit}")


@dataclass
class SimulationRecord:
    """What one run measured, summed over its images, at each of ``steps`` (row k ↔ t = steps[k]).

    ``predictions[k, i]``: predicted class of image i after steps[k] timesteps.
    ``spikes[k, l]`` / ``synops[k, l]``: spikes and synaptic operations (Eq. 14) of source layer
    ``layers[l]`` during the first steps[k] timesteps, summed over images.
    ``mode``: ``simulate`` (time-stepped) or ``count`` (closed form).
    ``exit_steps``: with early exit, the step after which each image stopped (T if it never did).
    ``event_conv_share``: fraction of conv-layer calls on spikes that ran event-driven (None: none
    could, or the run used dense convolutions only).
    Anything else a caller wants measured is handed to the recorders it attaches (:class:`Recorder`).
    """

    mode: str
    layers: list[str]
    steps: list[int]
    predictions: torch.Tensor
    spikes: torch.Tensor
    synops: torch.Tensor
    seconds: float
    exit_steps: torch.Tensor | None = None
    event_conv_share: float | None = None

    def __getattr__(self, name: str):
        replaced = {"neuron_counts": "NeuronCounts", "max_current": "MaxCurrent", "scores": "OutputScores"}
        if name in replaced:
            raise ConfigError(f"SimulationRecord.{name} is replaced by the {replaced[name]} recorder: "
                              f"simulate(..., recorders=[{replaced[name]}(...)])")
        raise AttributeError(name)


class Recorder:
    """Receives per-step values while a network runs (:func:`simulate`, or one layer at a time in
    :class:`spkeras.layerwise.LayerWalk`); subclasses keep what they need.

    Batches arrive in image order, each opened by ``begin_batch(graph, size)`` and closed by
    ``end_batch()``. Within a batch, for each chunk of steps:
    ``current(name, value, steps)`` gets the input current Z(t) of spike node ``name`` for the
    chunk's ``steps`` steps (Eq. 3, before the TRE step current and any per-step correction),
    ``(steps, B, …)`` or, the same at every step, ``(B, …)``;
    ``spikes(name, per_step)`` gets its output spikes ``(steps, B, …)`` (not the potential of an
    output read without firing; the input's spikes too, unless it is an analog current; in a full
    simulation, the spikes each max-pool gate passes);
    ``readout(cumulative, t0)`` gets the output's cumulative
    readout S(t) for steps t0+1 … before any readout delay (full simulations only).
    """

    def begin_batch(self, graph: Graph, size: int) -> None:
        pass

    def current(self, name: str, value: "_Value", steps: int) -> None:
        pass

    def spikes(self, name: str, per_step: torch.Tensor) -> None:
        pass

    def readout(self, cumulative: torch.Tensor, t0: int) -> None:
        pass

    def end_batch(self) -> None:
        pass


class NeuronCounts(Recorder):
    """Per-neuron spike counts after the last step: ``totals[name]`` is (N, *shape) for each of
    ``layers`` (spike nodes, or the input: zero for an analog current, which is not spikes)."""

    def __init__(self, layers: list[str]):
        self.layers = list(layers)
        self.totals: dict[str, torch.Tensor] = {}
        self._parts = {name: [] for name in self.layers}
        self._batch: dict[str, torch.Tensor] = {}

    def begin_batch(self, graph: Graph, size: int) -> None:
        self._batch = {name: torch.zeros((size, *graph.node(name).shape), dtype=torch.float32)
                       for name in self.layers}

    def spikes(self, name: str, per_step: torch.Tensor) -> None:
        if name in self._batch:
            self._batch[name] = self._batch[name].to(per_step) + per_step.sum(0)

    def end_batch(self) -> None:
        for name in self.layers:
            self._parts[name].append(self._batch[name].cpu())
            self.totals[name] = torch.cat(self._parts[name])


class MaxCurrent(Recorder):
    """The largest input current (Eq. 3) that spike node ``name`` receives at any step (``value``)."""

    def __init__(self, name: str):
        self.name = name
        self.value = float("-inf")

    def current(self, name: str, value: "_Value", steps: int) -> None:
        if name == self.name:
            self.value = max(self.value, float(value.tensor.max()))


class OutputScores(Recorder):
    """The output's cumulative readout S(t) (spike count or membrane potential) after every step,
    before any readout delay: ``scores`` is (T, N, classes)."""

    def __init__(self):
        self._parts: list[torch.Tensor] = []
        self._batch: list[torch.Tensor] = []
        self.scores: torch.Tensor | None = None

    def begin_batch(self, graph: Graph, size: int) -> None:
        self._batch = []

    def readout(self, cumulative: torch.Tensor, t0: int) -> None:
        self._batch.append(cumulative.flatten(2).to("cpu", copy=True))  # the neurons reuse their buffer

    def end_batch(self) -> None:
        self._parts.append(torch.cat(self._batch))
        self.scores = torch.cat(self._parts, 1)


class _Value:
    """A tensor that is either per-step (T, B, …) or the same at every step (B, …)."""

    __slots__ = ("tensor", "constant")

    def __init__(self, tensor: torch.Tensor, constant: bool):
        self.tensor, self.constant = tensor, constant

    def per_step(self, steps: int) -> torch.Tensor:
        if self.constant:
            return self.tensor.unsqueeze(0).expand(steps, *self.tensor.shape)
        return self.tensor


def _linear(node: Node, inputs: list[_Value], steps: int, may_be_silent: bool, dense_rows: set,
            events: EventConv | None) -> _Value:
    """Apply a stateless layer to all steps of the chunk at once (or once, if constant).

    A layer whose input is silent for the whole chunk (deep layers in the first steps) outputs
    its bias at every step: that is computed once, exactly as the full layer would. The check
    is skipped (``may_be_silent=False``) once the input has been active in the batch: a silent
    chunk then goes through the full layer, which gives the same values. With ``events``, a conv
    layer whose input is sparse enough runs event-driven (:mod:`spkeras.event_conv`); otherwise
    conv and dense layers not named in ``dense_rows`` skip their silent (image, step) rows
    (:func:`_skip_silent_rows`).
    """
    if all(v.constant for v in inputs):
        return _Value(apply_stateless(node, [v.tensor for v in inputs]), True)
    if len(inputs) == 1 and may_be_silent and not inputs[0].tensor.any():
        silent = inputs[0].tensor[0, :1]
        out = apply_stateless(node, [silent])
        return _Value(out.expand(inputs[0].tensor.shape[1], *out.shape[1:]), True)
    flat = [v.per_step(steps).flatten(0, 1) for v in inputs]
    if node.op == "conv2d" and events is not None and events.worth_it(flat[0], node.params["weight"]):
        out = events.conv2d(node.name, flat[0], node.params["weight"], node.params.get("bias"),
                            node.attrs["padding"], node.attrs["stride"], node.attrs.get("groups", 1))
    elif node.op in SYNAPSES and len(flat) == 1 and node.name not in dense_rows:
        out = _skip_silent_rows(node, flat[0], dense_rows)
    else:
        out = apply_stateless(node, flat)
    return _Value(out.view(steps, -1, *out.shape[1:]), False)


def _skip_silent_rows(node: Node, rows: torch.Tensor, dense_rows: set) -> torch.Tensor:
    """A conv or dense layer over (image, step) rows, computed only on rows that carry spikes.

    A row with no input spike gives the layer's response to zeros (its bias) exactly, so that is
    computed once and copied. Compacting costs copies, so it is done only when at least
    ``SILENT_ROWS_WORTH_SKIPPING`` of the rows are silent (deep layers, images still filling);
    below that the layer joins ``dense_rows`` and is no longer checked in this batch, since
    silent rows come mostly before a layer has filled.
    """
    active = rows.flatten(1).any(1).nonzero().squeeze(1)
    if active.numel() > (1 - SILENT_ROWS_WORTH_SKIPPING) * rows.shape[0]:
        dense_rows.add(node.name)
        return apply_stateless(node, [rows])
    silent = apply_stateless(node, [torch.zeros_like(rows[:1])])
    out = silent.expand(rows.shape[0], *silent.shape[1:]).contiguous()
    if active.numel():
        out.index_copy_(0, active, apply_stateless(node, [rows.index_select(0, active)]))
    return out


class _Neurons:
    """Membrane state of one spike node across the chunks of one batch (Eq. 2–4)."""

    def __init__(self, node: Node, batch: int, device, fire: bool = True, dtype: torch.dtype = torch.float32):
        a = node.attrs
        self.threshold = a["threshold"]
        self.subtract = a["reset"] == "subtract"
        self.step_current = a["step_current"]
        self.fire = fire
        self.v = torch.zeros((batch, *node.shape), device=device, dtype=dtype)
        self.v += initial_potential(node)
        self.node = node
        self.done = 0  # steps run so far in this batch
        self.buffer = None  # spikes of the current chunk, reused chunk after chunk
        self.step_buffer = None  # one step's corrected current, reused step after step

    def run(self, current: _Value, steps: int, owned: bool = False) -> torch.Tensor:
        """Integrate ``steps`` steps; returns spikes (or, if not firing, potentials) per step.
        ``owned``: the current is used by nothing else and may be modified in place.

        Each step is V ← V + ((Z(t) + b_TRE) + c(t)), the TRE bias (Eq. 9) and a per-step
        correction c(t), if calibrated, being part of the input current; Θ = [V ≥ V_thr] (Eq. 4);
        then V ← V − Θ·V_thr (Eq. 2) or V ← 0 where Θ = 1 (reset to zero).
        """
        drive, constant = current.tensor, current.constant
        if self.step_current:
            drive = drive.add_(self.step_current) if owned and not constant else drive + self.step_current
        corrections = step_biases(self.node, self.done, steps)
        self.done += steps
        if self.buffer is None or self.buffer.shape[0] < steps:
            self.buffer = torch.empty((steps, *self.v.shape), device=self.v.device, dtype=self.v.dtype)
        out = self.buffer[:steps]
        for t in range(steps):
            step_drive = drive if constant else drive[t]
            if corrections is not None:  # Z(t) + c(t) into one reused step buffer, not a chunk-sized copy
                step_drive = torch.add(step_drive, corrections[t], out=self._corrected(step_drive))
            self.v.add_(step_drive)
            if not self.fire:
                out[t] = self.v
                continue
            torch.ge(self.v, self.threshold, out=out[t])
            if self.subtract:
                self.v.sub_(out[t], alpha=self.threshold)
            else:
                self.v.masked_fill_(out[t].bool(), 0.0)
        return out

    def _corrected(self, like: torch.Tensor) -> torch.Tensor:
        """The buffer that holds one step's corrected current."""
        if self.step_buffer is None or self.step_buffer.shape != like.shape:
            self.step_buffer = torch.empty_like(like, memory_format=torch.contiguous_format)
        return self.step_buffer


def keep_freed_memory() -> None:
    """Ask glibc to serve large tensors from its heap and keep freed memory there.

    By default each ~100 MB activation is mmap-ed afresh and page-faulted in every chunk;
    keeping freed blocks makes the next chunk reuse them. No effect outside glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30)
    libc.mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1)


class _RunningSum:
    """The running sum of a max pool's input over the steps of a batch, carried from chunk to chunk."""

    def __init__(self, node: Node):
        self.node = node
        self.counts: torch.Tensor | None = None

    def accumulated(self, per_step: torch.Tensor) -> torch.Tensor:
        """The running sums (steps, B, …) of the input so far."""
        cumulative = per_step.cumsum(0)
        if self.counts is not None:
            cumulative += self.counts
        self.counts = cumulative[-1].clone()
        return cumulative

    def keep(self, rows: torch.Tensor) -> None:
        if self.counts is not None:
            self.counts = self.counts[rows]


class _Gate(_RunningSum):
    """A spiking max pool (Rueckauer et al. 2017): at each step it passes, for every window, the
    spike of the input unit with the largest spike count so far, this step included (ties: the
    first unit of the window in row-major order); padded units never win. As T grows the chosen
    unit becomes the one with the largest rate, so the pool's rate tends to the max of its inputs."""

    def run(self, spikes: torch.Tensor) -> torch.Tensor:
        """Spikes (steps, B, C, H, W) in; the passed spikes (steps, B, C, H', W') out."""
        cumulative = self.accumulated(spikes)
        a = self.node.attrs
        top, bottom, left, right = a["padding"]
        counts = F.pad(cumulative.flatten(0, 1), (left, right, top, bottom), value=float("-inf"))
        inputs = F.pad(spikes.flatten(0, 1), (left, right, top, bottom))
        _, chosen = F.max_pool2d(counts, tuple(a["kernel"]), tuple(a["stride"]), return_indices=True)
        passed = inputs.flatten(2).gather(2, chosen.flatten(2)).view(chosen.shape)
        scale = a.get("scale", 1.0)
        passed = passed * scale if scale != 1.0 else passed
        return passed.view(spikes.shape[0], spikes.shape[1], *passed.shape[1:])


class _AccumulatedMax(_RunningSum):
    """A max pool over currents that passes, at step t, M(t) − M(t−1), where M(t) is the max over
    the window of the input currents accumulated up to t (M(0) = 0). The sum over T steps
    telescopes to max_i Σ_t z_i(t): the neuron it feeds integrates exactly the largest total
    current of its window, which is what the CNN's max of the mean currents asks for."""

    def __init__(self, node: Node):
        super().__init__(node)
        self.last: torch.Tensor | None = None

    def run(self, currents: torch.Tensor) -> torch.Tensor:
        steps, batch = currents.shape[:2]
        pooled = apply_stateless(self.node, [self.accumulated(currents).flatten(0, 1)])
        pooled = pooled.view(steps, batch, *pooled.shape[1:])
        before = torch.zeros_like(pooled[:1]) if self.last is None else self.last.unsqueeze(0)
        self.last = pooled[-1].clone()
        return torch.diff(pooled, dim=0, prepend=before)

    def keep(self, rows: torch.Tensor) -> None:
        super().keep(rows)
        if self.last is not None:
            self.last = self.last[rows]


class BatchState:
    """What one batch's run learns about its layers as chunks go by, shared by the full simulation
    and the layer walk so that both compute every value the same way: which values have been
    active (no longer checked for silence), which layers no longer skip silent rows, and the
    event-driven convolution, if any; and the state of its max pools (gate counts, accumulated currents)."""

    def __init__(self, graph: Graph, events: EventConv | None):
        self.events = events
        self.gates = {n.name: _Gate(n) for n in graph.nodes_of("maxpool") if n.attrs.get("gate")}
        self.pools = {**self.gates, **{n.name: _AccumulatedMax(n) for n in graph.nodes_of("maxpool")
                                       if n.attrs.get("accumulate")}}
        self.active: set[str] = set()
        self.dense_rows: set[str] = set()
        self.layers = set(source_layers(graph))
        self.consumers = Counter(name for node in graph.nodes for name in node.inputs)

    def linear(self, node: Node, inputs: list[_Value], steps: int) -> _Value:
        """A stateless node over this chunk (:func:`_linear`), or a max pool with a state (a gate,
        :class:`_Gate`, or over accumulated currents, :class:`_AccumulatedMax`)."""
        if node.name in self.pools:
            self.active.update(node.inputs)
            return _Value(self.pools[node.name].run(inputs[0].per_step(steps)), False)
        value = _linear(node, inputs, steps, node.inputs[0] not in self.active, self.dense_rows, self.events)
        if not value.constant:
            self.active.update(node.inputs)
        return value

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only these images' state (early exit)."""
        for pool in self.pools.values():
            pool.keep(rows)

    def fire(self, node: Node, neurons: "_Neurons", current: _Value, steps: int, recorders, owned: bool = True) -> _Value:
        """A spike node over this chunk; recorders see its input current first. ``owned=False``:
        the current is kept elsewhere, so the neurons may not add to it in place."""
        for recorder in recorders:
            recorder.current(node.name, current, steps)
        owned = owned and self.consumers[node.inputs[0]] == 1 and node.inputs[0] not in self.layers
        return _Value(neurons.run(current, steps, owned), False)


def event_convolutions(options: RunOptions) -> EventConv | None:
    """The event-driven convolution for a run, where it may be used (``conv='auto'``, CPU, numba)."""
    if options.conv == "auto" and event_conv_available() and torch.device(options.device).type == "cpu":
        return EventConv()
    return None


def simulate(net: SpikingNetwork, images: torch.Tensor, options: RunOptions | int, recorders=(),
             image_ids: torch.Tensor | None = None, **run_options) -> SimulationRecord:
    """Simulate a run (``options``: :class:`RunOptions`, or T with its fields as keywords) on
    channels-first images in [0, 1]; ``recorders`` (:class:`Recorder`) see per-step values.

    ``readout='spikes'`` predicts the output layer's largest spike count (ties → lowest index);
    ``'potential'`` makes the output layer integrate without firing and predicts its largest
    membrane potential. ``image_ids`` index images for reproducible Poisson input (default
    0..N-1). ``early_exit=K`` stops each image once its prediction has been the same for K
    consecutive steps: later predictions repeat the one it stopped with, and its spikes and
    operations are counted only up to that step (a different readout from the full run; no
    recorders). ``conv='auto'`` runs a conv layer event-driven (each spike adds its weights, work
    ∝ spikes; CPU, numba) whenever it is large and its input in a chunk sparse enough,
    ``'dense'`` always uses the dense convolution; both compute the current Z(t) of Eq. 3 and
    differ in float rounding only.
    """
    for retired, replacement in (("keep_neuron_counts", "recorders=[NeuronCounts(layers)]"),
                                 ("probe", "recorders=[MaxCurrent(name)]"), ("keep_scores", "recorders=[OutputScores()]")):
        if retired in run_options:
            raise ConfigError(f"simulate(..., {retired}=...) is replaced by {replacement}")
    options = options if isinstance(options, RunOptions) else RunOptions(timesteps=options, **run_options)
    if options.early_exit is not None and recorders:
        raise ConfigError("early exit cannot be combined with recorders (per-neuron counts, scores or currents)")
    started = time.perf_counter()
    keep_freed_memory()
    timesteps = options.timesteps
    readout = options.readout or net.method.readout
    graph = net.to(options.device).graph
    fanouts = flat_fan_outs(net.graph, options.device)
    layers = source_layers(graph)
    n = images.shape[0]
    ids = torch.arange(n) if image_ids is None else image_ids
    predictions = torch.empty((timesteps, n), dtype=torch.int64)
    spikes = torch.zeros((timesteps, len(layers)), dtype=torch.float64)
    synops = torch.zeros_like(spikes)
    exit_steps = torch.full((n,), timesteps, dtype=torch.int64) if options.early_exit else None
    events = event_convolutions(options)
    for start in progress_bar(range(0, n, options.batch_size), desc=f"simulating {n} images", unit="batch"):
        batch = images[start : start + options.batch_size].to(options.device)
        for recorder in recorders:
            recorder.begin_batch(graph, batch.shape[0])
        batch_predictions, exits = _simulate_batch(graph, net, batch, ids[start : start + options.batch_size], options,
                                                   readout, fanouts, layers, spikes, synops, events, recorders)
        for recorder in recorders:
            recorder.end_batch()
        if exit_steps is not None:
            exit_steps[start : start + batch.shape[0]] = exits.cpu()
        predictions[:, start : start + batch.shape[0]] = batch_predictions.cpu()
    return SimulationRecord("simulate", layers, list(range(1, timesteps + 1)), predictions, spikes.cumsum(0),
                            synops.cumsum(0), time.perf_counter() - started, exit_steps,
                            events.share if events else None)


def _simulate_batch(graph: Graph, net, batch, ids, options: RunOptions, readout, fanouts, layers, spikes, synops,
                    events, recorders):
    """One batch through all timesteps; accumulates spikes/synops in place, hands per-step values
    to the recorders, and returns the predictions after every step and (with early exit) each
    image's exit step. Images that exit leave the batch at the end of the chunk."""
    timesteps = options.timesteps
    encoder = make_encoder(batch, net.method, ids, options.seed)
    b = batch.shape[0]
    output = graph.output
    neurons = {n.name: _Neurons(n, b, batch.device, fire=not (n.name == output and readout == "potential"),
                                dtype=batch.dtype)
               for n in graph.nodes_of("spike")}
    totals = {output: torch.zeros((b, *graph.node(output).shape), device=batch.device, dtype=batch.dtype)}
    predictions = torch.empty((timesteps, b), dtype=torch.int64, device=batch.device)
    baseline = None
    last_use = {name: position for position, node in enumerate(graph.nodes) for name in node.inputs}
    state = BatchState(graph, events)
    running = torch.arange(b, device=batch.device)  # batch positions still simulated
    stopper = _EarlyExit(options.early_exit, b, timesteps, batch.device) if options.early_exit else None
    for t0 in range(0, timesteps, options.chunk):
        if running.numel() == 0:
            break
        steps = min(options.chunk, timesteps - t0)
        values = {graph.input.name: _Value(encoder.next(steps), encoder.constant)}
        if not encoder.constant:
            for recorder in recorders:
                recorder.spikes(graph.input.name, values[graph.input.name].tensor)
        for position, node in enumerate(graph.nodes[1:], start=1):
            inputs = [values[i] for i in node.inputs]
            if node.op == "spike":
                values[node.name] = state.fire(node, neurons[node.name], inputs[0], steps, recorders)
                for recorder in recorders if neurons[node.name].fire else ():
                    recorder.spikes(node.name, values[node.name].tensor)
            else:
                values[node.name] = state.linear(node, inputs, steps)
                for recorder in recorders if node.name in state.gates else ():
                    recorder.spikes(node.name, values[node.name].tensor)
            for name in dict.fromkeys(node.inputs):  # free intermediate currents once consumed (x + x reads one twice)
                if last_use[name] == position and name not in layers:
                    del values[name]
        fires = neurons[output].fire
        out = values[output].tensor
        scores = totals[output] + out.cumsum(0) if fires else out
        for recorder in recorders:
            recorder.readout(scores, t0)
        scores, baseline = _delayed(scores, baseline, t0, net.method.readout_delay)
        flat_scores = scores.flatten(2)
        chunk_predictions = flat_scores.argmax(dim=-1)
        alive = stopper.scan(chunk_predictions, flat_scores.amax(-1) > flat_scores.amin(-1), t0) if stopper else None
        if stopper:
            chunk_predictions = torch.where(alive, chunk_predictions, stopper.frozen)
        predictions[t0 : t0 + steps, running] = chunk_predictions
        skip = {graph.input.name} if encoder.constant else set()
        if not fires:
            skip.add(output)
        _count(values, layers, skip, fanouts, totals, spikes, synops, t0, steps, alive)
        stopped = stopper.stopped if stopper else None
        if stopped is not None and stopped.any():
            keep = ~stopped
            predictions[t0 + steps :, running[stopped]] = stopper.frozen[stopped]
            stopper.record(running)
            running = running[keep]
            baseline = _keep_rows(keep, neurons, encoder, totals, baseline, stopper)
            state.keep(keep)
    return predictions, stopper.exit_steps if stopper else None


class _EarlyExit:
    """Early exit: an image stops once its prediction has been the same for ``k`` steps in a row,
    counting only steps at which the output separates the classes (not every score equal, as
    before the first output spike)."""

    def __init__(self, k: int, batch: int, timesteps: int, device):
        self.k = k
        self.last = torch.full((batch,), -1, dtype=torch.int64, device=device)
        self.streak = torch.zeros(batch, dtype=torch.int64, device=device)
        self.frozen = torch.zeros(batch, dtype=torch.int64, device=device)
        self.exit_at = torch.zeros(batch, dtype=torch.int64, device=device)   # 0: still running
        self.exit_steps = torch.full((batch,), timesteps, dtype=torch.int64, device=device)  # by batch position

    @property
    def stopped(self) -> torch.Tensor:
        """Which running images exited in the chunk just scanned."""
        return self.exit_at > 0

    def scan(self, predictions: torch.Tensor, decided: torch.Tensor, t0: int) -> torch.Tensor:
        """Walk this chunk's predictions (steps, running images) and whether the output separated
        the classes; returns which images were still running at each step (an image runs the
        step at which it exits)."""
        alive = torch.empty_like(predictions, dtype=torch.bool)
        for s in range(predictions.shape[0]):
            alive[s] = self.exit_at == 0
            streak = torch.where(predictions[s] == self.last, self.streak + 1, torch.ones_like(self.streak))
            self.streak = torch.where(decided[s], streak, torch.zeros_like(streak))
            self.last = torch.where(decided[s], predictions[s], torch.full_like(self.last, -1))
            newly = alive[s] & (self.streak >= self.k)
            self.exit_at[newly] = t0 + s + 1
            self.frozen[newly] = predictions[s][newly]
        return alive

    def record(self, running: torch.Tensor) -> None:
        self.exit_steps[running[self.stopped]] = self.exit_at[self.stopped]

    def keep(self, keep: torch.Tensor) -> None:
        for name in ("last", "streak", "frozen", "exit_at"):
            setattr(self, name, getattr(self, name)[keep])


def _keep_rows(keep, neurons, encoder, totals, baseline, stopper):
    """Drop stopped images from every per-image state; returns the delayed readout's baseline."""
    for layer in neurons.values():
        layer.v = layer.v[keep]
        layer.buffer = None
    encoder.keep(keep)
    for name in totals:
        totals[name] = totals[name][keep]
    stopper.keep(keep)
    return baseline[keep] if baseline is not None else None


def _delayed(scores: torch.Tensor, baseline, t0: int, delay: int):
    """Delayed readout: after step ``delay``, read the output accumulated since that step.

    ``scores[i]`` is the cumulative readout after step t0+i+1; the readout at step ``delay`` is
    kept as the baseline and subtracted from every later step. Earlier steps read as usual.
    """
    steps = scores.shape[0]
    if delay and t0 < delay <= t0 + steps:
        baseline = scores[delay - t0 - 1].clone()
    if not delay or t0 + steps <= delay:
        return scores, baseline
    later = torch.arange(t0 + 1, t0 + steps + 1, device=scores.device) > delay
    shape = (-1,) + (1,) * (scores.dim() - 1)
    return torch.where(later.view(shape), scores - baseline, scores), baseline


def _count(values, layers, skip, fanouts, totals, spikes, synops, t0, steps, alive=None):
    """Add this chunk's spikes, per-neuron totals and Eq. 14 synaptic operations (of the images
    still running at each step, with early exit)."""
    for index, name in enumerate(layers):
        if name in skip:
            continue
        per_step = values[name].per_step(steps)
        if alive is not None:
            per_step = per_step * alive.view(*alive.shape, *[1] * (per_step.dim() - 2)).to(per_step.dtype)
        if name in totals:
            totals[name] += per_step.sum(0)
        summed = per_step.sum(1).flatten(1).double()      # (steps, neurons): exact counts
        spikes[t0 : t0 + steps, index] += summed.sum(1).cpu()
        synops[t0 : t0 + steps, index] += (summed @ fanouts[name].double()).cpu()
