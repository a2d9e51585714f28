"""``spkeras reproduce``: the paper's Figures 3a–3e, 4 and 5 and Table 2, resumable.

Each figure lists the runs it needs: accuracy-vs-T *curves* (one method on one model) and
*spike-count* distributions. Runs are shared between figures and cached one JSON file each
under ``OUT/cache`` (written atomically, keyed by a hash of everything that determines the
result: model, data and calibration file contents, n, calib-n, seed, device and every switch of
the method). A rerun skips what is cached; an interrupted run loses only the run in progress.

A network that does not depend on T (:attr:`spkeras.method.Method.depends_on_timesteps`) is
simulated once, at the largest T any requested figure needs, and accuracy and MOps are read
after every t of that one run. Spread TRE (Eq. 9) adds η·V_thr/T per step, and the calibrations
simulate T steps, so such a network (ECC, ecc+) gets one conversion and one simulation per T.
The T-independent preparation (λ) is made once per model and preparation key and reused across
T and methods (:func:`spkeras.methods.framework.prepare`); simulations go through
:func:`spkeras.api.evaluate`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from . import api
from .version import __version__
from .atomic import write_json, write_text
from .errors import ConfigError
from .formatting import format_table
from .evaluation import MODES, checked_images, images_and_labels
from .methods import get_method
from .methods.framework import PreparedConversion, prepare
from .method import Method
from .ops import run_graph
from .plots import BarPanel, Panel, plot_bars, plot_panels
from .progress import progress_bar
from .simulate import NeuronCounts, RunOptions, simulate

CACHE_VERSION = 2  # raised whenever a conversion's result changes (2: threshold scaling no longer compounds)
T_LIST = (32, 64, 128, 256, 512, 1024)      # Figures 3c–3e and 4
FIG3A_T = 128
FIG3B_T = (128, 256)
FIG5_T = 64
BITS = (32, 10, 9, 8, 7)                     # Figure 4
FIG5_LAYERS = (4, 8, 12, 16)
NEAR_ZERO = 0.1                              # accuracy loss (points) counted as "near-zero" in Table 2
PAPER_TABLE2 = {"2017-SNN": 1024, "RMP-SNN(0.8)": 128, "RMP-SNN(0.9)": 256, "ECC-SNN": 128}
COMMON_COLUMNS = ["n", "mode", "device"]


@dataclass
class Settings:
    """What ``spkeras reproduce`` was asked for (the CLI's options)."""

    models: list[str]
    data: str
    calib: str
    out: str
    model_nobn: str | None = None
    n: int | None = None
    calib_n: int | None = api.DEFAULT_CALIB_N
    device: str = "cpu"
    seed: int = 0
    batch_size: int = 100
    timesteps: int | None = None            # the one T of fig3a (128) and fig5 (64)
    timesteps_list: list[int] | None = None  # the T axis of fig3b (128, 256) and the others (32 … 1024)
    bits_list: list[int] | None = None
    rounding: str | None = None
    layers: list[int] | None = None
    near_zero: float = NEAR_ZERO


@dataclass(frozen=True)
class Curve:
    """One method on one model, wanted at these T."""

    label: str
    model: str
    method: Method
    timesteps: tuple[int, ...]


@dataclass(frozen=True)
class Counts:
    """Per-neuron spike-count distribution of every spiking layer after T steps."""

    label: str
    model: str
    method: Method
    timesteps: int


@dataclass
class Output:
    """A figure's rows (CSV and JSON), plot, and the notes it states."""

    columns: list[str]
    rows: list[dict]
    plot: Callable[[Path], None]
    notes: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)


@dataclass
class Figure:
    name: str
    title: str
    paper: str
    curves: list[Curve]
    counts: list[Counts]
    render: Callable[["Runner", "Figure"], Output]


@dataclass
class Job:
    kind: str          # curve | counts
    model: str
    method: Method
    timesteps: int     # run length
    converted_for: int  # the T the network is made for
    key: dict
    digest: str


class Runner:
    """Plans, runs and caches the simulations behind the figures."""

    def __init__(self, settings: Settings):
        self.s = settings
        self.out = Path(settings.out)
        self.cache = self.out / "cache"
        self.stats = {"needed": 0, "from_cache": 0, "simulated": 0}
        self._hashes: dict[str, str] = {}
        self._graphs: dict[str, object] = {}
        self._prepared: dict[tuple, PreparedConversion] = {}
        self._calibration = None

    # ------------------------------------------------------------------ identities and keys
    def file_id(self, path: str) -> str:
        """SHA-256 of a file's contents (a folder: of its file names and contents)."""
        if path not in self._hashes:
            digest = hashlib.sha256()
            target = Path(path)
            files = sorted(p for p in target.rglob("*") if p.is_file()) if target.is_dir() else [target]
            if not files or not all(f.exists() for f in files):
                raise ConfigError(f"{path}: no such file")
            for file in files:
                digest.update(file.name.encode())
                with open(file, "rb") as handle:
                    for block in iter(lambda: handle.read(1 << 20), b""):
                        digest.update(block)
            self._hashes[path] = digest.hexdigest()
        return self._hashes[path]

    def job(self, kind: str, model: str, method: Method, timesteps: int) -> Job:
        depends = kind == "counts" or method.depends_on_timesteps
        key = {
            "version": CACHE_VERSION, "kind": kind, "model": self.file_id(model), "data": self.file_id(self.s.data),
            "calib": self.file_id(self.s.calib), "calib_n": self.s.calib_n, "n": self.s.n, "seed": self.s.seed,
            "device": self.s.device, "method": method.to_dict(), "converted_for": timesteps if depends else None,
        }
        if kind == "counts":
            key["timesteps"] = timesteps
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
        return Job(kind, model, method, timesteps, timesteps, key, digest)

    def entry(self, job: Job) -> dict | None:
        """The cached result of a job, if complete and long enough."""
        path = self.cache / f"{job.digest}.json"
        try:
            entry = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if entry.get("key") != job.key or entry.get("timesteps", 0) < job.timesteps:
            return None
        return entry

    # ------------------------------------------------------------------ running
    def execute(self, figures: list[Figure]) -> None:
        """Run every job the figures need that is not cached yet (runs without spread TRE merged
        into one run at the largest T asked of them)."""
        jobs: dict[str, Job] = {}
        for figure in figures:
            wanted = [self.job("curve", c.model, c.method, t) for c in figure.curves for t in c.timesteps]
            wanted += [self.job("counts", c.model, c.method, c.timesteps) for c in figure.counts]
            for job in wanted:
                if job.digest not in jobs or jobs[job.digest].timesteps < job.timesteps:
                    jobs[job.digest] = job
        todo = [job for job in jobs.values() if self.entry(job) is None]
        self.stats["needed"] += len(jobs)
        self.stats["from_cache"] += len(jobs) - len(todo)
        names = ", ".join(f.name for f in figures)
        for job in progress_bar(todo, desc=f"reproduce {names}", unit="run"):
            if self.entry(job) is not None:  # another process sharing OUT finished it meanwhile
                self.stats["from_cache"] += 1
                continue
            entry = self.run_curve(job) if job.kind == "curve" else self.run_counts(job)
            write_json(self.cache / f"{job.digest}.json", {"key": job.key, "timesteps": job.timesteps, **entry})
            self.stats["simulated"] += 1

    def graph(self, model: str):
        if model not in self._graphs:
            self._graphs[model] = api.load_model(model)
            if isinstance(self._graphs[model], api.SpikingNetwork):
                raise ConfigError(f"{model}: reproduce needs the CNN (.keras or .h5), not a converted .snn network")
        return self._graphs[model]

    def calibration(self, graph) -> torch.Tensor:
        if self._calibration is None:
            data = api.as_dataset(self.s.calib)
            self._calibration = data.at_most(self.s.calib_n)
        return checked_images(self._calibration, graph)

    def network(self, model: str, method: Method, timesteps: int):
        """The converted network; the T-independent preparation (λ) is made once per model and
        preparation key and reused across T and methods."""
        graph = self.graph(model)
        key = (model, json.dumps(method.preparation_key(), sort_keys=True))
        if key not in self._prepared:
            self._prepared[key] = prepare(graph, self.calibration(graph), method, batch_size=self.s.batch_size,
                                          device=api.check_device(self.s.device))
        return self._prepared[key].network(timesteps, method)

    def run_curve(self, job: Job) -> dict:
        net = self.network(job.model, job.method, job.converted_for)
        result = api.evaluate(net, self.s.data, timesteps=job.timesteps, n=self.s.n, device=self.s.device,
                              seed=self.s.seed, batch_size=self.s.batch_size)
        record = result.to_dict()
        record["model"] = job.model
        return {"result": record}

    def run_counts(self, job: Job) -> dict:
        """Spike-count histograms of every spiking layer (a :class:`NeuronCounts` recorder),
        and the counts an ideal rate code of the CNN's activations would give with this network's
        λ: floor(a·T/λ) clipped to [0, T]."""
        net = self.network(job.model, job.method, job.converted_for)
        steps = job.timesteps
        images, _ = images_and_labels(api.as_dataset(self.s.data, self.s.n), net.cnn)
        spikes = net.spike_nodes
        cnn_names = {node.name for node in net.cnn.nodes}
        sites = {node.name: node.name if node.name in cnn_names else node.inputs[0] for node in spikes}
        histogram = {node.name: torch.zeros(steps + 1, dtype=torch.int64) for node in spikes}
        expected = {node.name: torch.zeros(steps + 1, dtype=torch.int64) for node in spikes}
        cnn = net.to(self.s.device).cnn
        chunk = max(self.s.batch_size, 1)
        for start in range(0, images.shape[0], chunk):
            x = images[start : start + chunk]
            recorded = NeuronCounts([node.name for node in spikes])
            simulate(net, x, RunOptions(timesteps=steps, batch_size=self.s.batch_size, device=self.s.device,
                                        seed=self.s.seed), [recorded], image_ids=torch.arange(start, start + x.shape[0]))
            seen = {}

            def observe(node, value):
                if node.name in sites.values():
                    seen[node.name] = value

            with torch.no_grad():
                run_graph(cnn, x.to(self.s.device), observe=observe)
            for node in spikes:
                counts = recorded.totals[node.name].flatten().round().long().clamp(0, steps)
                histogram[node.name] += torch.bincount(counts, minlength=steps + 1)
                ideal = torch.floor(seen[sites[node.name]].double() / net.lambdas[node.name] * steps).clamp(0, steps)
                expected[node.name] += torch.bincount(ideal.flatten().long().cpu(), minlength=steps + 1)
        layers = [{"index": k, "name": node.name, "source": node.source or node.name, "lambda": net.lambdas[node.name],
                   "histogram": histogram[node.name].tolist(), "expected": expected[node.name].tolist()}
                  for k, node in enumerate(spikes, start=1)]
        return {"n": int(images.shape[0]), "device": self.s.device, "layers": layers}

    # ------------------------------------------------------------------ reading results
    def point(self, curve: Curve, t: int) -> dict:
        """Accuracy (%), loss (points) and MOps after t steps, and how they were obtained."""
        job = self.job("curve", curve.model, curve.method, t)
        entry = self.entry(job)
        if entry is None:
            raise ConfigError(f"internal: no result for {curve.label} at T={t}")
        result = entry["result"]
        cnn, snn = result["cnn_accuracy"] * 100, result["snn_accuracy"][t - 1] * 100
        run = (f"converted and simulated for T={t}" if curve.method.depends_on_timesteps
               else f"one simulation of {entry['timesteps']} steps, read after t={t}")
        return {"cnn_accuracy_pct": round(cnn, 6), "snn_accuracy_pct": round(snn, 6),
                "loss_points": round(cnn - snn, 6),
                "mops_per_image": result["synops"]["mops_per_image"][t - 1], "run": run,
                "n": result["n"], "mode": result["mode"], "device": result["device"]}

    def counts(self, spec: Counts) -> dict:
        return self.entry(self.job("counts", spec.model, spec.method, spec.timesteps))


# ---------------------------------------------------------------------- figure definitions

def stem(path: str) -> str:
    return Path(path).name


def curve_notes(curves: list[Curve]) -> list[str]:
    """The statement of how each series was simulated."""
    notes, seen = [], set()
    for c in curves:
        if c.label in seen:
            continue
        seen.add(c.label)
        if c.method.depends_on_timesteps:
            notes.append(f"{c.label}: the network depends on T (spread TRE, Eq. 9, or a calibration at T), so it "
                         f"is converted and simulated once per T")
        else:
            notes.append(f"{c.label}: the network does not depend on T; one simulation at the largest T, "
                         f"accuracy and MOps read after every t")
    return notes


def curve_rows(runner: Runner, curves: list[Curve], extra: Callable[[Curve], dict] | None = None) -> list[dict]:
    rows = []
    for c in curves:
        for t in c.timesteps:
            rows.append({"series": c.label, "method": c.method.name, "model": stem(c.model), "timesteps": t,
                         **(extra(c) if extra else {}), **runner.point(c, t)})
    return rows


CURVE_COLUMNS = ["series", "method", "model", "timesteps", "cnn_accuracy_pct", "snn_accuracy_pct", "loss_points",
                 "mops_per_image", "run"]


def series_of(rows: list[dict], x: str, y: str) -> dict[str, list[tuple[float, float]]]:
    out: dict[str, list] = {}
    for row in rows:
        out.setdefault(row["series"], []).append((row[x], row[y]))
    return out


def t_list(runner: Runner, default=T_LIST) -> tuple[int, ...]:
    return tuple(sorted(set(runner.s.timesteps_list or default)))


def standard_methods(model: str, timesteps: tuple[int, ...], names=("2017-SNN", "RMP-SNN(0.8)", "RMP-SNN(0.9)",
                                                                      "ECC-SNN")) -> list[Curve]:
    presets = {"2017-SNN": "rueckauer2017", "RMP-SNN(0.8)": "rmp0.8", "RMP-SNN(0.9)": "rmp0.9", "ECC-SNN": "ecc"}
    return [Curve(name, model, get_method(presets[name]), timesteps) for name in names]


def fig3a(runner: Runner) -> Figure:
    t = runner.s.timesteps or FIG3A_T
    variants = [("CN", get_method("ecc", tre="off", cmb=False)), ("CN+CMB", get_method("ecc", tre="off")),
                ("CN+CMB+TRE", get_method("ecc"))]
    curves = [Curve(label, model, method, (t,)) for model in runner.s.models for label, method in variants]

    def render(runner: Runner, figure: Figure) -> Output:
        rows = [{"variant": c.label, "model": stem(c.model), "timesteps": t, **runner.point(c, t)} for c in curves]
        means = {}
        for label, _ in variants:
            mine = [r for r in rows if r["variant"] == label]
            means[label] = round(sum(r["loss_points"] for r in mine) / len(mine), 6)
            if len(runner.s.models) > 1:
                rows.append({"variant": label, "model": "mean over models", "timesteps": t,
                             "loss_points": means[label], **{k: mine[0][k] for k in COMMON_COLUMNS}})
        single = [r for r in rows if r["model"] != "mean over models"]
        dots = {label: [r["loss_points"] for r in single if r["variant"] == label] for label, _ in variants}
        panel = BarPanel("accuracy loss, CNN − SNN (points)", means, dots if len(runner.s.models) > 1 else {},
                         title=f"T = {t}")
        columns = ["variant", "model", "timesteps", "cnn_accuracy_pct", "snn_accuracy_pct", "loss_points",
                   "mops_per_image", "run"]
        notes = ["CN: ecc with tre off and cmb off (BN folded without ε); CN+CMB: tre off; CN+CMB+TRE: the ecc preset",
                 *curve_notes(curves)]
        if len(runner.s.models) > 1:
            notes.append("bars: mean loss over the models given (the paper: epochs 281–283); dots: each model")
        return Output(columns, rows, lambda path: plot_bars([panel], path, figure.title), notes)

    return Figure("fig3a", "Ablation: accuracy loss of CN, CN+CMB, CN+CMB+TRE",
                  "Figure 3a: contribution of CN, CMB and TRE to the mean accuracy loss", curves, [], render)


def fig3b_timesteps(runner: Runner) -> tuple[int, ...]:
    """128 and 256, or those of them in --timesteps-list, else the list's two largest T."""
    if not runner.s.timesteps_list:
        return FIG3B_T
    listed = t_list(runner)
    return tuple(t for t in FIG3B_T if t in listed) or listed[-2:]


def fig3b(runner: Runner) -> Figure:
    ts = fig3b_timesteps(runner)
    checkpoints = [(k, c) for k, model in enumerate(runner.s.models, start=1)
                   for c in standard_methods(model, ts, ("ECC-SNN", "2017-SNN"))]
    curves = [c for _, c in checkpoints]

    def render(runner: Runner, figure: Figure) -> Output:
        rows = []
        for k, c in checkpoints:
            for t in ts:
                rows.append({"checkpoint": k, "model": stem(c.model), "series": f"{c.label}@{t}T",
                             "method": c.method.name, "timesteps": t, **runner.point(c, t)})
        series = {}
        for row in rows:
            series.setdefault(row["series"], []).append((row["checkpoint"], row["snn_accuracy_pct"]))
        cnn = [(row["checkpoint"], row["cnn_accuracy_pct"]) for row in rows if row["series"] == rows[0]["series"]]
        panel = Panel("training checkpoint (--model, in order)", "accuracy (%)", {**series, "CNN": cnn}, logx=None)
        columns = ["checkpoint", "model", "series", "method", "timesteps", "cnn_accuracy_pct", "snn_accuracy_pct",
                   "loss_points", "mops_per_image", "run"]
        return Output(columns, rows, lambda path: plot_panels([panel], path, figure.title), curve_notes(curves))

    return Figure("fig3b", "Accuracy over training checkpoints: ECC-SNN vs 2017-SNN",
                  "Figure 3b: accuracy w.r.t. training epochs (2017-SNN vs ECC-SNN, T = 128 and 256)", curves, [],
                  render)


def accuracy_mops_figure(name: str, title: str, paper: str, names: tuple[str, ...]) -> Callable[[Runner], Figure]:
    def make(runner: Runner) -> Figure:
        curves = standard_methods(runner.s.models[0], t_list(runner), names)

        def render(runner: Runner, figure: Figure) -> Output:
            rows = curve_rows(runner, curves)
            cnn = rows[0]["cnn_accuracy_pct"]
            panels = [Panel("timesteps T", "accuracy (%)", series_of(rows, "timesteps", "snn_accuracy_pct"),
                            references={"CNN": cnn}),
                      Panel("timesteps T", "synaptic operations per image (MOps)",
                            series_of(rows, "timesteps", "mops_per_image"))]
            return Output(CURVE_COLUMNS, rows, lambda path: plot_panels(panels, path, figure.title),
                          curve_notes(curves))

        return Figure(name, title, paper, curves, [], render)

    return make


fig3c = accuracy_mops_figure("fig3c", "Accuracy and MOps vs T: 2017-SNN, RMP-SNN(0.8/0.9), ECC-SNN",
                             "Figure 3c: accuracy and energy consumption w.r.t. timesteps",
                             ("2017-SNN", "RMP-SNN(0.8)", "RMP-SNN(0.9)", "ECC-SNN"))
fig3e = accuracy_mops_figure("fig3e", "Accuracy and MOps vs T: 2017-SNN vs ECC-SNN",
                             "Figure 3e: accuracy and energy consumption w.r.t. timesteps, 2017-SNN vs ECC-SNN",
                             ("2017-SNN", "ECC-SNN"))


def fig3d(runner: Runner) -> Figure:
    ts = t_list(runner)
    model = runner.s.models[0]
    curves = [Curve("ECC-SNN (BN)", model, get_method("ecc"), ts)]
    if runner.s.model_nobn:
        curves.append(Curve("ECC-SNN (no BN)", runner.s.model_nobn, get_method("ecc"), ts))
    curves.append(Curve("2017-SNN (BN)", model, get_method("rueckauer2017"), ts))

    def render(runner: Runner, figure: Figure) -> Output:
        rows = curve_rows(runner, curves)
        series = series_of(rows, "mops_per_image", "snn_accuracy_pct")
        labels = {c.label: [f"{t}T" for t in c.timesteps] for c in curves}
        references = {f"CNN ({r['model']})": r["cnn_accuracy_pct"] for r in rows}
        panel = Panel("synaptic operations per image (MOps)", "accuracy (%)", series, logx=10,
                      references=references, annotations=labels)
        notes = curve_notes(curves)
        if not runner.s.model_nobn:
            notes.append("no --model-nobn given: the ECC-SNN (no BN) series is absent")
        return Output(CURVE_COLUMNS, rows, lambda path: plot_panels([panel], path, figure.title), notes)

    return Figure("fig3d", "Accuracy vs MOps (and T): ECC-SNN with and without BN, 2017-SNN",
                  "Figure 3d: accuracy w.r.t. energy consumption (MOps and timesteps)", curves, [], render)


def fig4(runner: Runner) -> Figure:
    ts = t_list(runner)
    bits = list(dict.fromkeys(runner.s.bits_list or BITS))
    rounding = {"rounding": runner.s.rounding} if runner.s.rounding else {}
    curves = [Curve(f"{b}-bit", runner.s.models[0], get_method("ecc", bits=b, **rounding), ts) for b in bits]

    def render(runner: Runner, figure: Figure) -> Output:
        rows = curve_rows(runner, curves, lambda c: {"bits": c.method.bits})
        reference = {row["timesteps"]: row["snn_accuracy_pct"] for row in rows if row["bits"] == max(bits)}
        for row in rows:
            row["error_increment_points"] = round(reference[row["timesteps"]] - row["snn_accuracy_pct"], 6)
        panels = [Panel("timesteps T", "accuracy (%)", series_of(rows, "timesteps", "snn_accuracy_pct"),
                        references={"CNN": rows[0]["cnn_accuracy_pct"]}),
                  Panel("timesteps T", f"error increment over {max(bits)}-bit (points)",
                        series_of(rows, "timesteps", "error_increment_points"))]
        notes = [f"ECC with b-bit signed fixed-point weights and integer thresholds (rounding "
                 f"{curves[0].method.rounding}); error increment = accuracy of the {max(bits)}-bit network − "
                 f"accuracy of the b-bit network at the same T, in points", *curve_notes(curves)]
        columns = ["series", "bits", "method", "model", "timesteps", "cnn_accuracy_pct", "snn_accuracy_pct",
                   "error_increment_points", "loss_points", "mops_per_image", "run"]
        return Output(columns, rows, lambda path: plot_panels(panels, path, figure.title), notes)

    return Figure("fig4", "Accuracy and error increment vs T for b-bit weights (ECC-SNN)",
                  "Figure 4: accuracy and error increment w.r.t. timesteps for 32-, 10-, 9-, 8- and 7-bit weights",
                  curves, [], render)


def fig5(runner: Runner) -> Figure:
    t = runner.s.timesteps or FIG5_T
    model = runner.s.models[0]
    specs = [Counts("2017-SNN", model, get_method("rueckauer2017"), t),
             Counts("ECC-SNN η=1/2", model, get_method("ecc", eta=0.5), t),
             Counts("ECC-SNN η=2/3", model, get_method("ecc", eta=2 / 3), t)]

    def render(runner: Runner, figure: Figure) -> Output:
        entries = {spec.label: runner.counts(spec) for spec in specs}
        available = len(entries[specs[0].label]["layers"])
        wanted = list(runner.s.layers or FIG5_LAYERS)
        chosen = [k for k in wanted if 1 <= k <= available]
        if not chosen:
            raise ConfigError(f"--layers {','.join(map(str, wanted))}: the network has {available} spiking layers "
                              f"(numbered 1..{available})")
        notes = [f"spiking layers counted in topological order, average pools and the output included "
                 f"({available} in this network)",
                 "expectation: the counts an ideal rate code of the CNN's activation a would give, "
                 "floor(a·T/λ) clipped to [0, T], with ECC's λ (the maximum activation)",
                 "each series is one conversion and one simulation at this T"]
        if len(chosen) < len(wanted):
            notes.append(f"layers {sorted(set(wanted) - set(chosen))} do not exist and were skipped")
        rows, panels = [], []
        reference = entries["ECC-SNN η=1/2"]
        for k in chosen:
            series = {}
            for label, entry in [*entries.items(), ("expectation (CNN)", None)]:
                layer = (entry or reference)["layers"][k - 1]
                counts = layer["histogram"] if entry else layer["expected"]
                total = sum(counts)
                series[label] = [(c, v / total) for c, v in enumerate(counts)]
                mean = sum(c * v for c, v in enumerate(counts)) / total
                for c, v in enumerate(counts):
                    rows.append({"layer_index": k, "layer": layer["source"], "series": label, "timesteps": t,
                                 "spike_count": c, "fraction_of_neurons": v / total, "mean_spike_count": mean,
                                 "n": reference["n"], "mode": "simulate", "device": reference["device"]})
            nonzero = {label: [(c, f) for c, f in pts if f > 0] for label, pts in series.items()}
            panels.append(Panel("spike count", "fraction of neurons", nonzero, logx=None, logy=True, step=True,
                                title=f"spiking layer {k}: {reference['layers'][k - 1]['source']}"))
        columns = ["layer_index", "layer", "series", "timesteps", "spike_count", "fraction_of_neurons",
                   "mean_spike_count"]
        return Output(columns, rows, lambda path: plot_panels(panels, path, figure.title), notes,
                      {"layers": chosen, "available_layers": available})

    return Figure("fig5", f"Spike-count distribution at T={t}", "Figure 5: spike count on the 4th, 8th, 12th and 16th "
                  "layer with 64 timesteps", [], specs, render)


def table2(runner: Runner) -> Figure:
    ts = t_list(runner)
    curves = standard_methods(runner.s.models[0], ts)
    near = runner.s.near_zero

    def render(runner: Runner, figure: Figure) -> Output:
        rows = []
        for c in curves:
            points = {t: runner.point(c, t) for t in ts}
            reached = [t for t in ts if points[t]["loss_points"] <= near]
            latency = reached[0] if reached else None
            stays = [t for k, t in enumerate(ts) if all(points[u]["loss_points"] <= near for u in ts[k:])]
            at = points[latency] if latency else points[ts[-1]]
            rows.append({"series": c.label, "method": c.method.name, "near_zero_points": near,
                         "latency_timesteps": latency, "stays_near_zero_from": stays[0] if stays else None,
                         "paper_latency_timesteps": PAPER_TABLE2.get(c.label),
                         "cnn_accuracy_pct": at["cnn_accuracy_pct"], "snn_accuracy_pct": at["snn_accuracy_pct"],
                         "loss_points": at["loss_points"], "mops_per_image": at["mops_per_image"] if latency else None,
                         f"mops_per_image_at_T{ts[-1]}": points[ts[-1]]["mops_per_image"],
                         **{k: at[k] for k in COMMON_COLUMNS}})
        panels = [BarPanel("latency for near-zero loss (timesteps)",
                           {r["series"]: r["latency_timesteps"] for r in rows},
                           title=f"loss ≤ {near} points, T in {list(ts)}"),
                  BarPanel("MOps per image at that latency", {r["series"]: r["mops_per_image"] for r in rows})]
        notes = [f"near-zero accuracy loss: CNN − SNN ≤ {near} points (--near-zero), the first T of {list(ts)} "
                 f"where it holds; n/a: not reached. stays_near_zero_from: the first T from which it holds at every "
                 f"larger T of the list. With n images one image is {100 / rows[0]['n']:.3g} points",
                 "accuracy, loss and MOps are at that latency (or, if not reached, accuracy and loss at the largest T)",
                 "paper_latency_timesteps: Table 2 of the paper (VGG-16, CIFAR-10)", *curve_notes(curves)]
        columns = ["series", "method", "near_zero_points", "latency_timesteps", "stays_near_zero_from",
                   "paper_latency_timesteps", "cnn_accuracy_pct", "snn_accuracy_pct", "loss_points",
                   "mops_per_image", f"mops_per_image_at_T{ts[-1]}"]
        return Output(columns, rows, lambda path: plot_bars(panels, path, figure.title), notes,
                      {"near_zero_points": near})

    return Figure("table2", "Latency for near-zero accuracy loss and MOps there",
                  "Table 2: latency for near-zero accuracy loss and energy consumption", curves, [], render)


FIGURES: dict[str, Callable[[Runner], Figure]] = {
    "fig3a": fig3a, "fig3b": fig3b, "fig3c": fig3c, "fig3d": fig3d, "fig3e": fig3e, "fig4": fig4, "fig5": fig5,
    "table2": table2,
}



# ---------------------------------------------------------------------- output

def csv_text(columns: list[str], rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns + COMMON_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns + COMMON_COLUMNS})
    return buffer.getvalue()


def check(settings: Settings, names: list[str]) -> None:
    if not settings.models:
        raise ConfigError("reproduce needs at least one --model")
    for values, what, low in ((settings.timesteps_list, "--timesteps-list", 1), (settings.bits_list, "--bits-list", 2),
                              (settings.layers, "--layers", 1)):
        if values is not None and (not values or min(values) < low):
            raise ConfigError(f"{what} needs integers ≥ {low}, got {values}")
    if settings.bits_list and max(settings.bits_list) > 32:
        raise ConfigError(f"--bits-list: bits must be between 2 and 32, got {settings.bits_list}")
    if settings.timesteps is not None and settings.timesteps < 1:
        raise ConfigError(f"--timesteps must be ≥ 1, got {settings.timesteps}")
    api.check_device(settings.device)
    for name in names:
        if name not in FIGURES:
            raise ConfigError(f"unknown figure {name!r}; available: {', '.join(FIGURES)}, all")


def reproduce(figure: str, settings: Settings) -> dict[str, dict]:
    """Make ``figure`` (or ``all``): write OUT/FIGURE.csv, .json and .png; return each figure's JSON document."""
    names = list(FIGURES) if figure == "all" else [figure]
    check(settings, names)
    runner = Runner(settings)
    figures = [FIGURES[name](runner) for name in names]
    runner.execute(figures)
    documents = {}
    for fig in figures:
        output = fig.render(runner, fig)
        first = output.rows[0] if output.rows else {}
        document = {
            "figure": fig.name, "title": fig.title, "paper": fig.paper, "mode": "simulate",
            "mode_description": MODES["simulate"], "n": first.get("n"), "device": settings.device,
            "seed": settings.seed, "models": settings.models, "model_nobn": settings.model_nobn,
            "data": settings.data, "calib": settings.calib, "calib_n": settings.calib_n,
            "note": output.notes, "columns": output.columns + COMMON_COLUMNS, "rows": output.rows,
            "runs": dict(runner.stats), "spkeras_version": __version__, **output.extra,
        }
        folder = Path(settings.out)
        write_text(folder / f"{fig.name}.csv", csv_text(output.columns, output.rows))
        write_json(folder / f"{fig.name}.json", document)
        output.plot(folder / f"{fig.name}.png")
        documents[fig.name] = document
    return documents


def summary(documents: dict[str, dict], out: str) -> str:
    """A short text report: per figure, its rows as a table (fig5: mean spike counts)."""

    parts = []
    for name, doc in documents.items():
        columns = [c for c in doc["columns"] if c not in ("run", "mode", "device", "n")]
        rows = doc["rows"]
        if name == "fig5":
            columns = ["layer_index", "layer", "series", "mean_spike_count"]
            rows = [r for r in rows if r["spike_count"] == 0]
        table = format_table(columns, [["n/a" if r.get(c) is None else r[c] for c in columns] for r in rows])
        head = f"{name}: {doc['title']} | mode: {doc['mode']} | n={doc['n']} | device={doc['device']}"
        parts.append("\n".join([head, table, *[f"  note: {n}" for n in doc["note"]]]))
    runs = next(iter(documents.values()))["runs"]
    parts.append(f"runs: {runs['needed']} needed, {runs['from_cache']} from the cache, {runs['simulated']} simulated; "
                 f"wrote {', '.join(f'{n}.csv/.json/.png' for n in documents)} to {out}")
    return "\n\n".join(parts)
