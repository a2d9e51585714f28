"""Graph passes that turn an imported CNN into the canonical form the converter expects:
dropout removed, batch-norm folded into the preceding layer (or, where none can take it, kept as a
per-channel affine node), zero padding merged into the conv or max pool it feeds, per-channel
affine maps (input preprocessing) folded into the conv or dense layer they feed where that is
exact, the final softmax removed. Every pass preserves the CNN's output exactly (up to float
rounding)."""

from __future__ import annotations

import torch

from .ir import WEIGHTED_OPS, Graph, GraphError, Node, remove_node


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


def batchnorm_gain_and_shift(bn: Node, use_eps: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch-norm as y = g·x + s: g = γ / √(σ² + ε) and s = β − g·μ (ε left out with ``use_eps=False``)."""
    p = bn.params
    gain = p["gamma"] / torch.sqrt(p["var"] + (bn.attrs["eps"] if use_eps else 0.0))
    return gain, p["beta"] - gain * p["mean"]


def batchnorm_foldable(graph: Graph, bn: Node) -> bool:
    """Whether a batch-norm directly follows a conv or dense layer that feeds nothing else."""
    layer = graph.node(bn.inputs[0])
    return layer.op in WEIGHTED_OPS and len(graph.consumers(layer.name)) == 1


def fold_batchnorm(graph: Graph, use_eps: bool = True) -> Graph:
    """Fold every batch-norm into the conv or dense layer before it (CMB, Eq. 11–12).

    Ŵ = γ / √(σ² + ε) · W  (Eq. 11),   b̂ = γ / √(σ² + ε) · (b − μ) + β  (Eq. 12).
    With ``use_eps=False`` ε is left out, as methods before CMB did. A batch-norm that follows
    no such layer (after a concatenation, an addition or a pool, as in pre-activation ResNets
    and DenseNets) becomes the per-channel ``affine`` node g·x + s it computes.
    """
    for bn in graph.nodes_of("batchnorm"):
        gain, shift = batchnorm_gain_and_shift(bn, use_eps)
        if not batchnorm_foldable(graph, bn):
            bn.op, bn.params, bn.attrs = "affine", {"weight": gain, "bias": shift}, {}
            continue
        layer = graph.node(bn.inputs[0])
        weight = layer.params["weight"]
        bias = layer.params.get("bias", torch.zeros(weight.shape[0], dtype=weight.dtype))
        layer.params["weight"] = weight * gain.view((-1,) + (1,) * (weight.dim() - 1))
        layer.params["bias"] = gain * bias + shift
        graph = remove_node(graph, bn.name)
    return graph


def merge_padding(graph: Graph) -> Graph:
    """Merge a zero ``pad`` into the conv it alone feeds (the conv pads with zeros too), or into a
    max pool it alone feeds when its input is a ReLU output: values ≥ 0, so a zero tap wins only
    where the max pool's −∞ padding would leave the window's largest value, which is ≥ 0, in place."""
    for pad in graph.nodes_of("pad"):
        consumers = graph.consumers(pad.name)
        if len(consumers) != 1:
            continue
        target, source = consumers[0], graph.node(pad.inputs[0])
        if target.op == "conv2d" or (target.op == "maxpool" and source.op == "relu"):
            target.attrs["padding"] = [a + b for a, b in zip(target.attrs["padding"], pad.attrs["padding"])]
            graph = remove_node(graph, pad.name)
    return graph


def fold_affine(graph: Graph) -> Graph:
    """Fold a per-channel affine map x·w + c into the next one, or into the ungrouped conv or dense
    layer it alone feeds: its scale into that layer's input weights, its shift into the bias; only
    where no zero padding would see the shift (dense layers, unpadded convs)."""
    for affine in graph.nodes_of("affine"):
        consumers = graph.consumers(affine.name)
        if len(consumers) == 1 and consumers[0].op == "affine":  # two in a row: one map
            after = consumers[0].params
            after["bias"] = affine.params["bias"] * after["weight"] + after["bias"]
            after["weight"] = affine.params["weight"] * after["weight"]
            graph = remove_node(graph, affine.name)
            continue
        if len(consumers) != 1 or consumers[0].op not in WEIGHTED_OPS:
            continue
        layer = consumers[0]
        padded = layer.op == "conv2d" and (any(layer.attrs["padding"]) or layer.attrs.get("groups", 1) != 1)
        weight = layer.params["weight"]
        if padded or weight.shape[1] != affine.params["weight"].numel():
            continue
        scale, shift = affine.params["weight"], affine.params["bias"]
        view = (1, -1) + (1,) * (weight.dim() - 2)
        bias = layer.params.get("bias", torch.zeros(weight.shape[0], dtype=weight.dtype))
        layer.params["bias"] = bias + (weight * shift.view(view)).flatten(1).sum(1)
        layer.params["weight"] = weight * scale.view(view)
        graph = remove_node(graph, affine.name)
    return graph


def canonicalise(graph: Graph, use_eps: bool = True) -> Graph:
    """Copy the graph and apply every canonicalising pass, in order."""
    graph = graph.clone()
    graph = drop_dropout(graph)
    graph = fold_batchnorm(graph, use_eps=use_eps)
    graph = merge_padding(graph)
    graph = fold_affine(graph)
    return strip_softmax(graph)


def canonicalisation_report(graph: Graph) -> list[str]:
    """What :func:`canonicalise` does to ``graph``, one line per pass that changes it."""
    def layers(op: str) -> list[str]:
        return [n.source or n.name for n in graph.nodes_of(op)]

    folded = [n.source or n.name for n in graph.nodes_of("batchnorm") if batchnorm_foldable(graph, n)]
    kept = [n.source or n.name for n in graph.nodes_of("batchnorm") if not batchnorm_foldable(graph, n)]
    lines = []
    if folded:
        lines.append(f"folded {len(folded)} batch-norm layer(s) into the conv/dense layer before each "
                     f"(Eq. 11–12, with ε: CMB): {', '.join(folded)}")
    if kept:
        lines.append(f"kept {len(kept)} batch-norm layer(s) that follow no conv/dense layer as per-channel affine "
                     f"maps: {', '.join(kept)}")
    if layers("pad"):
        lines.append(f"zero padding {', '.join(layers('pad'))}: merged into the conv or max pool it feeds where exact")
    if layers("dropout"):
        lines.append(f"removed {len(layers('dropout'))} dropout layer(s) (identity at inference): "
                     f"{', '.join(layers('dropout'))}")
    if layers("softmax"):
        lines.append(f"removed the final softmax {layers('softmax')[0]} (monotone: the argmax is unchanged)")
    return lines
