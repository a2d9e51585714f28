"""Fully connected layers summed in one fixed order on the CPU.

A BLAS matrix product splits and orders its sums by the number of rows and of threads, so in
float32 one image's output can change in its last bits with the batch it is in or the threads
that ran it, and a spike near threshold can then flip. Here each output is

    y[r, o] = b[o] + Σ_{j = 0, 1, …; x[r, j] ≠ 0} x[r, j] · W[o, j]

summed over j in ascending order, one row per thread: the same bits for any batch, chunk, thread
count or machine load. Skipping zero inputs also makes it event-driven on spikes. Compiled with
numba; elsewhere (CUDA, other dtypes, no numba) the dense layer uses ``torch.nn.functional.linear``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

try:
    import numba
except ImportError:  # pragma: no cover - numba is a dependency; this keeps a broken install working
    numba = None


def _dense_kernel(x, weight_t, bias, out):
    """``out`` (rows, outputs) ← bias + x @ weight_t, summing over inputs in ascending order."""
    rows, inputs = x.shape
    for row in numba.prange(rows):
        total = bias.copy()
        for j in range(inputs):
            value = x[row, j]
            if value == 0:
                continue
            weight = weight_t[j]
            for o in range(total.shape[0]):
                total[o] += value * weight[o]
        out[row, :] = total


_compiled = numba.njit(parallel=True, cache=True, nogil=True)(_dense_kernel) if numba is not None else None


def dense(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x @ weightᵀ + bias, in the fixed order above where it can run (CPU, float32/float64)."""
    if (_compiled is None or x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64)
            or weight.dtype != x.dtype or x.dim() != 2 or x.requires_grad):
        return F.linear(x, weight, bias)
    out = torch.empty((x.shape[0], weight.shape[0]), dtype=x.dtype)
    bias = torch.zeros(weight.shape[0], dtype=x.dtype) if bias is None else bias.detach().to(x.dtype)
    _compiled(x.detach().contiguous().numpy(), weight.detach().t().contiguous().numpy(),
              np.ascontiguousarray(bias.numpy()), out.numpy())
    return out
