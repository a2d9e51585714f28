"""Held-out sweep of one ecc+ switch (not a test): agreement with the CNN on CIFAR-10 training
images 9000–9499 of the calibration archive, which neither λ (images 0–1999) nor rate
calibration (images 0–127) sees. The rule is fixed before each run and stated in
docs/low-latency.md (for example: the value with the highest mean agreement at T = 32 and 64
becomes ecc+'s). One JSON line per (T, value).

    python benchmarks/heldout_sweep.py potential_share '[32, 64]' '[0, 0.25, 0.5, 0.75, 1.0]'
    python benchmarks/heldout_sweep.py readout_delay_fraction '[32, 64]' '[0.375, 0.5, 0.75, 0.875]'

Conversion goes through the one conversion path: λ is prepared once
(:func:`spkeras.methods.framework.prepare`), and ``network(T, method)`` runs every T-dependent
step the method asks for (Spike-Norm, rate and delay calibration included). A switch that acts
only at readout (``readout_delay_fraction``) reuses one converted network per T.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from spkeras import api
from spkeras.evaluation import checked_images, cnn_predictions
from spkeras.importers import load_model
from spkeras.methods import get_method
from spkeras.methods.framework import method_for, prepare
from spkeras.progress import set_quiet
from spkeras.simulate import simulate

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
HELD_OUT = slice(9000, 9500)
READOUT_ONLY = {"readout_delay_fraction"}


def main() -> None:
    set_quiet(True)
    switch, timesteps, values = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
    archive = np.load(SHARED / "data" / "cifar10_train_10k.npz")
    cnn = load_model(str(SHARED / "models" / "vgg16_cifar10.keras"))
    held = checked_images(api.as_dataset((archive["x"][HELD_OUT], archive["y"][HELD_OUT])), cnn)
    labels = torch.as_tensor(archive["y"][HELD_OUT]).long().flatten()
    calibration = checked_images(api.as_dataset((archive["x"][:2000], archive["y"][:2000])), cnn)
    prepared = prepare(cnn, calibration, get_method("ecc+"))
    cnn = cnn_predictions(prepared.reference, held, 100, "cpu")

    for steps in timesteps:
        shared_net = None
        for value in values:
            started = time.time()
            method = get_method("ecc+", **{switch: value})
            if switch in READOUT_ONLY:
                shared_net = shared_net or prepared.network(steps, method)
                net = shared_net
                net.method = method_for(method, steps)
            else:
                net = prepared.network(steps, method)
            converted_s = time.time() - started
            record = simulate(net, held, steps)
            final = record.predictions[-1]
            print(json.dumps({
                "T": steps, switch: value, "n": len(held),
                "agree": round(float((final == cnn).double().mean()) * 100, 1),
                "acc": round(float((final == labels).double().mean()) * 100, 1),
                "mops": round(float(record.synops[-1].sum()) / len(held) / 1e6, 1),
                "convert_s": round(converted_s), "sim_s": round(record.seconds),
            }), flush=True)


if __name__ == "__main__":
    main()
