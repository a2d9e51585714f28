"""Graph passes that turn an imported CNN into the canonical form the converter expects:
dropout removed, batch-norm folded into the preceding layer, the final softmax removed."""

from __future__ import annotations

import torch

from .ir import WEIGHTED_OPS, Graph, GraphError, remove_node


def drop_dropout(graph: Graph) -> Graph:
    """Remove dropout nodes (identity at inference)."""
    for node in graph.nodes_of("dropout"):
        graph = remove_node(graph, node.name)
    return graph


def strip_softmax(graph: Graph) -> Graph:
    """Remove the final softmax: it is monotone, so argmax and hence accuracy are unchanged."""
    for node in graph.nodes_of("softmax"):
        if node.name != graph.output:
            raise GraphError(f"softmax {node.source or node.name} is only supported as the final layer")
        graph = remove_node(graph, node.name)
    return graph


def fold_batchnorm(graph: Graph, use_eps: bool = True) -> Graph:
    """Fold every batch-norm into the conv or dense layer before it (CMB, Eq. 11–12).

    Ŵ = γ / √(σ² + ε) · W  (Eq. 11),   b̂ = γ / √(σ² + ε) · (b − μ) + β  (Eq. 12).
    With ``use_eps=False`` ε is left out, as methods before CMB did.
    """
    for bn in graph.nodes_of("batchnorm"):
        layer = graph.node(bn.inputs[0])
        if layer.op not in WEIGHTED_OPS or len(graph.consumers(layer.name)) != 1:
            raise GraphError(
                f"batch-norm {bn.source or bn.name} must directly follow a Conv2D or Dense layer "
                "that feeds nothing else"
            )
        p = bn.params
        eps = bn.attrs["eps"] if use_eps else 0.0
        gain = p["gamma"] / torch.sqrt(p["var"] + eps)
        weight = layer.params["weight"]
        bias = layer.params.get("bias", torch.zeros(weight.shape[0], dtype=weight.dtype))
        layer.params["weight"] = weight * gain.view((-1,) + (1,) * (weight.dim() - 1))
        layer.params["bias"] = gain * (bias - p["mean"]) + p["beta"]
        graph = remove_node(graph, bn.name)
    return graph


def canonicalise(graph: Graph, use_eps: bool = True) -> Graph:
    """Copy the graph and apply every canonicalising pass, in order."""
    graph = graph.clone()
    graph = drop_dropout(graph)
    graph = fold_batchnorm(graph, use_eps=use_eps)
    return strip_softmax(graph)


def canonicalisation_report(graph: Graph) -> list[str]:
    """What :func:`canonicalise` does to ``graph``, one line per pass that changes it."""
    def layers(op: str) -> list[str]:
        return [n.source or n.name for n in graph.nodes_of(op)]

    lines = []
    if layers("batchnorm"):
        lines.append(f"folded {len(layers('batchnorm'))} batch-norm layer(s) into the conv/dense layer before each "
                     f"(Eq. 11–12, with ε: CMB): {', '.join(layers('batchnorm'))}")
    if layers("dropout"):
        lines.append(f"removed {len(layers('dropout'))} dropout layer(s) (identity at inference): "
                     f"{', '.join(layers('dropout'))}")
    if layers("softmax"):
        lines.append(f"removed the final softmax {layers('softmax')[0]} (monotone: the argmax is unchanged)")
    return lines
