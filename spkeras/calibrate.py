"""λ calibration: the activation statistic of every spiking site over calibration images.

λ_n is either the maximum activation of site n (Eq. 7's λ_n = max_i a_i^n) or a high
percentile of its positive activations (Rueckauer et al. 2017). Percentiles are exact:
only the top ``k`` values per site are kept while streaming over batches.
"""

from __future__ import annotations

import math

import torch

from .errors import ConfigError, ModelError
from .ir import Graph, neurons
from .ops import run_graph
from .progress import announce, progress_bar


class _SiteStatistic:
    """Streams one site's activations and yields the maximum or an exact upper percentile."""

    def __init__(self, percentile: float | None, total_values: int):
        self.percentile = percentile
        self.keep = total_values if percentile is None else max(1, math.ceil(total_values * (1 - percentile / 100)) + 2)
        self.maximum = 0.0
        self.top = torch.empty(0)
        self.positives = 0

    def update(self, activations: torch.Tensor) -> None:
        # max before the float32 cast equals max after it (rounding is monotonic), without copying
        self.maximum = max(self.maximum, float(activations.detach().max().float()))
        if self.percentile is None:
            return
        flat = activations.detach().flatten().float()
        positive = flat[flat > 0]
        self.positives += positive.numel()
        merged = torch.cat([self.top, positive.cpu()])
        self.top = torch.topk(merged, min(self.keep, merged.numel())).values if merged.numel() else merged

    def value(self) -> float:
        if self.percentile is None or self.positives == 0:
            return self.maximum
        # rank of the percentile among positive values, counted from the top (linear interpolation)
        position = (self.positives - 1) * (1 - self.percentile / 100)
        low = math.floor(position)
        if low + 1 >= self.top.numel():
            return float(self.top[min(low, self.top.numel() - 1)])
        frac = position - low
        return float(self.top[low] * (1 - frac) + self.top[low + 1] * frac)


def calibrate(
    graph: Graph,
    sites: list[str],
    images: torch.Tensor,
    percentile: float | None = None,
    batch_size: int = 100,
    device: str = "cpu",
) -> dict[str, float]:
    """λ for each site: max activation (``percentile=None``) or that percentile of positive activations.

    ``images`` are channels-first (N, C, H, W). Raises ModelError when a site never activates
    (λ = 0 would make every normalised weight infinite).
    """
    if percentile is not None and not 0 < percentile <= 100:
        raise ConfigError(f"percentile must be in (0, 100], got {percentile}")
    count = images.shape[0]
    stats = {s: _SiteStatistic(percentile, count * neurons(graph.node(s))) for s in sites}

    def observe(node, value):
        if node.name in stats:
            stats[node.name].update(value)

    graph = graph.to(device)
    statistic = "max" if percentile is None else f"{percentile} percentile"
    announce(f"calibrating λ ({statistic} of {len(sites)} layers' activations, {count} images)")
    with torch.no_grad():
        for start in progress_bar(range(0, count, batch_size), desc="calibrating λ", unit="batch"):
            run_graph(graph, images[start : start + batch_size].to(device), observe=observe)
    lambdas = {s: stats[s].value() for s in sites}
    for site, value in lambdas.items():
        if not value > 0:
            node = graph.node(site)
            raise ModelError(
                f"calibration gives λ = 0 at {node.source or node.name}: no calibration image activates it; "
                "use calibration data from the training distribution"
            )
    return lambdas
