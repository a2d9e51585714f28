"""The spiking network: plain data handed from the converter to the simulator, metrics and exports.

Saved as one safetensors file: tensors under ``snn/<node>/<param>`` and ``cnn/<node>/<param>``,
and the graph structure, method switches, λ and T as JSON in the safetensors metadata. No pickle.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from .errors import ModelError
from .ir import Graph, Node
from .method import Method
from .atomic import atomic_path

FORMAT = "spkeras-snn"
FORMAT_VERSION = 1


@dataclass
class SpikingNetwork:
    """A converted network: the spiking graph, how it was made, and the CNN it came from.

    ``graph``: spike nodes carry threshold, reset, v_init and step_current (and, after rate
    calibration, per-channel initial potentials); linear nodes carry normalised weights.
    ``lambdas``: λ of every spike node. ``timesteps``: the T it was converted for (spread TRE
    depends on it). ``cnn``: the canonical CNN (BN folded with ε) for reference.
    """

    graph: Graph
    method: Method
    timesteps: int
    lambdas: dict[str, float]
    cnn: Graph

    @property
    def spike_nodes(self) -> list[Node]:
        return self.graph.nodes_of("spike")

    def to(self, device: str) -> "SpikingNetwork":
        """A copy with every tensor on ``device``."""
        return SpikingNetwork(
            graph=self.graph.to(device), method=self.method, timesteps=self.timesteps,
            lambdas=dict(self.lambdas), cnn=self.cnn.to(device),
        )


def _graph_structure(graph: Graph) -> dict:
    nodes = [
        {"name": n.name, "op": n.op, "inputs": n.inputs, "attrs": n.attrs, "shape": list(n.shape),
         "source": n.source, "params": sorted(n.params)}
        for n in graph.nodes
    ]
    return {"name": graph.name, "output": graph.output, "nodes": nodes}


def _graph_tensors(graph: Graph, prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}/{n.name}/{k}": v.detach().cpu().contiguous() for n in graph.nodes for k, v in n.params.items()}


def save_snn(net: SpikingNetwork, path: str | os.PathLike) -> None:
    """Write the network to ``path`` atomically (temporary file, then rename)."""
    meta = {
        "format": FORMAT, "version": FORMAT_VERSION, "method": net.method.to_dict(),
        "timesteps": net.timesteps, "lambdas": net.lambdas,
        "snn": _graph_structure(net.graph), "cnn": _graph_structure(net.cnn),
    }
    tensors = {**_graph_tensors(net.graph, "snn"), **_graph_tensors(net.cnn, "cnn")}
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata={"spkeras": json.dumps(meta)})


def _rebuild(structure: dict, tensors: dict[str, torch.Tensor], prefix: str, path) -> Graph:
    nodes = []
    for entry in structure["nodes"]:
        params = {}
        for key in entry["params"]:
            tensor = tensors.pop(f"{prefix}/{entry['name']}/{key}", None)
            if tensor is None:
                raise ModelError(f"{path}: metadata names tensor {prefix}/{entry['name']}/{key} but the file lacks it")
            params[key] = tensor
        nodes.append(Node(entry["name"], entry["op"], list(entry["inputs"]), params, entry["attrs"],
                          tuple(entry["shape"]), entry.get("source", "")))
    return Graph(nodes=nodes, output=structure["output"], name=structure.get("name", "model"))


def load_snn(path: str | os.PathLike) -> SpikingNetwork:
    """Read a network written by :func:`save_snn`; a corrupt or inconsistent file raises ModelError."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
        tensors = load_file(str(path))
        meta = json.loads(header["spkeras"])
    except (OSError, SafetensorError, KeyError, json.JSONDecodeError, ValueError) as exc:
        raise ModelError(f"{path}: not a readable spkeras .snn file ({type(exc).__name__}: {exc})".splitlines()[0]) from None
    if meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
        raise ModelError(f"{path}: not a spkeras .snn file of version {FORMAT_VERSION}")
    try:
        graph = _rebuild(meta["snn"], tensors, "snn", path)
        cnn = _rebuild(meta["cnn"], tensors, "cnn", path)
        net = SpikingNetwork(graph, Method.from_dict(meta["method"]), int(meta["timesteps"]),
                             {k: float(v) for k, v in meta["lambdas"].items()}, cnn)
    except (KeyError, TypeError) as exc:
        raise ModelError(f"{path}: metadata is incomplete (missing {exc})") from None
    if tensors:
        raise ModelError(f"{path}: tensor {sorted(tensors)[0]} is not described by the metadata")
    validate_shapes(net, path)
    return net


def validate_shapes(net: SpikingNetwork, path) -> None:
    """Check that every weight agrees with the shapes the metadata declares."""
    for graph in (net.graph, net.cnn):
        for node in graph.nodes:
            weight = node.params.get("weight")
            if weight is None or node.op == "affine":
                continue
            source = graph.node(node.inputs[0])
            expected_out = node.shape[0]
            expected_in = source.shape[0] // node.attrs.get("groups", 1)
            if weight.shape[0] != expected_out or weight.shape[1] != expected_in:
                raise ModelError(
                    f"{path}: weight of {node.name} has shape {tuple(weight.shape)}, "
                    f"but the metadata says {expected_in} inputs and {expected_out} outputs"
                )
