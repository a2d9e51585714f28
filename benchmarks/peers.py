"""Peer simulators side by side with spkeras: same network, same weights, same images, same T.

The network is converted once by spkeras with the 2017-SNN preset and folded pools (99.9th
percentile weight normalisation, V_thr = 1, reset by subtraction, analog input): what the peers'
own converters produce. Its normalised weights are copied into plain torch layers, which each
installed peer simulates with its own integrate-and-fire neurons (at most one spike per step,
reset by subtraction). Tools are timed interleaved over rounds; medians are reported.

    pip install --no-deps sinabs spikingjelly && pip install loguru   # keeps the installed torch
    python -m venv tfvenv && tfvenv/bin/pip install tensorflow-cpu tf-keras snntoolbox   # SNN Toolbox apart
    python benchmarks/peers.py [--n 50] [--timesteps 32,64] [--rounds 3] [--snntoolbox-python tfvenv/bin/python]

SNN Toolbox runs in its own Python (TensorFlow) through benchmarks/snntoolbox_peer.py, which
rebuilds the same network in tf-keras and times only its INI simulator's run (parsing and
building excluded); the numpy-2 and JSON shims it needs are applied there, at run time.

A peer whose predictions agree with spkeras on fewer than 90 % of the images is marked
``"valid": false``: same network and dynamics should agree, so its setup is suspect. (sinabs'
``from_model`` runs a forward pass to infer shapes that leaves charge in every membrane; the
harness resets the states before simulating.)
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from spkeras import api
from spkeras.evaluation import checked_images
from spkeras.progress import set_quiet
from spkeras.simulate import simulate

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def torch_layers(net, neuron) -> nn.Sequential:
    """The spiking graph as torch layers (chain networks), ``neuron()`` at every spike node."""
    layers = []
    for node in net.graph.nodes[1:]:
        if node.op == "conv2d":
            top, bottom, left, right = node.attrs["padding"]
            assert top == bottom and left == right, "peers take symmetric padding only"
            weight = node.params["weight"]
            conv = nn.Conv2d(weight.shape[1], weight.shape[0], tuple(weight.shape[2:]),
                             stride=tuple(node.attrs["stride"]), padding=(top, left))
            conv.weight.data, conv.bias.data = weight.clone(), node.params["bias"].clone()
            layers.append(conv)
        elif node.op == "dense":
            weight = node.params["weight"]
            linear = nn.Linear(weight.shape[1], weight.shape[0])
            linear.weight.data, linear.bias.data = weight.clone(), node.params["bias"].clone()
            layers.append(linear)
        elif node.op == "avgpool":
            assert node.attrs.get("scale", 1.0) == 1.0
            layers.append(nn.AvgPool2d(tuple(node.attrs["kernel"]), tuple(node.attrs["stride"])))
        elif node.op == "flatten":
            layers.append(nn.Flatten())
        elif node.op == "spike":
            assert node.attrs["threshold"] == 1.0 and node.attrs["reset"] == "subtract"
            layers.append(neuron())
        else:
            raise ValueError(f"peers benchmark: unsupported node {node.op}")
    return nn.Sequential(*layers).eval()


def run_spkeras(net, images, timesteps):
    return simulate(net, images, timesteps, batch_size=images.shape[0]).predictions[-1]


def run_sinabs(net, images, timesteps):
    import sinabs
    import sinabs.activation as sa

    model = sinabs.from_model(torch_layers(net, nn.ReLU), input_shape=tuple(images.shape[1:]),
                              batch_size=images.shape[0], num_timesteps=timesteps, spike_threshold=1.0,
                              spike_fn=sa.SingleSpike, min_v_mem=None).spiking_model
    sinabs.reset_states(model)  # from_model's shape-probing pass leaves charge in the membranes
    n = images.shape[0]
    with torch.no_grad():
        frames = images.unsqueeze(1).expand(n, timesteps, *images.shape[1:]).reshape(n * timesteps, *images.shape[1:])
        out = model(frames).reshape(n, timesteps, -1)
    return out.sum(1).argmax(1)


def run_spikingjelly(net, images, timesteps):
    from spikingjelly.activation_based import functional, neuron

    model = torch_layers(net, lambda: neuron.IFNode(v_threshold=1.0, v_reset=None))  # v_reset None: subtract
    counts = 0
    with torch.no_grad():
        for _ in range(timesteps):
            counts = counts + model(images)
    functional.reset_net(model)
    return counts.argmax(1)


def run_spikingjelly_multistep(net, images, timesteps):
    """SpikingJelly's multi-step mode: every layer takes the whole (T, N, ...) sequence at once."""
    from spikingjelly.activation_based import functional, layer, neuron

    model = torch_layers(net, lambda: neuron.IFNode(v_threshold=1.0, v_reset=None, step_mode="m"))
    model = nn.Sequential(*[m if isinstance(m, neuron.IFNode) else layer.SeqToANNContainer(m) for m in model])
    with torch.no_grad():
        sequence = images.unsqueeze(0).expand(timesteps, *images.shape)
        counts = model(sequence).sum(0)
    functional.reset_net(model)
    return counts.argmax(1)


def export_network(net, images, timesteps, path) -> None:
    """The spiking network's layers as plain arrays (torch layout) for benchmarks/snntoolbox_peer.py."""
    arrays = {"images": images.numpy(), "labels": np.zeros(images.shape[0], dtype=np.int64),
              "timesteps": np.array(timesteps)}
    nodes, index = net.graph.nodes[1:], 0
    kinds = {"conv2d": "conv", "dense": "dense", "avgpool": "avgpool", "flatten": "flatten"}
    for position, node in enumerate(nodes):
        if node.op == "spike":
            continue
        assert node.op in kinds and node.attrs.get("scale", 1.0) == 1.0, f"unsupported node {node.op}"
        arrays[f"kind_{index}"] = kinds[node.op]
        arrays[f"relu_{index}"] = position + 1 < len(nodes) and nodes[position + 1].op == "spike"
        if node.op in ("conv2d", "dense"):
            arrays[f"weight_{index}"] = node.params["weight"].numpy()
            arrays[f"bias_{index}"] = node.params["bias"].numpy()
        if node.op in ("conv2d", "avgpool"):
            arrays[f"stride_{index}"] = np.array(node.attrs["stride"])
        if node.op == "conv2d":
            pads, kernel = set(node.attrs["padding"]), node.params["weight"].shape[2]
            assert pads in ({0}, {kernel // 2}) and node.attrs["stride"] == [1, 1], "SNN Toolbox peer: 'same' or 'valid'"
            arrays[f"padding_{index}"] = "valid" if pads == {0} else "same"
        if node.op == "avgpool":
            arrays[f"kernel_{index}"] = np.array(node.attrs["kernel"])
        index += 1
    arrays["layers"] = np.array(index)
    np.savez(path, **arrays)


def run_snntoolbox(net, images, timesteps, python):
    """SNN Toolbox in ``python`` (one with TensorFlow), timed inside: simulation only."""
    with tempfile.TemporaryDirectory() as work:
        export_network(net, images, timesteps, Path(work) / "network.npz")
        env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "CUDA_VISIBLE_DEVICES": ""}
        done = subprocess.run([python, str(Path(__file__).with_name("snntoolbox_peer.py")),
                               str(Path(work) / "network.npz"), str(Path(work) / "snntb")],
                              capture_output=True, text=True, env=env, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])  # the peer's last line
    return torch.tensor(result["predictions"]), result["wall_s"]


PEERS = {"spkeras": (None, run_spkeras), "sinabs": ("sinabs", run_sinabs),
         "spikingjelly-single-step": ("spikingjelly", run_spikingjelly),
         "spikingjelly-multi-step": ("spikingjelly", run_spikingjelly_multistep)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(SHARED / "models" / "vgg16_cifar10.keras"))
    parser.add_argument("--data", default=str(SHARED / "data" / "cifar10_test.npz"))
    parser.add_argument("--calib", default=str(SHARED / "data" / "cifar10_train_10k.npz"))
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--timesteps", default="32,64")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--snntoolbox-python", help="a Python with snntoolbox, tensorflow-cpu and tf-keras")
    args = parser.parse_args()
    set_quiet(True)
    tools = {k: v for k, v in PEERS.items() if v[0] is None or importlib.util.find_spec(v[0])}
    if args.snntoolbox_python:
        tools["snn-toolbox-ini"] = (None, functools.partial(run_snntoolbox, python=args.snntoolbox_python))
    dataset = api.as_dataset(args.data, args.n)
    labels = torch.from_numpy(dataset.y)
    for timesteps in [int(t) for t in args.timesteps.split(",")]:
        net = api.convert(args.model, args.calib, method="rueckauer2017", timesteps=timesteps, calib_n=500,
                          spiking_pools=False)
        images = checked_images(dataset, net.cnn)
        times = {name: [] for name in tools}
        predictions = {}
        for _ in range(args.rounds):
            for name, (_, run) in tools.items():
                start = time.perf_counter()
                result = run(net, images, timesteps)
                elapsed = time.perf_counter() - start
                if isinstance(result, tuple):  # the peer timed its own simulation
                    result, elapsed = result
                predictions[name] = result
                times[name].append(elapsed)
        for name in tools:
            agreement = float((predictions[name] == predictions["spkeras"]).double().mean())
            print(json.dumps({
                "tool": name, "T": timesteps, "images": args.n, "wall_s": round(statistics.median(times[name]), 3),
                "accuracy": float((predictions[name] == labels).double().mean()),
                "agreement_with_spkeras": agreement,
                "valid": agreement >= 0.9,  # the same network and dynamics must give nearly the same predictions
                "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            }), flush=True)


if __name__ == "__main__":
    main()
