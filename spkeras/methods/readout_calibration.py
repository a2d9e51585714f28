"""Readout delay chosen on calibration images (no retraining, no test images).

A delayed readout ignores what the output accumulates in the first K steps, while the layers
below are still filling: the prediction after T steps is argmax_c (S_c(T) − S_c(K)), where S(t)
is the output's cumulative readout (spike count, or membrane potential). How long the transient
lasts depends on the network's depth and on T, so instead of one fixed fraction for every
network, conversion measures S(t) on calibration images (the rate calibration's images from its
layer walk, which keeps every layer below the output, the rest by simulation) and picks the fraction
f ∈ ``DELAY_FRACTIONS`` (K = ⌊f·T⌋) whose readout agrees most often with the CNN's predictions;
a tie goes to the shorter delay.
"""

from __future__ import annotations

import torch

from ..evaluation import cnn_predictions
from ..layerwise import LayerWalk
from ..progress import announce
from ..simulate import OutputScores, RunOptions, simulate
from ..snn import SpikingNetwork

DELAY_FRACTIONS = (0.0, 0.25, 0.5, 0.625, 0.75, 0.875)


def delayed_predictions(scores: torch.Tensor, delay: int) -> torch.Tensor:
    """argmax_c (S_c(T) − S_c(K)) for cumulative readouts ``scores`` (T, N, classes), S(0) = 0."""
    final = scores[-1] - scores[delay - 1] if delay else scores[-1]
    return final.argmax(dim=-1)


def calibrate_readout_delay(net: SpikingNetwork, images: torch.Tensor, device: str = "cpu", split: int = 0,
                            walk: LayerWalk | None = None) -> SpikingNetwork:
    """Set the network's readout delay to the fraction of T that best agrees with the CNN on
    ``images`` (see the module docstring); returns the network, changed in place.

    The readout S(t) of ``images[:split]`` and of the rest are measured as two runs. A rate
    calibration's ``walk`` over the first ``split`` images (its images) has every layer below the
    output kept, so those images cost only the output layer; without it (or when it walked more
    images than ``images``: one run) both runs are simulated."""
    steps = net.timesteps
    if walk is not None and walk.images.shape[0] > images.shape[0]:
        walk = None
    if walk is not None:
        split = walk.images.shape[0]
        if not torch.equal(walk.images, images[:split]):
            raise ValueError("the walk's images must be the first of the delay-calibration images")
    announce(f"choosing readout delay ({images.shape[0]} images, T={steps})")
    parts = []
    for first, last in ((0, split), (split, images.shape[0])):
        if last <= first:
            continue
        recorder = OutputScores()
        if walk is not None and first == 0:
            walk.run(net, net.graph.output, [recorder], readout=True)
        else:
            simulate(net, images[first:last], RunOptions(timesteps=steps, device=device), [recorder])
        parts.append(recorder.scores)
    scores = torch.cat(parts, 1)  # S(t) before any delay
    cnn = cnn_predictions(net.cnn.to(device), images, 100, device)

    def agreement(fraction: float) -> int:
        return int((delayed_predictions(scores, int(fraction * steps)) == cnn).sum())

    best = max(DELAY_FRACTIONS, key=lambda f: (agreement(f), -f))
    net.method = net.method.with_options(readout_delay=int(best * steps), readout_delay_fraction=best)
    return net
