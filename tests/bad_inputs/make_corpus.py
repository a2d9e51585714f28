"""Generate the bad- and hostile-input corpus that tests/test_bad_inputs.py feeds to the CLI.

``make_corpus(folder)`` writes every input file into ``folder`` and returns the cases: each is a
command line, the output files it names (which must not exist afterwards), a pattern its one-line
error must match, and, for hostile files, a marker file that the file's code would create if it
ever ran. Nothing is kept in git: the files are small and made in a second or two.

    python tests/bad_inputs/make_corpus.py OUT_FOLDER   # write the corpus and list the cases
"""

from __future__ import annotations

import json
import os
import pickle
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("KERAS_BACKEND", "torch")


@dataclass
class Case:
    name: str
    argv: list[str]
    pattern: str                                        # regex the single error line must match
    outputs: list[str] = field(default_factory=list)    # files the command names and must not leave
    marker: str | None = None                           # created only if the file's code ran


class _RunsCode:
    """Unpickling this object would run ``code`` (it reduces to exec)."""

    def __init__(self, code: str):
        self.code = code

    def __reduce__(self):
        return exec, (self.code,)


def _random_bytes(path: Path, size: int = 4096, seed: int = 0) -> str:
    path.write_bytes(np.random.default_rng(seed).bytes(size))
    return str(path)


def _keras_files(folder: Path, marker: Path) -> dict[str, str]:
    from spkeras.importers.keras import import_keras

    keras = import_keras()
    layers = keras.layers

    def save(name, stack, shape=(6, 6, 1)):
        model = keras.Sequential([keras.Input(shape), *stack], name=name.split(".")[0])
        path = folder / name
        model.save(path)
        return model, str(path)

    files = {}
    _, files["sigmoid"] = save("sigmoid.keras", [layers.Flatten(), layers.Dense(4, activation="sigmoid"),
                                                 layers.Dense(2)])
    _, files["leaky"] = save("leaky.keras", [layers.Conv2D(2, 3), layers.LeakyReLU(), layers.Flatten(),
                                                 layers.Dense(2)])
    _, files["transpose"] = save("transpose.keras", [layers.Conv2DTranspose(2, 3), layers.Flatten(), layers.Dense(2)])
    model, files["nan"] = save("nan.keras", [layers.Conv2D(2, 3), layers.ReLU(), layers.Flatten(), layers.Dense(2)])
    kernel = model.layers[0].kernel
    kernel.assign(np.where(np.arange(kernel.numpy().size).reshape(kernel.shape) == 3, np.nan, kernel.numpy()))
    model.save(files["nan"])

    code = f"open({str(marker)!r}, 'w').close()"
    lam = keras.Sequential([keras.Input((4,)), layers.Lambda(lambda x: (exec(code), x)[1], name="evil"),
                            layers.Dense(2)])
    lam.save(folder / "lambda.keras")
    files["lambda"] = str(folder / "lambda.keras")

    model, h5 = save("noweights.h5", [layers.Flatten(), layers.Dense(2)])
    import h5py

    with h5py.File(h5, "a") as handle:
        del handle["model_weights"]
    files["noweights"] = h5
    if marker.exists():  # building the Lambda model ran its function: that is not what is tested
        marker.unlink()
    return files


def _torch_files(folder: Path, marker: Path) -> dict[str, str]:
    import torch
    import torch.nn as nn

    files = {}
    code = f"open({str(marker)!r}, 'w').close()"
    torch.save({"weight": torch.zeros(2), "payload": _RunsCode(code)}, folder / "evil.pt")
    files["evil"] = str(folder / "evil.pt")
    torch.save(_RunsCode(code), folder / "evil_legacy.pth", _use_new_zipfile_serialization=False)
    files["evil_legacy"] = str(folder / "evil_legacy.pth")
    with open(folder / "evil_plain.pt", "wb") as handle:
        pickle.dump(_RunsCode(code), handle)
    files["evil_plain"] = str(folder / "evil_plain.pt")

    def script(name, module):
        torch.jit.script(module.eval()).save(str(folder / name))
        return str(folder / name)

    files["maxpool"] = script("maxpool.pt", nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2, dilation=2),
                                                         nn.Flatten(), nn.Linear(2, 2)))
    files["tanh"] = script("tanh.pt", nn.Sequential(nn.Flatten(), nn.Linear(36, 4), nn.Tanh(), nn.Linear(4, 2)))
    files["adaptive"] = script("adaptive.pt", nn.Sequential(nn.Conv2d(1, 2, 3), nn.Upsample(scale_factor=2),
                                                           nn.Flatten(), nn.Linear(128, 2)))
    inf = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(32, 2))
    with torch.no_grad():
        inf[3].weight[0, 0] = float("inf")
    files["inf"] = script("inf.pt", inf)
    negative = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(32, 2))
    with torch.no_grad():  # positive weights and a negative bias: all-zero images never activate the ReLU
        negative[0].weight.fill_(0.1)
        negative[0].bias.fill_(-1.0)
    files["dead"] = script("dead.pt", negative)
    torch.save(negative.state_dict(), folder / "weights.pt")
    files["weights"] = str(folder / "weights.pt")
    return files


def _onnx_files(folder: Path) -> dict[str, str]:
    try:
        import onnx
    except ImportError:
        return {}
    helper = onnx.helper
    files = {}

    def save(name, nodes, weights, out_shape):
        graph = helper.make_graph(
            nodes, name, [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 1, 6, 6])],
            [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, out_shape)],
            [onnx.numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()])
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(folder / name))
        return str(folder / name)

    w = np.full((2, 1, 3, 3), 0.1)
    files["maxpool"] = save("maxpool.onnx", [helper.make_node("Conv", ["x", "w"], ["c"]),
                                             helper.make_node("MaxPool", ["c"], ["y"], kernel_shape=[2, 2],
                                                              dilations=[2, 2])],
                            {"w": w}, [1, 2, 2, 2])
    w_nan = w.copy()
    w_nan[1, 0, 1, 1] = np.nan
    files["nan"] = save("nan.onnx", [helper.make_node("Conv", ["x", "w"], ["y"])], {"w": w_nan}, [1, 2, 4, 4])
    return files


def _npz(folder: Path, name: str, x, y) -> str:
    np.savez(folder / name, x=x, y=y)
    return str(folder / name)


def _snn_files(folder: Path, model: str, calib: str) -> dict[str, str]:
    """A valid demo .snn, and two whose metadata disagrees with their tensors."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    import spkeras

    good = folder / "demo.snn"
    spkeras.save_snn(spkeras.convert(model, calib, timesteps=16, calib_n=20), good)
    with safe_open(str(good), framework="pt") as handle:
        meta = json.loads(handle.metadata()["spkeras"])
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    files = {"good": str(good)}

    shape = json.loads(json.dumps(meta))
    conv = next(n for n in shape["snn"]["nodes"] if n["op"] == "conv2d")
    conv["shape"][0] += 5  # metadata: more channels than the weight has
    save_file(tensors, folder / "shape.snn", metadata={"spkeras": json.dumps(shape)})
    files["shape"] = str(folder / "shape.snn")

    missing = dict(tensors)
    del missing[next(k for k in missing if k.startswith("snn/") and k.endswith("/weight"))]
    save_file(missing, folder / "missing.snn", metadata={"spkeras": json.dumps(meta)})
    files["missing"] = str(folder / "missing.snn")
    return files


def make_corpus(folder) -> list[Case]:
    """Write the corpus into ``folder`` and return its cases."""
    from spkeras.demo import asset

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / "out"
    out.mkdir(exist_ok=True)
    model, test, calib = asset("mnist_cnn.keras"), asset("mnist_test.npz"), asset("mnist_calib.npz")
    marker = folder / "CODE_RAN"
    json_out, snn_out, nir_out = str(out / "result.json"), str(out / "net.snn"), str(out / "net.nir")

    truncated = folder / "truncated.keras"
    truncated.write_bytes(Path(model).read_bytes()[: os.path.getsize(model) // 2])
    rand = {s: _random_bytes(folder / f"random{s}") for s in (".keras", ".h5", ".pt", ".onnx", ".snn")}
    keras_files = _keras_files(folder, marker)
    torch_files = _torch_files(folder, marker)
    onnx_files = _onnx_files(folder)
    snn = _snn_files(folder, model, calib)
    rng = np.random.default_rng(0)
    wrong_shape = _npz(folder, "wrong_shape.npz", rng.integers(0, 255, (5, 32, 32, 3), dtype=np.uint8),
                       np.zeros(5, np.uint8))
    empty = _npz(folder, "empty.npz", np.zeros((0, 28, 28, 1), np.uint8), np.zeros(0, np.uint8))
    labels = _npz(folder, "bad_labels.npz", rng.integers(0, 255, (5, 28, 28, 1), dtype=np.uint8),
                  np.array([0, 1, 12, 3, 4], np.uint8))
    zeros = _npz(folder, "zeros.npz", np.zeros((10, 6, 6, 1), np.uint8), np.zeros(10, np.uint8))
    (folder / "model.txt").write_text("not a model")
    blocker = folder / "a_file"
    blocker.write_text("a file, not a folder")

    info = lambda path, *extra: ["info", path, "--json", json_out, *extra]  # noqa: E731
    convert = lambda path, *extra: ["convert", path, "--calib", calib, "--calib-n", "20", "-o", snn_out,  # noqa: E731
                                    "--quiet", *extra]
    evaluate = lambda path, data, *extra: ["evaluate", path, "--data", data, "--timesteps", "8", "--json",  # noqa: E731
                                           json_out, "--quiet", *extra]
    shape = ["--input-shape", "1,6,6"]
    cases = [
        # broken and foreign files
        Case("truncated .keras", info(str(truncated)), r"truncated or corrupt|cannot load Keras", [json_out]),
        Case("random bytes .keras", info(rand[".keras"]), r"not a \.keras zip archive", [json_out]),
        Case("random bytes .h5", info(rand[".h5"]), r"not an HDF5 file", [json_out]),
        Case("random bytes .pt", info(rand[".pt"], *shape), r"cannot load PyTorch file", [json_out]),
        Case("random bytes .onnx", info(rand[".onnx"]), r"ONNX", [json_out]),
        Case("random bytes .snn", evaluate(rand[".snn"], test), r"not a readable spkeras \.snn file", [json_out]),
        Case(".h5 without weights", info(keras_files["noweights"]), r"noweights\.h5", [json_out]),
        Case("unknown suffix", info(str(folder / "model.txt")), r"unsupported model file", [json_out]),
        Case("missing file", info(str(folder / "nothing.keras")), r"does not exist", [json_out]),
        # hostile files: their code must never run
        Case(".keras with Lambda", info(keras_files["lambda"]), r"Python code|Lambda", [json_out], str(marker)),
        Case("pickled .pt running code", info(torch_files["evil"], *shape), r"refused to unpickle", [json_out],
             str(marker)),
        Case("legacy pickled .pth running code", info(torch_files["evil_legacy"], *shape), r"refused to unpickle",
             [json_out], str(marker)),
        Case("plain pickle .pt running code", convert(torch_files["evil_plain"], *shape),
             r"refused to unpickle|cannot load PyTorch", [snn_out], str(marker)),
        # unsupported layers, with what is supported
        Case("sigmoid hidden activation (Keras)", info(keras_files["sigmoid"]), r"sigmoid.*ReLU", [json_out]),
        Case("tanh hidden activation (PyTorch)", info(torch_files["tanh"], *shape), r"Tanh.*ReLU", [json_out]),
        Case("leaky ReLU hidden activation (Keras)", info(keras_files["leaky"]), r"LeakyReLU.*negative.*ReLU",
             [json_out]),
        Case("dilated max pooling (PyTorch)", info(torch_files["maxpool"], *shape), r"MaxPool2d.*dilation", [json_out]),
        Case("unsupported layer (Keras)", info(keras_files["transpose"]), r"Conv2DTranspose.*supported layers are",
             [json_out]),
        Case("unsupported layer (PyTorch)", info(torch_files["adaptive"], *shape),
             r"Upsample.*supported are", [json_out]),
        # NaN and infinite weights
        Case("NaN weights (Keras)", convert(keras_files["nan"]), r"NaN or infinite", [snn_out]),
        Case("inf weights (PyTorch)", convert(torch_files["inf"], *shape), r"NaN or infinite", [snn_out]),
        # data that does not fit
        Case("data shape mismatch", evaluate(snn["good"], wrong_shape), r"images have shape .* expects", [json_out]),
        Case("empty data", evaluate(snn["good"], empty), r"no images", [json_out]),
        Case("labels out of range", evaluate(snn["good"], labels), r"labels run from 0 to 12", [json_out]),
        Case("calibration with λ = 0", convert(torch_files["dead"], *shape, "--calib", zeros, "--calib-n", "10"),
             r"λ = 0", [snn_out]),
        Case("calibration data shape mismatch", convert(model, "--calib", wrong_shape), r"expects", [snn_out]),
        # .snn files whose metadata disagrees with their tensors
        Case(".snn metadata shape vs tensors", evaluate(snn["shape"], test), r"metadata says", [json_out]),
        Case(".snn metadata names a missing tensor", evaluate(snn["missing"], test), r"file lacks it", [json_out]),
        Case(".snn to NIR, metadata vs tensors", ["export", snn["shape"], "--nir", nir_out], r"metadata says",
             [nir_out]),
        # nonsense options
        Case("T = 0", evaluate(snn["good"], test, "--timesteps", "0"), r"--timesteps.*positive", [json_out]),
        Case("T < 0", convert(model, "--timesteps", "-4"), r"--timesteps.*positive", [snn_out]),
        Case("eta ≥ 1", convert(model, "--eta", "1.5"), r"eta must be in \[0, 1\)", [snn_out]),
        Case("eta < 0", convert(model, "--eta", "-0.1"), r"eta must be in \[0, 1\)", [snn_out]),
        Case("unknown method", convert(model, "--method", "magic"), r"invalid choice: 'magic'", [snn_out]),
        Case("negative kappa", convert(model, "--kappa", "-3"), r"kappa must be positive", [snn_out]),
        Case("bits > 32", convert(model, "--bits", "40"), r"bits", [snn_out]),
        Case("--n 0", evaluate(snn["good"], test, "--n", "0"), r"--n.*positive", [json_out]),
        Case("--n more than the data", evaluate(snn["good"], test, "--n", "100000"), r"holds only", [json_out]),
        Case("bad --input-shape", info(torch_files["tanh"], "--input-shape", "1,0,6"), r"--input-shape", [json_out]),
        Case("wrong --input-shape", info(torch_files["tanh"], "--input-shape", "1,5,5"), r"fails", [json_out]),
        Case("state dict without class", info(torch_files["weights"], *shape), r"--torch-class", [json_out]),
        Case("--torch-class that does not import", info(torch_files["weights"], *shape, "--torch-class",
                                                        "no_such_module_xyz:Net"), r"no_such_module_xyz", [json_out]),
        Case("--torch-class on a Keras file", info(model, "--torch-class", "a:B"), r"--torch-class applies",
             [json_out]),
        Case("output under a file", ["info", model, "--json", str(blocker / "x.json")], r"a_file", []),
        Case("NIR export of TRE as V(0)", ["export", model, "--calib", calib, "--calib-n", "20", "--tre", "initial",
                                           "--nir", nir_out, "--quiet"], r"initial membrane potential", [nir_out]),
    ]
    if onnx_files:
        cases += [
            Case("dilated max pooling (ONNX)", info(onnx_files["maxpool"]), r"MaxPool.*dilations", [json_out]),
            Case("NaN weights (ONNX)", info(onnx_files["nan"]), r"NaN or infinite", [json_out]),
        ]
    return cases


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/bad_inputs/make_corpus.py OUT_FOLDER")
    for case in make_corpus(sys.argv[1]):
        print(f"{case.name}: spkeras {' '.join(case.argv)}")
