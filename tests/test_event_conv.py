"""The event-driven convolution against torch's dense convolution (an independent implementation)."""

import pytest
import torch

from spkeras.event_conv import EventConv
from spkeras.ir import Node
from spkeras.ops import pad_and_conv

SHAPES = [  # (channels in, out, size, kernel, stride, (top, bottom, left, right))
    (3, 5, 9, 3, (1, 1), (1, 1, 1, 1)),
    (4, 6, 8, 3, (2, 2), (0, 1, 0, 1)),      # Keras 'same' with stride 2: asymmetric
    (2, 3, 7, 5, (1, 2), (2, 2, 0, 3)),
    (5, 4, 6, 1, (1, 1), (0, 0, 0, 0)),
]


def conv_node(cin, cout, kernel, stride, padding, dtype, bias=True):
    generator = torch.Generator().manual_seed(cin * 7 + cout)
    params = {"weight": torch.randn(cout, cin, kernel, kernel, generator=generator, dtype=dtype)}
    if bias:
        params["bias"] = torch.randn(cout, generator=generator, dtype=dtype)
    return Node("conv", "conv2d", ["x"], params=params, attrs={"stride": list(stride), "padding": list(padding)})


def run_event(node, x):
    return EventConv().conv2d(node.name, x, node.params["weight"], node.params.get("bias"),
                              node.attrs["padding"], node.attrs["stride"])


@pytest.mark.parametrize("cin,cout,size,kernel,stride,padding", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_event_conv_equals_dense_conv(cin, cout, size, kernel, stride, padding, dtype):
    """Binary spikes, graded values (pooled spikes) and silent rows, with and without bias."""
    generator = torch.Generator().manual_seed(size)
    spikes = (torch.rand(7, cin, size, size, generator=generator) < 0.2).to(dtype)
    spikes[2] = 0
    spikes[3] *= 0.25
    for bias in (True, False):
        node = conv_node(cin, cout, kernel, stride, padding, dtype, bias)
        expected = pad_and_conv(node, spikes, node.params["weight"], node.params.get("bias"))
        got = run_event(node, spikes)
        assert got.shape == expected.shape and got.dtype == dtype
        tolerance = 1e-12 if dtype == torch.float64 else 1e-5
        assert torch.allclose(got, expected, atol=tolerance, rtol=0), float((got - expected).abs().max())
        assert torch.equal(got[2], expected[2]), "a silent row must get the bias (or zero) exactly"


def test_a_row_does_not_depend_on_its_batch():
    """Fixed summation order: one row alone gives bit-for-bit what it gives inside a batch."""
    node = conv_node(16, 8, 3, (1, 1), (1, 1, 1, 1), torch.float32)
    spikes = (torch.rand(9, 16, 6, 6, generator=torch.Generator().manual_seed(1)) < 0.1).float()
    batched = run_event(node, spikes)
    assert all(torch.equal(run_event(node, spikes[k : k + 1])[0], batched[k]) for k in range(9))


def test_density_and_layer_size_decide_and_calls_are_counted():
    events = EventConv()
    large, small = torch.zeros(64, 32, 3, 3), torch.zeros(16, 32, 3, 3)
    sparse = torch.zeros(2, 32, 10, 10)
    sparse[0, 0, :2] = 1  # 20 of 6400
    assert events.worth_it(sparse, large)
    assert not events.worth_it(torch.ones(2, 32, 10, 10), large), "dense input"
    assert not events.worth_it(sparse, small), "too few output channels"
    assert not events.worth_it(sparse, torch.zeros(64, 16, 3, 3)), "too few weights per output"
    assert not events.worth_it(sparse.half(), large.half()), "numba kernel: float32 and float64 only"
    assert events.share == 0.2
    assert EventConv().share is None
