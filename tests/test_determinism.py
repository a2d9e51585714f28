"""The same command and seed give the same numbers whatever the number of threads, the batch an
image is in, or the load on the machine: dense layers sum in a fixed order (spkeras.fixed_order)
where a BLAS product's order follows the threads and the batch shape."""

import json

import pytest
import torch

from spkeras import api
from spkeras.demo import asset
from spkeras.ir import Node
from spkeras.ops import apply_stateless


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def dense_node(inputs, outputs, seed):
    g = torch.Generator().manual_seed(seed)
    return Node("fc", "dense", ["x"], {"weight": torch.randn(outputs, inputs, generator=g),
                                       "bias": torch.randn(outputs, generator=g)}, {}, (outputs,))


@pytest.mark.parametrize("inputs,outputs,rows", [(800, 10, 100), (512, 512, 224), (4096, 10, 37)])
def test_a_dense_row_is_the_same_bits_in_any_batch_and_with_any_threads(inputs, outputs, rows, restore_threads):
    node = dense_node(inputs, outputs, seed=inputs)
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(rows, inputs, generator=g) < 0.1).float() * torch.rand(rows, inputs, generator=g)
    torch.set_num_threads(2)
    full = apply_stateless(node, [x])
    torch.set_num_threads(1)
    assert torch.equal(apply_stateless(node, [x]), full), "thread count changed the result"
    for lo, hi in ((0, 1), (3, 4), (5, rows - 2)):
        assert torch.equal(apply_stateless(node, [x[lo:hi]])[0], full[lo]), "batch composition changed a row"
    assert torch.allclose(full, torch.nn.functional.linear(x, node.params["weight"], node.params["bias"]),
                          rtol=1e-5, atol=1e-5)


def without_timings(result) -> str:
    record = result.to_dict()
    record.pop("timings")
    return json.dumps(record, sort_keys=True)


def test_ecc_plus_result_json_is_identical_across_threads_and_batch_sizes(restore_threads):
    common = dict(data=asset("mnist_test.npz"), calibration=asset("mnist_calib.npz"), method="ecc+", timesteps=16,
                  n=120, calib_n=300)
    torch.set_num_threads(2)
    reference = without_timings(api.evaluate(asset("mnist_cnn.keras"), **common))
    torch.set_num_threads(1)
    assert without_timings(api.evaluate(asset("mnist_cnn.keras"), **common)) == reference
    torch.set_num_threads(2)
    assert without_timings(api.evaluate(asset("mnist_cnn.keras"), batch_size=37, **common)).replace(
        '"batch_size": 37', '"batch_size": 100') == reference


def test_cli_help_and_version_do_not_import_torch_or_keras():
    """Start-up: `spkeras --help`, `--version` and argument errors answer without the heavy libraries."""
    import subprocess
    import sys

    code = ("import sys; from spkeras.cli import build_parser\n"
            "try:\n    build_parser().parse_args(['--version'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'keras', 'numba', 'matplotlib') if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    from spkeras.version import __version__

    assert run.stdout.strip().splitlines() == [f"spkeras {__version__}", "[]"], run.stdout + run.stderr
