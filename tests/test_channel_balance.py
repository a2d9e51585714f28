"""Channel balancing (spkeras/methods/channel_balance.py): the rescaled CNN computes the same
function, every balanced site's channels reach the site's largest activation, ineligible sites
are left alone, and the converted network still agrees with the CNN in the limit."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import helpers  # noqa: E402
from helpers import one_thread  # noqa: E402,F401  (autouse fixture)
from test_simulation import T, assert_same_as_reference  # noqa: E402

from spkeras.closed_form import closed_form  # noqa: E402
from spkeras.errors import ConfigError  # noqa: E402
from spkeras.methods import get_method  # noqa: E402
from spkeras.methods.channel_balance import absorbing_readers, balance_channels  # noqa: E402
from spkeras.methods.framework import convert, prepare  # noqa: E402
from spkeras.ops import run_graph  # noqa: E402
from spkeras.passes import canonicalise  # noqa: E402

NETWORKS = {"chain": helpers.chain_cnn, "residual": lambda: helpers.residual_cnn(branch=2),
            "maxpool": helpers.maxpool_cnn, "grouped_concat": helpers.grouped_concat_cnn}


def site_outputs(graph, images):
    seen = {}
    run_graph(graph, images, observe=lambda node, value: seen.__setitem__(node.name, value))
    return seen


def channel_peaks(value):
    return value.transpose(0, 1).flatten(1).amax(1)


@pytest.mark.parametrize("kind", NETWORKS)
def test_balancing_keeps_the_cnn_s_function(kind):
    cnn = canonicalise(NETWORKS[kind](), use_eps=True)
    images = helpers.images(cnn, 24)
    balanced = balance_channels(cnn, images[:16])
    assert torch.allclose(run_graph(balanced, images), run_graph(cnn, images), rtol=1e-9, atol=1e-10)


def test_balanced_sites_reach_the_layer_peak_in_every_channel_and_others_are_untouched():
    cnn = canonicalise(helpers.residual_cnn(branch=2), use_eps=True)
    images = helpers.images(cnn, 16)
    before, after = site_outputs(cnn, images), site_outputs(balance_channels(cnn, images), images)
    # relu1b feeds only conv2: balanced; relu1 feeds the addition and relu2 the output's pooling → dense
    peaks = channel_peaks(after["relu1b"])
    assert not torch.allclose(channel_peaks(before["relu1b"]), peaks)
    assert torch.allclose(peaks, peaks.max().expand_as(peaks))
    assert torch.equal(before["relu1"], after["relu1"])
    assert torch.allclose(after["relu2"], before["relu2"], rtol=1e-12)


def test_clipped_relus_and_grouped_readers_are_not_balanced():
    cnn = canonicalise(helpers.maxpool_cnn(), use_eps=True)  # relu2 is clipped
    grouped = canonicalise(helpers.grouped_concat_cnn(), use_eps=True)  # relu1 feeds a depthwise conv
    for graph, site in ((cnn, "relu2"), (grouped, "relu1"), (grouped, "relu_dw")):
        images = helpers.images(graph, 8)
        assert absorbing_readers(graph, graph.node(site)) is None
        before, after = site_outputs(graph, images)[site], site_outputs(balance_channels(graph, images), images)[site]
        assert torch.allclose(after, before, rtol=1e-12, atol=1e-14)  # the same values: not rescaled


def test_balanced_conversion_matches_the_reference_simulator_and_the_cnn_in_the_limit():
    cnn = helpers.chain_cnn()
    images = helpers.images(cnn, 16, seed=5)
    method = get_method("ecc", channel_balance=True)
    assert_same_as_reference(convert(cnn, images, method, T), images)
    limit = get_method("rueckauer2017", statistic="max", readout="potential", channel_balance=True)
    record = closed_form(convert(cnn, images, limit, 8), images, [20000])
    assert torch.equal(record.predictions[0], run_graph(cnn, images).argmax(1))
    plain = prepare(cnn, images, get_method("ecc"))
    balanced = prepare(cnn, images, method)
    assert plain.key != balanced.key  # a preparation is reused only by methods that share it
    assert balanced.lambdas["relu1"] == pytest.approx(plain.lambdas["relu1"])  # the layer's peak is kept


def test_balancing_needs_calibration_images():
    with pytest.raises(ConfigError, match="calibration images"):
        prepare(helpers.chain_cnn(), None, get_method("ecc", channel_balance=True, statistic="none"))
