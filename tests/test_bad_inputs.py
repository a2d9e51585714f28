"""Bad and hostile input: every case of tests/bad_inputs/make_corpus.py must end in one clear line
on stderr, exit status 2, no traceback, no output file (nor temporary file) left behind, and, for
hostile files, no sign that code stored in them ran.

The cases run in-process through ``spkeras.cli.main`` (fast); a few also run as real processes
(``python -m spkeras.cli``) to check what a user sees, warnings included. A last test kills an
evaluation midway and finds no partial result.
"""

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from spkeras import cli
from spkeras.demo import asset

from .bad_inputs.make_corpus import make_corpus
from .helpers import one_thread  # noqa: F401  (autouse fixture)

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    return folder, {case.name: case for case in make_corpus(folder)}


CASE_NAMES = [
    "truncated .keras", "random bytes .keras", "random bytes .h5", "random bytes .pt", "random bytes .onnx",
    "random bytes .snn", ".h5 without weights", "unknown suffix", "missing file", ".keras with Lambda",
    "pickled .pt running code", "legacy pickled .pth running code", "plain pickle .pt running code",
    "sigmoid hidden activation (Keras)", "tanh hidden activation (PyTorch)", "leaky ReLU hidden activation (Keras)",
    "dilated max pooling (PyTorch)", "unsupported layer (Keras)", "unsupported layer (PyTorch)", "NaN weights (Keras)",
    "inf weights (PyTorch)", "data shape mismatch", "empty data", "labels out of range", "calibration with λ = 0",
    "calibration data shape mismatch", ".snn metadata shape vs tensors", ".snn metadata names a missing tensor",
    ".snn to NIR, metadata vs tensors", "T = 0", "T < 0", "eta ≥ 1", "eta < 0", "unknown method", "negative kappa",
    "bits > 32", "--n 0", "--n more than the data", "bad --input-shape", "wrong --input-shape",
    "state dict without class", "--torch-class that does not import", "--torch-class on a Keras file",
    "output under a file", "NIR export of TRE as V(0)", "dilated max pooling (ONNX)", "NaN weights (ONNX)",
]


def has_option(command: str, option: str) -> bool:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return any(option in action.option_strings for action in sub._actions)


def assert_clean_failure(case, code, err):
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (case.name, code, err)
    assert len(lines) == 1, (case.name, err)
    assert lines[0].startswith("spkeras: error: "), (case.name, err)
    assert "Traceback" not in err, (case.name, err)
    assert re.search(case.pattern, lines[0]), (case.name, case.pattern, lines[0])
    for output in case.outputs:
        assert not Path(output).exists(), (case.name, output)
        assert not list(Path(output).parent.glob(f".{Path(output).name}.*")), (case.name, "temporary file left")
    if case.marker:
        assert not Path(case.marker).exists(), (case.name, "code stored in the file ran")


@pytest.mark.parametrize("name", CASE_NAMES)
def test_bad_input_ends_in_one_line_and_exit_2(corpus, name, capsys):
    folder, cases = corpus
    if name not in cases:
        pytest.skip("needs the onnx package")
    case = cases[name]
    if name == "bits > 32" and not has_option(case.argv[0], "--bits"):
        pytest.skip("no --bits option")
    capsys.readouterr()
    try:
        code = cli.main(case.argv)
    except SystemExit as exc:  # argparse
        code = exc.code
    out, err = capsys.readouterr()
    assert_clean_failure(case, code, err)


def test_corpus_has_every_case(corpus):
    _, cases = corpus
    missing = set(cases) - set(CASE_NAMES)
    assert not missing, f"cases not run by the tests: {sorted(missing)}"


def run_cli(*argv, **kwargs):
    env = {**os.environ, "SPKERAS_QUIET": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "spkeras.cli", *argv], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120, **kwargs)


@pytest.mark.parametrize("name", ["pickled .pt running code", ".keras with Lambda", "T = 0"])
def test_bad_input_in_a_real_process(corpus, name):
    _, cases = corpus
    case = cases[name]
    result = run_cli(*case.argv)
    assert_clean_failure(case, result.returncode, result.stderr)
    assert result.stdout == ""


def test_killed_evaluation_leaves_no_result(tmp_path):
    """Start a long evaluation, kill it once it simulates, and find neither result nor temporary file."""
    out = tmp_path / "out.json"
    env = {**os.environ, "SPKERAS_QUIET": "0", "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "spkeras.cli", "evaluate", asset("mnist_cnn.keras"), "--data", asset("mnist_test.npz"),
         "--calib", asset("mnist_calib.npz"), "--calib-n", "50", "--n", "10", "--timesteps", "200000",
         "--json", str(out), "--csv", str(tmp_path / "out.csv")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    started = threading.Event()

    def watch():
        seen = b""
        while chunk := os.read(process.stderr.fileno(), 4096):
            seen = (seen + chunk)[-4096:]
            if b"simulating" in seen:
                started.set()

    threading.Thread(target=watch, daemon=True).start()
    try:
        assert started.wait(90), "the evaluation never started simulating"
        time.sleep(0.5)
        assert process.poll() is None, "the evaluation ended before it was killed"
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == -signal.SIGKILL
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "partial result or temporary file left behind"
