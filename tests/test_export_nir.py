"""NIR export: structure and metadata, refusals, and a round trip through a third-party reader.

The round trip writes the demo network with ``spkeras export``, reads the file with ``nir.read``,
builds it with sinabs (``sinabs.from_nir``, an independent simulator that reads NIR), simulates it
there and compares per-layer spike counts with ours on 20 images.

sinabs maps NIR's IF node to its IAF layer, which resets by subtraction like ours, but by default
adds a floor at −v_threshold and may emit several spikes in one step; the exported metadata says
``spikes_per_step: at most one`` and ``neuron_model: … no floor``, so the reader is configured
accordingly (``SingleSpike``, ``min_v_mem=None``), as docs/nir.md tells its users to do.

Tolerance: per-layer spike totals within 0.5 % and at least 99 % of neurons with identical
counts. Both sides run the same float32 dynamics, but in a different order of operations (the TRE
current is pre-added to the bias, pools are SumPool2d plus a 1×1 scaling convolution, all T steps
go through a convolution as one batch), so a membrane potential within rounding error of the
threshold may fire one step earlier or later. In practice the counts agree exactly.
"""

import functools

import numpy as np
import pytest
import torch

import spkeras
from spkeras import cli
from spkeras.demo import asset
from spkeras.encoding import make_encoder
from spkeras.errors import ModelError
from spkeras.evaluation import checked_images
from spkeras.export.nir import to_nir, write_nir
from spkeras.methods import get_method
from spkeras.methods.framework import convert
from spkeras.simulate import simulate
from spkeras.snn import save_snn

from . import helpers
from .helpers import one_thread  # noqa: F401  (autouse fixture)

nir = pytest.importorskip("nir")

T = 48
N = 20


def demo_net(**options):
    return spkeras.convert(asset("mnist_cnn.keras"), asset("mnist_calib.npz"), timesteps=T, calib_n=100, **options)


@pytest.fixture(scope="module")
def ecc_demo():
    return demo_net()


def encoded_input(net, images: torch.Tensor) -> torch.Tensor:
    """What the NIR graph's input receives (graph metadata 'input'), as (N·T, C, H, W), batch-major."""
    frames = make_encoder(images, net.method, torch.arange(images.shape[0])).next(T)
    if frames.dim() == images.dim():  # analog: the same image at every step
        frames = frames.unsqueeze(0).expand(T, *frames.shape)
    return frames.transpose(0, 1).reshape(images.shape[0] * T, *images.shape[1:])


def sinabs_counts(module, net, images) -> dict[str, torch.Tensor]:
    """Per-neuron spike counts of every IAF layer of a sinabs model, configured per the metadata."""
    from sinabs.activation import SingleSpike
    from sinabs.layers import IAFSqueeze

    counts = {}
    n = images.shape[0]
    for name, layer in module.named_modules():
        if isinstance(layer, IAFSqueeze):
            layer.spike_fn = SingleSpike  # metadata: spikes_per_step = at most one
            layer.min_v_mem = None        # metadata: no floor
            layer.register_forward_hook(
                lambda m, i, out, name=name: counts.__setitem__(name, out.reshape(n, T, *out.shape[1:]).sum(1)))
    with torch.no_grad():
        module(encoded_input(net, images))
    return counts


def assert_counts_agree(ours, theirs: dict, layers):
    for layer in layers:
        mine, other = ours[layer], theirs[layer]
        assert mine.shape == other.shape, layer
        total = float(mine.sum())
        assert abs(float(other.sum()) - total) <= 0.005 * max(total, 1.0), layer
        assert float((mine == other).double().mean()) >= 0.99, layer
    assert sum(float(ours[layer].sum()) for layer in layers) > 0


def test_demo_nir_file_runs_in_sinabs_with_the_same_spikes(ecc_demo, tmp_path, capsys):
    sinabs_nir = pytest.importorskip("sinabs.nir")
    snn_path, nir_path = tmp_path / "demo.snn", tmp_path / "demo.nir"
    save_snn(ecc_demo, snn_path)
    assert cli.main(["export", str(snn_path), "--nir", str(nir_path), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "reset by subtraction" in err and "Algorithm 1" in err  # the two warnings
    graph = nir.read(str(nir_path))
    images = checked_images(spkeras.api.as_dataset(asset("mnist_test.npz"), N), ecc_demo.cnn)
    ours = helpers.simulate_counting(ecc_demo, images, T).neuron_counts
    with pytest.warns(DeprecationWarning):  # sinabs.from_nir uses nirtorch.load, deprecated in nirtorch 2
        module = sinabs_nir.from_nir(graph, num_timesteps=T)
    theirs = sinabs_counts(module, ecc_demo, images)
    spiking = [n.name for n in ecc_demo.spike_nodes]
    assert sorted(theirs) == sorted(spiking)
    assert_counts_agree(ours, theirs, spiking)


def test_residual_graph_fan_in_through_nirtorch_with_sinabs_layers():
    """A residual add is a fan-in of edges. sinabs.from_nir runs graphs with nirtorch's deprecated
    executor, which orders nodes depth-first and so drops one branch of a fan-in; nirtorch's
    current interpreter (nir_to_torch), given sinabs's own node mapping, runs them in order."""
    nirtorch = pytest.importorskip("nirtorch")
    sinabs_nir = pytest.importorskip("sinabs.nir")
    graph = helpers.residual_cnn(dtype=torch.float32, size=8)
    images = helpers.images(graph, N, dtype=torch.float32)
    net = convert(graph, images, get_method("ecc", encoding="analog"), T)
    exported, _ = to_nir(net)
    assert {source for source, target in exported.edges if target == "relu2"} == {"add_0", "add_1"}
    mapping = functools.partial(sinabs_nir._import_sinabs_module, batch_size=None, num_timesteps=T)
    module = nirtorch.nir_to_torch(exported, {kind: mapping for kind in
                                              (nir.Conv2d, nir.Affine, nir.IF, nir.SumPool2d, nir.Flatten)})
    ours = helpers.simulate_counting(net, images, T).neuron_counts
    theirs = sinabs_counts(module, net, images)
    assert_counts_agree(ours, theirs, [n.name for n in net.spike_nodes])


def test_nodes_metadata_and_folded_step_current(ecc_demo, tmp_path):
    path = tmp_path / "demo.nir"
    warnings = write_nir(ecc_demo, path)
    assert len(warnings) == 2
    graph = nir.read(str(path))
    meta = graph.metadata
    assert meta["encoding"] == "algorithm1" and "Algorithm 1" in meta["input"] and float(meta["kappa0"]) == 100
    assert "v >= v_threshold" in meta["neuron_model"] and meta["reset"] == "subtract"
    for spike in ecc_demo.spike_nodes:
        node = graph.nodes[spike.name]
        assert isinstance(node, nir.IF)
        assert node.metadata["reset"] == "subtract" and node.metadata["spike_condition"] == "v >= v_threshold"
        np.testing.assert_allclose(node.v_threshold, spike.attrs["threshold"])
        assert not node.v_reset.any() and (node.r == 1).all()
        source = ecc_demo.graph.node(spike.inputs[0])
        if source.op in ("conv2d", "dense"):  # the TRE current joins the bias of the layer feeding the neuron
            exported = graph.nodes[source.name]
            expected = source.params["bias"].numpy() + np.float32(spike.attrs["step_current"])
            np.testing.assert_allclose(exported.bias, expected, rtol=1e-6)
            np.testing.assert_array_equal(exported.weight, source.params["weight"].numpy())
        else:  # average pool: SumPool2d, then a 1×1 conv with scale/area and the TRE current
            assert isinstance(graph.nodes[source.name], nir.SumPool2d)
            scale = graph.nodes[f"{source.name}_scale"]
            k = source.attrs["kernel"][0] * source.attrs["kernel"][1]
            np.testing.assert_allclose(np.diagonal(scale.weight[:, :, 0, 0]), source.attrs["scale"] / k, rtol=1e-6)
            np.testing.assert_allclose(scale.bias, spike.attrs["step_current"], rtol=1e-6)
    assert ("dense_1_spike", "output") in graph.edges


def test_reset_to_zero_and_potential_readout():
    graph = helpers.mlp(dtype=torch.float32)
    images = helpers.images(graph, 10, dtype=torch.float32)
    net = convert(graph, images, get_method("rueckauer2017", reset="zero", readout="potential"), T)
    exported, warnings = to_nir(net)
    assert "reset to zero" in warnings[0] and len(warnings) == 1  # analog input: no encoder warning
    hidden = exported.nodes["relu1"]
    assert isinstance(hidden, nir.IF) and hidden.metadata["reset"] == "zero"
    assert isinstance(exported.nodes[net.graph.output], nir.I)  # the read-out layer integrates, never fires


def test_initial_potential_is_refused_and_nothing_is_written(tmp_path, capsys):
    net = demo_net(tre="initial")
    with pytest.raises(ModelError, match="initial membrane potential"):
        to_nir(net)
    snn_path, out = tmp_path / "init.snn", tmp_path / "init.nir"
    save_snn(net, snn_path)
    assert cli.main(["export", str(snn_path), "--nir", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--tre spread" in err[0]
    assert not out.exists() and not list(tmp_path.glob(".init.nir*"))


def assert_refused_by_nir_but_saved(net, param: str, refusal: str, path) -> None:
    """NIR refuses ``net`` (message matching ``refusal``); the .snn file keeps every spike node's
    ``param`` bit for bit, and the reloaded network simulates spike for spike the same."""
    from spkeras.snn import load_snn

    with pytest.raises(ModelError, match=refusal):
        to_nir(net)
    save_snn(net, path)
    loaded = load_snn(path)
    for node in net.spike_nodes:
        if param in node.params:
            assert torch.equal(loaded.graph.node(node.name).params[param], node.params[param])
    images = checked_images(spkeras.api.as_dataset(asset("mnist_test.npz"), 20), net.cnn)
    assert torch.equal(simulate(loaded, images, T).spikes, simulate(net, images, T).spikes)


def test_calibrated_initial_potentials_are_saved_and_refused_by_nir(tmp_path):
    net = demo_net(method="ecc+", tre="spread", potential_share=1.0, rate_calibration_images=32, step_bias=False)
    assert any("initial_potential" in n.params for n in net.spike_nodes)
    assert all(n.attrs["v_init"] == 0.0 for n in net.spike_nodes)
    assert_refused_by_nir_but_saved(net, "initial_potential", "per-channel initial potentials",
                                    tmp_path / "calibrated.snn")


def test_asymmetric_padding_is_refused():
    graph = helpers.chain_cnn(dtype=torch.float32)  # a stride-2 convolution padded (0, 1, 0, 1)
    net = convert(graph, helpers.images(graph, 10, dtype=torch.float32), get_method("ecc"), T)
    with pytest.raises(ModelError, match="asymmetric"):
        to_nir(net)


def test_per_step_corrections_are_saved_and_refused_by_nir(tmp_path):
    net = demo_net(method="ecc+", tre="spread", potential_share=0.0, step_bias=True, rate_calibration_images=32,
                   delay_calibration_images=0)
    corrections = [n.params["step_bias"] for n in net.spike_nodes]
    assert all(c.shape[0] == T and c.abs().sum() > 0 for c in corrections)
    assert_refused_by_nir_but_saved(net, "step_bias", "per-step current correction", tmp_path / "corrected.snn")
