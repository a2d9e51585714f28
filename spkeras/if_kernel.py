"""The integrate-and-fire update of a chunk of steps in one pass over memory (CPU, numba).

For every neuron and step t of the chunk, in order (Eq. 2–4):

    V ← V + Z(t);   Θ(t) = [V ≥ V_thr];   V ← V − Θ(t)·V_thr  (reset by subtraction)  or  V ← 0 where Θ(t) = 1

or, for a neuron that does not fire (potential readout), the output at t is V itself. The
torch loop does this with three whole-tensor operations per step (add, compare, subtract), each
a pass over memory; this kernel keeps a block of potentials in cache across the chunk's steps
and reads each current and writes each output once. It performs the same float operations in
the same order (one addition, one comparison, one subtraction of V_thr, exact for Θ ∈ {0, 1}), so
its potentials and spikes equal the torch loop's bit for bit.
"""

from __future__ import annotations

import numpy as np
import torch

try:
    import numba
except ImportError:  # pragma: no cover - numba is a dependency; this keeps a broken install working
    numba = None

BLOCK = 1024  # neurons per block: the block's potentials stay in the L1 cache across the steps


def _integrate_kernel(v, drive, out, constant, threshold, subtract, fire):
    """``v`` (N,) potentials, updated in place; ``drive`` (steps, N) currents, or (N,) with
    ``constant``; ``out`` (steps, N) spikes (1.0/0.0), or potentials when not ``fire``."""
    neurons = v.shape[0]
    steps = out.shape[0]
    for block in numba.prange((neurons + BLOCK - 1) // BLOCK):
        first = block * BLOCK
        last = min(first + BLOCK, neurons)
        for t in range(steps):
            for i in range(first, last):
                value = v[i] + (drive[0, i] if constant else drive[t, i])
                if not fire:
                    out[t, i] = value
                elif value >= threshold:
                    out[t, i] = 1.0
                    value = value - threshold if subtract else 0.0
                else:
                    out[t, i] = 0.0
                v[i] = value


_compiled = (numba.njit(parallel=True, cache=True, nogil=True)(_integrate_kernel)
             if numba is not None else None)


def usable(v: torch.Tensor, threshold) -> bool:
    """Whether the kernel can run this update: numba installed, a CPU float32/float64 tensor and
    one threshold for every neuron."""
    return (_compiled is not None and v.device.type == "cpu" and v.dtype in (torch.float32, torch.float64)
            and isinstance(threshold, (int, float)))


def integrate(v: torch.Tensor, drive: torch.Tensor, constant: bool, out: torch.Tensor, threshold: float,
              subtract: bool, fire: bool) -> None:
    """Run the chunk's steps: ``v`` (B, …) in place, ``drive`` (steps, B, …) or (B, …) when
    ``constant``, ``out`` (steps, B, …) receives spikes (or potentials when not ``fire``)."""
    steps = out.shape[0]
    currents = drive.detach().to(v.dtype).contiguous().reshape(1 if constant else steps, -1)
    _compiled(v.view(-1).numpy(), currents.numpy(), out.view(steps, -1).numpy(), constant,
              np.dtype(v.numpy().dtype).type(threshold), subtract, fire)
