"""Event-driven convolution on the CPU: each input spike adds the kernel's weights to the outputs
it reaches, so the work is proportional to the spikes, not to the dense input.

For input spikes s (rows, C, H, W), weights W (C_out, C, K_h, K_w) and bias b, the output is the
same 2-D convolution as the dense layer (grouped convolutions: each input channel reaches only
the output channels of its group): the current Z(t) of Eq. 3 from one timestep's spikes,

    Z[r, o, y', x'] = b[o] + Σ_{c, y, x : s[r, c, y, x] ≠ 0} s[r, c, y, x] · W[o, c, k_y, k_x],
    k_y = y + p_top − s_y·y',  k_x = x + p_left − s_x·x'

with the sum taken over the nonzero inputs only (in the order c, y, x) and terms outside the
kernel left out. Between layers of a converted network only a few per cent of the inputs are
spikes, so this does far fewer operations than a dense convolution. The sum runs in a fixed order
for every row, so a row's output does not depend on the batch it is in; it differs from the dense
convolution library's float32 result only by rounding (the library sums in its own order).
Compiled with numba; without numba the simulator uses the dense convolution.
"""

from __future__ import annotations

import numpy as np
import torch

try:
    import numba
except ImportError:  # pragma: no cover - numba is a dependency; this keeps a broken install working
    numba = None

# Input spike density (nonzero fraction) below which the event-driven convolution is used. On
# VGG-16's layer shapes (2 CPU cores) it takes 0.2-0.5 of the dense time at 2-4 % and breaks
# even around 15 %.
DENSITY_WORTH_SCATTERING = 0.1
# Smallest layers worth it: with fewer output channels (the vector each spike adds) or fewer
# weights per output, the dense convolution is cheap and the per-spike overhead wins (measured:
# 8→16 and 32→32 channels, 3×3, were slower event-driven at 5 % density; 32→64 and 64→64 faster).
MIN_OUTPUT_CHANNELS = 64
MIN_WEIGHTS_PER_OUTPUT = 256


def available() -> bool:
    """Whether the event-driven convolution can run here (numba is installed)."""
    return numba is not None


def _scatter_kernel(spikes, weights, bias, out, top, left, stride_y, stride_x, groups):
    """``out`` (rows, C_out, H', W') ← the convolution of ``spikes`` (rows, C, H, W) with
    ``weights`` laid out (C/groups, K_h, K_w, C_out); input channel c of group g = c // (C/groups)
    reaches only that group's C_out/groups outputs. One row per thread at a time."""
    rows, channels, height, width = spikes.shape
    kernel_h, kernel_w, outputs = weights.shape[1], weights.shape[2], weights.shape[3]
    out_h, out_w = out.shape[2], out.shape[3]
    per_group_in, per_group_out = channels // groups, outputs // groups
    for row in numba.prange(rows):
        total = np.empty((out_h, out_w, outputs), dtype=out.dtype)
        for oy in range(out_h):
            for ox in range(out_w):
                total[oy, ox, :] = bias
        for c in range(channels):
            first = (c // per_group_in) * per_group_out
            kernel_channel = c % per_group_in
            for y in range(height):
                for x in range(width):
                    value = spikes[row, c, y, x]
                    if value == 0:
                        continue
                    for ky in range(kernel_h):
                        shifted_y = y + top - ky
                        if shifted_y < 0 or shifted_y % stride_y != 0 or shifted_y // stride_y >= out_h:
                            continue
                        for kx in range(kernel_w):
                            shifted_x = x + left - kx
                            if shifted_x < 0 or shifted_x % stride_x != 0 or shifted_x // stride_x >= out_w:
                                continue
                            # slices, so that o counts from 0: LLVM then knows o ≥ 0 and vectorises
                            target = total[shifted_y // stride_y, shifted_x // stride_x, first : first + per_group_out]
                            weight = weights[kernel_channel, ky, kx, first : first + per_group_out]
                            for o in range(per_group_out):
                                target[o] += value * weight[o]
        for o in range(outputs):
            for oy in range(out_h):
                for ox in range(out_w):
                    out[row, o, oy, ox] = total[oy, ox, o]


_compiled = numba.njit(parallel=True, cache=True, nogil=True)(_scatter_kernel) if numba is not None else None


class EventConv:
    """Event-driven convolutions of one simulation: keeps each layer's weights in the layout
    the kernel reads (C, K_h, K_w, C_out) and counts how many layer calls it served."""

    def __init__(self):
        self.layouts: dict[str, torch.Tensor] = {}
        self.calls = {"scatter": 0, "dense": 0}
        numba.set_num_threads(min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))

    def worth_it(self, spikes: torch.Tensor, weight: torch.Tensor) -> bool:
        """True for a float32 or float64 layer of at least ``MIN_OUTPUT_CHANNELS`` outputs and
        ``MIN_WEIGHTS_PER_OUTPUT`` weights per output whose input has fewer than
        ``DENSITY_WORTH_SCATTERING`` nonzero entries."""
        worth = (spikes.dtype in (torch.float32, torch.float64) and weight.dtype == spikes.dtype
                 and weight.shape[0] >= MIN_OUTPUT_CHANNELS and weight[0].numel() >= MIN_WEIGHTS_PER_OUTPUT
                 and int(torch.count_nonzero(spikes)) < DENSITY_WORTH_SCATTERING * spikes.numel())
        self.calls["scatter" if worth else "dense"] += 1
        return worth

    def conv2d(self, name: str, spikes: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
               padding, stride, groups: int = 1) -> torch.Tensor:
        """The convolution of ``spikes`` with the node's (top, bottom, left, right) ``padding``
        and ``groups``."""
        if name not in self.layouts:
            self.layouts[name] = weight.detach().permute(1, 2, 3, 0).contiguous()
        top, bottom, left, right = padding
        rows, _, height, width = spikes.shape
        kernel_h, kernel_w = weight.shape[2:]
        out_h = (height + top + bottom - kernel_h) // stride[0] + 1
        out_w = (width + left + right - kernel_w) // stride[1] + 1
        out = torch.empty((rows, weight.shape[0], out_h, out_w), dtype=spikes.dtype)
        bias = torch.zeros(weight.shape[0], dtype=weight.dtype) if bias is None else bias.detach()
        _compiled(spikes.detach().contiguous().numpy(), self.layouts[name].numpy(), bias.contiguous().numpy(),
                  out.numpy(), top, left, stride[0], stride[1], groups)
        return out

    @property
    def share(self) -> float | None:
        """Fraction of conv-layer calls on spikes that ran event-driven (None: no such call)."""
        total = sum(self.calls.values())
        return self.calls["scatter"] / total if total else None
