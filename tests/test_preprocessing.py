"""Input preprocessing: the CNN accuracy spkeras reports equals the framework's own on the same
images prepared the way the model expects, and the preprocessing folds into the first layer."""

import numpy as np
import pytest
import torch

from spkeras import api
from tests.helpers import randomize_keras
from spkeras.errors import ConfigError
from spkeras.ops import run_graph
from spkeras.passes import canonicalise
from spkeras.preprocessing import InputPreprocessing

MEAN, STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)


def normalised_model(padding: int) -> torch.nn.Module:
    """A small torch CNN trained (here: random) on (x − mean)/std inputs."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 6, 3, padding=padding), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(6, 4))
    return model.eval()


def data(n=64):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8), rng.integers(0, 4, n)


@pytest.mark.parametrize("padding", [0, 1])
def test_reported_cnn_accuracy_equals_the_framework_on_normalised_images(padding):
    model = normalised_model(padding)
    x, y = data()
    normalised = (torch.from_numpy(x).permute(0, 3, 1, 2).double() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) \
        / torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        own = model.double()(normalised).argmax(1).numpy()
    model.float()
    result = api.evaluate(model, (x, y), calibration=x, method="rueckauer2017", timesteps=8, mode="count",
                          input_shape=(3, 8, 8), preprocessing={"mean": MEAN, "std": STD}, readout="potential")
    assert result.cnn_accuracy == pytest.approx(float((own == y).mean()))
    pixels = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255
    ignored = run_graph(api.load_model(model, input_shape=(3, 8, 8)), pixels).argmax(1).numpy()
    assert (ignored != own).any(), "the preprocessing changes no prediction: the test proves nothing"
    graph = api.load_model(model, input_shape=(3, 8, 8), preprocessing=InputPreprocessing(mean=MEAN, std=STD))
    # folded into the unpadded conv; kept (exactly) before the padded one, whose borders see zeros
    assert bool(canonicalise(graph).nodes_of("affine")) == (padding == 1)


def test_scale_mean_and_std_are_checked():
    graph = api.load_model(normalised_model(0), input_shape=(3, 8, 8))
    with pytest.raises(ConfigError, match="3 channels"):
        InputPreprocessing(mean=(0.5, 0.5)).apply(graph)
    with pytest.raises(ConfigError, match="positive"):
        InputPreprocessing(std=(0.0,))
    with pytest.raises(ConfigError, match="unknown preprocessing"):
        InputPreprocessing.of({"sd": 1})
    assert InputPreprocessing(scale=1.0).apply(graph) is graph


def test_keras_model_with_rescaling_fed_raw_pixels():
    """A Keras model that starts with Rescaling(1/255) expects 0-255 pixels: with input scale 255
    spkeras's CNN gives Keras's predictions on the raw images, and Rescaling folds away."""
    from spkeras.importers.keras import import_keras

    keras = import_keras()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Rescaling(1 / 255),
                              keras.layers.Conv2D(5, 3, activation="relu"), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(4)])
    randomize_keras(model, seed=1)
    x, y = data()
    own = np.asarray(keras.ops.convert_to_numpy(model(x.astype(np.float32)))).argmax(1)
    result = api.evaluate(model, (x, y), calibration=x, method="rueckauer2017", timesteps=8, mode="count",
                          preprocessing={"scale": 255}, readout="potential")
    assert result.cnn_accuracy == pytest.approx(float((own == y).mean()))
    graph = api.load_model(model, preprocessing={"scale": 255})
    assert not canonicalise(graph).nodes_of("affine")
    pixels = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255
    assert torch.equal(run_graph(graph, pixels).argmax(1), torch.from_numpy(own))
    assert not torch.equal(run_graph(api.load_model(model), pixels).argmax(1), torch.from_numpy(own))
