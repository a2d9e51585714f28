"""Agreement with the CNN of every readout window S(T) − S(f·T) of one converted network, on the
calibration images the delay choice sees (0-255) and on held-out training images 9000-9299 (not a
test; never test images). One simulation per image set with the OutputScores recorder; prints one
line per fraction f: (agreement %, mean normalised margin of the CNN's class, mean centred cosine
similarity of the window's rates to the CNN logits) for both sets.

    python benchmarks/readout_windows.py vgg16 32,64 '{"per_step_rates": true}'
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch

from spkeras import api
from spkeras.evaluation import checked_images, cnn_predictions
from spkeras.methods import get_method
from spkeras.methods.framework import prepare
from spkeras.ops import run_graph
from spkeras.progress import set_quiet
from spkeras.simulate import OutputScores, RunOptions, simulate

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FRACTIONS = (0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875)


def load(name: str):
    if name == "vgg16":
        return api.load_model(str(SHARED / "models" / "vgg16_cifar10.keras"))
    sys.path.insert(0, str(ROOT / "scripts"))
    return api.load_model(str(ROOT / "models" / "zoo" / "resnet20.pt"), input_shape=(3, 32, 32),
                          torch_class="zoo:ResNet20")


def window_scores(net, images, steps: int) -> dict:
    recorder = OutputScores()
    simulate(net, images, RunOptions(timesteps=steps), [recorder])
    scores, cnn = recorder.scores, cnn_predictions(net.cnn, images, 100, "cpu")
    logits = run_graph(net.cnn, images)
    rows = {}
    for fraction in FRACTIONS:
        delay = int(fraction * steps)
        rates = ((scores[-1] - scores[delay - 1]) if delay else scores[-1]) / (steps - delay)
        top2 = rates.topk(2, dim=-1).values
        own = rates.gather(1, cnn.view(-1, 1)).squeeze(1)
        rival = torch.where(rates.argmax(-1) == cnn, top2[:, 1], top2[:, 0])
        margin = float(((own - rival) / (rates.std(-1) + 1e-9)).clamp(-3, 3).mean())
        cosine = float(torch.nn.functional.cosine_similarity(rates - rates.mean(-1, keepdim=True),
                                                             logits - logits.mean(-1, keepdim=True), dim=-1).mean())
        rows[fraction] = (round(100 * float((rates.argmax(-1) == cnn).double().mean()), 1), round(margin, 3),
                          round(cosine, 4))
    return rows


def main() -> None:
    set_quiet(True)
    name, timesteps = sys.argv[1], [int(t) for t in sys.argv[2].split(",")]
    switches = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    cnn = load(name)
    train = np.load(SHARED / "data" / "cifar10_train_10k.npz")
    calibration = checked_images(api.as_dataset((train["x"][:2000], train["y"][:2000])), cnn)
    held = checked_images(api.as_dataset((train["x"][9000:9300], train["y"][9000:9300])), cnn)
    prepared = prepare(cnn, calibration, get_method("ecc+", **switches))
    for steps in timesteps:
        net = prepared.network(steps)
        seen, held_out = window_scores(net, calibration[:256], steps), window_scores(net, held, steps)
        print(name, "T", steps, "chosen", net.method.readout_delay_fraction, flush=True)
        for fraction in FRACTIONS:
            print(fraction, seen[fraction], held_out[fraction], flush=True)


if __name__ == "__main__":
    main()
