"""Input encodings: analog current, Algorithm 1 spike trains, and Bernoulli ("Poisson") spikes.

Every encoder sees images in [0, 1] (channels-first) and yields, per step, the input layer's
output: the image itself (analog) or 0/1 spikes whose rate approximates the pixel value.
"""

from __future__ import annotations

import torch

from .method import Method

_MASK = 0xFFFFFFFF


def _mix32(h: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (xorshift-multiply finaliser) on int64 tensors holding 32-bit values."""
    h = h ^ (h >> 16)
    h = (h * 0x7FEB352D) & _MASK
    h = h ^ (h >> 15)
    h = (h * 0x846CA68B) & _MASK
    return h ^ (h >> 16)


def bernoulli_uniforms(seed: int, image_ids: torch.Tensor, step: int, per_image: int, device) -> torch.Tensor:
    """Uniform numbers in [0, 1) indexed by (seed, image, step, pixel), shape (B, per_image).

    Counter-based, so a spike train depends only on these indices: it is the same for any
    batch size, chunk size, device or process split.
    """
    pixel = torch.arange(per_image, device=device, dtype=torch.int64)
    h = _mix32((image_ids.to(device=device, dtype=torch.int64).view(-1, 1) + seed * 0x9E3779B1) & _MASK)
    h = _mix32((h ^ step * 0x85EBCA77) & _MASK)
    h = _mix32((h + pixel.view(1, -1) * 0xC2B2AE3D) & _MASK)
    return h.to(torch.float32) * (1.0 / 4294967296.0)


class Encoder:
    """Yields the input layer's output for consecutive steps of one batch of images."""

    constant = False

    def __init__(self, images: torch.Tensor, method: Method, image_ids: torch.Tensor, seed: int):
        self.images = images
        self.method = method
        self.image_ids = image_ids
        self.seed = seed
        self.potential = torch.zeros_like(images)
        self.step = 0

    def next(self, count: int) -> torch.Tensor:
        """Spikes (or currents) for the next ``count`` steps, shape (count, B, C, H, W)."""
        frames = [self._one_step() for _ in range(count)]
        return torch.stack(frames)

    def _one_step(self) -> torch.Tensor:
        self.step += 1
        if self.method.encoding == "poisson":
            shape = self.images.shape
            u = bernoulli_uniforms(self.seed, self.image_ids, self.step, self.images[0].numel(), self.images.device)
            return (u.view(shape) < self.images).to(self.images.dtype)
        return self._algorithm1_step()

    def _algorithm1_step(self) -> torch.Tensor:
        """Algorithm 1: V += κ₀·X/max(X); spike when V > V_thr = κ₀ (strict), then subtract V_thr.

        max(X) is the top of the input range (1 for images scaled to [0, 1]), so λ₀ = 1 as in Eq. 7.
        """
        kappa0 = self.method.kappa0
        self.potential += kappa0 * self.images
        spikes = (self.potential > kappa0).to(self.images.dtype)
        self.potential -= spikes * kappa0
        return spikes

    def keep(self, keep: torch.Tensor) -> None:
        """Continue with only the images where ``keep`` is True (early exit)."""
        self.images = self.images[keep]
        self.potential = self.potential[keep]
        self.image_ids = self.image_ids[keep.to(self.image_ids.device)]

    def counts(self, steps: int) -> torch.Tensor:
        """Total input over the first ``steps`` steps (spike counts, or t·x for analog)."""
        total = torch.zeros_like(self.images)
        for _ in range(steps):
            total += self._one_step()
        return total


class AnalogEncoder(Encoder):
    """Constant current: the image itself at every step."""

    constant = True

    def next(self, count: int) -> torch.Tensor:
        return self.images

    def counts(self, steps: int) -> torch.Tensor:
        return self.images * steps


def make_encoder(images: torch.Tensor, method: Method, image_ids: torch.Tensor, seed: int = 0) -> Encoder:
    """The encoder the method asks for, fresh at step 0."""
    cls = AnalogEncoder if method.encoding == "analog" else Encoder
    return cls(images, method, image_ids, seed)
