"""The trained zoo (models/zoo, scripts/zoo.py) converts with no edits from PyTorch (state dict +
class), Keras (.keras) and ONNX (exported here from the PyTorch model): every import reproduces the
PyTorch model's logits, and every converted network's closed form at large T predicts what the
CNN predicts."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import zoo  # noqa: E402
from helpers import one_thread  # noqa: E402,F401  (autouse fixture)

from spkeras import api  # noqa: E402
from spkeras.closed_form import closed_form  # noqa: E402
from spkeras.ops import run_graph  # noqa: E402

NETS = {"vgg_maxpool": "VGGMaxPool", "resnet18": "ResNet18", "mobilenetv2": "MobileNetV2Small",
        "densenet": "DenseNetSmall", "resnet20": "ResNet20"}
FOLDER = ROOT / "models" / "zoo"


def trained(name: str) -> torch.nn.Module:
    module = getattr(zoo, NETS[name])()
    module.load_state_dict(torch.load(FOLDER / f"{name}.pt", weights_only=True))
    return module.eval()


def images(n: int = 6) -> torch.Tensor:
    """CIFAR-10 test images 0..n-1 where ../shared has them, else random images."""
    path = ROOT.parent / "shared" / "data" / "cifar10_test.npz"
    if path.exists():
        return torch.from_numpy(np.load(path)["x"][:n]).permute(0, 3, 1, 2).float() / 255
    return torch.rand((n, 3, 32, 32), generator=torch.Generator().manual_seed(7))


@pytest.fixture(scope="module", params=list(NETS))
def imported(request, tmp_path_factory):
    """(name, PyTorch model, {format: imported graph})."""
    name = request.param
    module = trained(name)
    onnx_path = tmp_path_factory.mktemp("zoo") / f"{name}.onnx"
    torch.onnx.export(module, (torch.zeros(1, 3, 32, 32),), str(onnx_path), dynamo=False,
                      input_names=["x"], output_names=["y"])
    graphs = {
        "pytorch": api.load_model(str(FOLDER / f"{name}.pt"), input_shape=(3, 32, 32), torch_class=f"zoo:{NETS[name]}"),
        "keras": api.load_model(str(FOLDER / f"{name}.keras")),
        "onnx": api.load_model(str(onnx_path)),
    }
    return name, module, graphs


def test_every_format_reproduces_the_pytorch_model(imported):
    name, module, graphs = imported
    x = images()
    with torch.no_grad():
        expected = module(x)
    assert float((expected[0] - expected[1:]).abs().max()) > 0.1  # the logits depend on the image
    for fmt, graph in graphs.items():
        assert torch.allclose(run_graph(graph, x), expected, atol=2e-4, rtol=1e-4), (name, fmt)


def test_every_format_converts_and_its_closed_form_gives_the_cnn_s_predictions(imported):
    name, module, graphs = imported
    x = images()
    with torch.no_grad():
        expected = module(x).argmax(1)
    ops = {}
    for fmt, graph in graphs.items():
        net = api.convert(graph, x, method="ecc", timesteps=100_000, readout="potential")
        ops[fmt] = sorted(n.op for n in net.graph.nodes)
        assert torch.equal(closed_form(net, x, [100_000]).predictions[0], expected), (name, fmt)
    assert ops["pytorch"] == ops["keras"] == ops["onnx"], name  # the same spiking network from every format
