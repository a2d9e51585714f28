"""Agreement with the CNN of every readout window S(T) − S(f·T) of one converted network, on the
calibration images the delay choice sees (0-255) and on held-out training images 9000-9299 (not a
test; never test images). One simulation per image set with the OutputScores recorder; prints one
line per fraction f: (agreement %, mean normalised margin of the CNN's class, mean centred cosine
similarity of the window's rates to the CNN logits) for both sets.

    python benchmarks/readout_windows.py vgg16 32,64 '{"per_step_rates": true}'
"""

import argparse
import json

import torch

from low_latency import MODELS, image_set  # benchmarks/low_latency.py: the networks and image sets
from spkeras.evaluation import cnn_predictions
from spkeras.methods import get_method
from spkeras.methods.framework import prepare
from spkeras.ops import run_graph
from spkeras.progress import set_quiet
from spkeras.simulate import OutputScores, RunOptions, simulate

FRACTIONS = (0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875)
HELD_OUT = 300


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
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("net", choices=sorted(MODELS))
    parser.add_argument("timesteps", help="comma-separated T, e.g. 32,64")
    parser.add_argument("switches", nargs="?", default="{}", help="ecc+ switches as JSON, e.g. '{\"per_step_rates\": true}'")
    args = parser.parse_args()
    set_quiet(True)
    name, timesteps = args.net, [int(t) for t in args.timesteps.split(",")]
    switches = json.loads(args.switches)
    cnn = MODELS[name]()
    held, _, calibration = image_set("heldout", HELD_OUT, cnn)
    prepared = prepare(cnn, calibration, get_method("ecc+", **switches))
    for steps in timesteps:
        net = prepared.network(steps)
        seen, held_out = window_scores(net, calibration[:256], steps), window_scores(net, held, steps)
        print(name, "T", steps, "chosen", net.method.readout_delay_fraction, flush=True)
        for fraction in FRACTIONS:
            print(fraction, seen[fraction], held_out[fraction], flush=True)


if __name__ == "__main__":
    main()
