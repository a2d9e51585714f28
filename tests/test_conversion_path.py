"""The one conversion path: calibrations by layer walk equal the full-simulation procedure they
replace (tests/reference_calibration.py) bit for bit, the walk's measurements equal those of a
simulation of the network cut after each layer, every caller converts through prepare(), every
Method switch has a CLI flag, and the package has no import circles."""

import ast
import dataclasses
from pathlib import Path

import pytest
import torch

from tests import helpers
from tests.helpers import one_thread  # noqa: F401  (autouse fixture)
from tests.reference_calibration import convert_by_full_runs, prefix
from spkeras import api, layerwise
from spkeras.cli import build_parser
from spkeras.demo import asset
from spkeras.evaluation import checked_images
from spkeras.layerwise import LayerWalk
from spkeras.method import Method
from spkeras.methods import get_method
from spkeras.methods.framework import build, convert, prepare
from spkeras.options import flag, method_overrides
from spkeras.simulate import MaxCurrent, NeuronCounts, OutputScores, RunOptions, simulate

PACKAGE = Path(__file__).resolve().parents[1] / "spkeras"


def assert_same_network(new, old):
    """Same graph, thresholds, biases, weights, initial potentials, λ and readout delay, bit for bit."""
    assert [n.name for n in new.graph.nodes] == [n.name for n in old.graph.nodes]
    for mine, theirs in zip(new.graph.nodes, old.graph.nodes):
        assert mine.attrs == theirs.attrs, mine.name
        assert mine.params.keys() == theirs.params.keys(), mine.name
        for key in mine.params:
            assert torch.equal(mine.params[key], theirs.params[key]), (mine.name, key)
    assert new.lambdas == old.lambdas
    assert new.method == old.method


def small_networks():
    chain = helpers.chain_cnn(dtype=torch.float64, seed=4)
    residual = helpers.residual_cnn(dtype=torch.float64, seed=5, branch=2)
    return {"chain": (chain, helpers.images(chain, 150, seed=6)),
            "residual": (residual, helpers.images(residual, 150, seed=7))}


NETWORKS = small_networks()
CALIBRATED = {
    "ecc+": {},
    "ecc+ without step bias": dict(step_bias=False),
    "ecc+ with per-step rate correction": dict(per_step_rates=True),
    "ecc+, 2 rounds, all bias, spiking pools": dict(rate_calibration=2, potential_share=0.0, spiking_pools=True),
    "ecc, rates, poisson input": dict(rate_calibration=1, rate_calibration_images=120, encoding="poisson"),
    "spikenorm": {},
    "spikenorm with rate calibration": dict(rate_calibration=1, rate_calibration_images=64),
}


@pytest.mark.parametrize("network", sorted(NETWORKS))
@pytest.mark.parametrize("label", sorted(CALIBRATED))
def test_layer_walk_gives_the_network_of_full_simulations_bit_for_bit(network, label):
    cnn, calibration = NETWORKS[network]
    name = label.split(",")[0].split(" ")[0]
    method = get_method(name, **CALIBRATED[label])
    new = convert(cnn, calibration, method, 16)
    old = convert_by_full_runs(cnn, calibration, method, 16)
    assert_same_network(new, old)
    if method.rate_calibration:   # the calibration did something
        assert any("initial_potential" in n.params for n in new.spike_nodes) or method.potential_share == 0


def test_layer_walk_on_the_demo_network_bit_for_bit():
    """Real conv layers (float32, two image batches of 100 and 28) and the delay choice."""
    graph = api.load_model(asset("mnist_cnn.keras"))
    calibration = checked_images(api.as_dataset(asset("mnist_calib.npz")), graph)
    for method in (get_method("ecc+"), get_method("ecc+", rate_calibration=2, readout="spikes"),
                   get_method("spikenorm", spikenorm_images=120, spikenorm_timesteps=24)):
        assert_same_network(convert(graph, calibration, method, 12), convert_by_full_runs(graph, calibration, method, 12))


def test_step_bias_and_first_rate_round_share_one_computation_of_each_current(monkeypatch):
    """The current store gives the network of a walk that recomputes every current, bit for bit,
    with fewer computations of the layers below; over its budget it recomputes."""
    graph = api.load_model(asset("mnist_cnn.keras"))
    calibration = checked_images(api.as_dataset(asset("mnist_calib.npz")), graph)
    method = get_method("ecc+", delay_calibration_images=0)
    computed = []
    original = LayerWalk._current

    def counting(self, *args, **kwargs):
        computed.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(LayerWalk, "_current", counting)
    stored = convert(graph, calibration, method, 12)
    with_store = len(computed)
    monkeypatch.setattr(layerwise.CurrentStore.__init__, "__defaults__", (0,))  # a budget of 0 bytes
    computed.clear()
    assert_same_network(stored, convert(graph, calibration, method, 12))
    assert with_store < len(computed)


@pytest.mark.parametrize("network", sorted(NETWORKS))
def test_walk_measures_each_layer_as_a_simulation_of_the_network_cut_after_it(network):
    cnn, images = NETWORKS[network]
    prepared = prepare(cnn, images, get_method("ecc", encoding="poisson"))
    net = build(prepared.graph, prepared.lambdas, prepared.method, 20, prepared.reference)
    options = RunOptions(timesteps=20, batch_size=64, chunk=6, seed=3)
    walk = LayerWalk(net, images, options)
    for node in net.spike_nodes:
        counts, peak = NeuronCounts([node.name]), MaxCurrent(node.name)
        walk.run(net, node.name, [counts, peak], keep=walk.needed(node.name))
        expected, expected_peak = NeuronCounts([node.name]), MaxCurrent(node.name)
        simulate(prefix(net, node.name), images, options, [expected, expected_peak])
        assert torch.equal(counts.totals[node.name], expected.totals[node.name]), node.name
        assert peak.value == expected_peak.value, node.name
        assert counts.totals[node.name].sum() > 0, node.name


@pytest.mark.parametrize("readout", ["spikes", "potential"])
def test_walk_reads_the_output_as_a_full_simulation_does(readout):
    cnn, images = NETWORKS["residual"]
    prepared = prepare(cnn, images, get_method("ecc", readout=readout))
    net = build(prepared.graph, prepared.lambdas, prepared.method, 20, prepared.reference)
    options = RunOptions(timesteps=20, batch_size=64, chunk=6)
    walk = LayerWalk(net, images, options)
    for node in net.spike_nodes[:-1]:
        walk.run(net, node.name, keep=walk.needed(node.name))
    walked, simulated = OutputScores(), OutputScores()
    walk.run(net, net.graph.output, [walked], readout=True)
    simulate(net, images, options, [simulated])
    assert torch.equal(walked.scores, simulated.scores)
    assert walked.scores[-1].abs().sum() > 0


def test_walk_refuses_a_layer_whose_inputs_are_not_kept():
    cnn, images = NETWORKS["chain"]
    prepared = prepare(cnn, images, get_method("ecc"))
    net = build(prepared.graph, prepared.lambdas, prepared.method, 8, prepared.reference)
    with pytest.raises(Exception, match="has not been kept"):
        LayerWalk(net, images, RunOptions(timesteps=8)).run(net, net.spike_nodes[1].name)


def test_one_preparation_serves_every_method_with_its_key_and_refuses_others():
    cnn, images = NETWORKS["chain"]
    prepared = prepare(cnn, images, get_method("ecc"))
    for method in (get_method("ecc", tre="initial"), get_method("ecc", cn=False, eta=0.3)):
        assert_same_network(prepared.network(16, method), convert(cnn, images, method, 16))
    with pytest.raises(Exception, match="needs its own preparation"):
        prepared.network(16, get_method("rueckauer2017"))


def test_method_knows_whether_it_depends_on_t():
    assert get_method("ecc").depends_on_timesteps            # spread TRE
    assert get_method("ecc+").depends_on_timesteps           # rate and delay calibration at T
    assert get_method("ecc", tre="initial", readout_delay_fraction=0.5).depends_on_timesteps
    assert not get_method("rueckauer2017").depends_on_timesteps
    assert not get_method("spikenorm").depends_on_timesteps  # its calibration runs its own T
    assert get_method("rueckauer2017", delay_calibration_images=64).depends_on_timesteps


def test_a_preset_with_only_delay_calibration_keeps_its_delay_through_reproduce(tmp_path):
    from spkeras.reproduce import Runner, Settings

    method = get_method("rueckauer2017", readout="potential", delay_calibration_images=200)
    assert not method.rate_calibration and method.statistic != "spikenorm" and method.tre != "spread"
    settings = Settings(models=[asset("mnist_cnn.keras")], data=asset("mnist_test.npz"), calib=asset("mnist_calib.npz"),
                        out=str(tmp_path), calib_n=300)
    runner = Runner(settings)
    direct = api.convert(asset("mnist_cnn.keras"), asset("mnist_calib.npz"), "rueckauer2017", 8, calib_n=300,
                         readout="potential", delay_calibration_images=200)
    assert direct.method.readout_delay > 0, "the chosen delay must be non-trivial for this test to mean anything"
    through_reproduce = runner.network(asset("mnist_cnn.keras"), method, 8)
    assert through_reproduce.method.readout_delay == direct.method.readout_delay
    assert through_reproduce.method.readout_delay_fraction == direct.method.readout_delay_fraction
    # and the network is made for the T it runs at, not simulated once at a larger T and read early
    assert runner.job("curve", asset("mnist_cnn.keras"), method, 8).key["converted_for"] == 8


def test_the_cli_offers_the_figures_reproduce_makes():
    from spkeras import figures, reproduce

    assert list(reproduce.FIGURES) == list(figures.FIGURES)


def test_every_method_switch_has_a_cli_flag_or_is_internal():
    parser = build_parser()
    evaluate = next(a for a in parser._subparsers._group_actions[0].choices.values() if a.prog.endswith("evaluate"))
    options = {o for action in evaluate._actions for o in action.option_strings}
    for field in dataclasses.fields(Method):
        assert field.metadata["help"], field.name
        if field.metadata["internal"]:
            continue
        assert flag(field) in options, f"Method.{field.name} has no CLI flag and is not marked internal"


def test_the_docs_table_of_switches_is_generated_from_the_method():
    from spkeras.options import switches_table

    table = (PACKAGE.parent / "docs" / "switches.md").read_text()
    assert table == switches_table(), "docs/switches.md is stale: run python -m spkeras.options > docs/switches.md"
    assert all(f"`{flag(field)}`" in table for field in Method.switches())


@pytest.mark.parametrize("field", Method.switches(), ids=lambda f: f.name)
def test_each_flag_sets_its_switch(field):
    value = field.metadata["choices"][-1] if field.metadata["choices"] else {
        bool: "off", int: "3", float: "0.25"}[type(field.default) if field.default is not None else int]
    if field.name in ("percentile", "threshold_scale", "kappa", "kappa0"):
        value = "0.5"
    args = build_parser().parse_args(["convert", "m.keras", "-o", "x.snn", flag(field), value])
    overrides = method_overrides(args)
    assert overrides[field.name] is not None and all(v is None for k, v in overrides.items() if k != field.name)


def module_name(path: Path) -> str:
    return ".".join(("spkeras", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The spkeras modules a file imports, at any depth (function-level imports included):
    ``from . import x`` is module x when x is a module, else the package."""
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            for alias in node.names:
                found.add(f"{module}.{alias.name}" if f"{module}.{alias.name}" in modules else module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found & modules


def module_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: imports_of(path, set(files)) - {name} for name, path in files.items()}


def test_no_import_circles():
    graph = module_graph()
    assert "spkeras.layerwise" in graph and "spkeras.simulate" in graph["spkeras.layerwise"]
    visiting, done = [], set()

    def visit(module):
        if module in done:
            return
        assert module not in visiting, "import circle: " + " → ".join(visiting[visiting.index(module):] + [module])
        visiting.append(module)
        for target in graph[module]:
            visit(target)
        visiting.pop()
        done.add(module)

    for module in graph:
        visit(module)


LOW_MODULES = ("version", "backend", "figures", "fixed_order", "data", "method", "errors", "ir", "ops", "encoding",
               "snn", "simulate", "layerwise", "closed_form", "metrics", "event_conv", "calibrate", "passes", "quantise", "progress", "atomic", "formatting")


def test_low_modules_do_not_climb_to_conversion_or_the_interfaces():
    graph = module_graph()
    high = ("spkeras.methods", "spkeras.api", "spkeras.cli", "spkeras.commands", "spkeras.reproduce", "spkeras.demo",
            "spkeras.options")
    for name in LOW_MODULES:
        climbing = sorted(m for m in graph[f"spkeras.{name}"] if m.startswith(high) or m == "spkeras")
        assert not climbing, f"spkeras.{name} imports {climbing}"
