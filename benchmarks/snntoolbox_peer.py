"""SNN Toolbox's INI simulator on a network exported by benchmarks/peers.py (run it under a Python
that has snntoolbox, tensorflow-cpu and tf-keras; it never imports torch or spkeras).

    TF_USE_LEGACY_KERAS=1 python benchmarks/snntoolbox_peer.py NETWORK.npz WORKDIR

NETWORK.npz holds the layers (``kind_<i>``: conv, avgpool, flatten, dense; weights in torch
layout, channels first), the images (N, C, H, W) in [0, 1], the labels and T. The network is
rebuilt in tf-keras (channels last, dense weights permuted to follow Keras' flatten order),
parsed by SNN Toolbox without its own normalisation (the weights come normalised: V_thr = 1),
and simulated with constant-current input and reset by subtraction. Prints one JSON line: the
simulation's wall time (parsing and building excluded) and the predictions after T steps.
"""

import configparser
import json
import os
import sys
import time

import numpy as np

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
np.product = np.prod  # numpy 2 removed np.product, which SNN Toolbox 0.6 still calls

import tf_keras as keras  # noqa: E402


def _float_json(value):
    """json.dump default for the float32 scale factors SNN Toolbox writes."""
    return float(value)


def build_model(network: dict) -> keras.Model:
    c, h, w = network["images"].shape[1:]
    x = inputs = keras.Input((h, w, c))
    flattened = None  # (C, H, W) of the tensor before Flatten
    for i in range(int(network["layers"])):
        kind, activation = str(network[f"kind_{i}"]), ("relu" if bool(network[f"relu_{i}"]) else None)
        if kind == "conv":
            weight, bias = network[f"weight_{i}"], network[f"bias_{i}"]
            layer = keras.layers.Conv2D(weight.shape[0], weight.shape[2:], strides=tuple(network[f"stride_{i}"]),
                                        padding=str(network[f"padding_{i}"]), activation=activation)
            x = layer(x)
            layer.set_weights([weight.transpose(2, 3, 1, 0), bias])
        elif kind == "avgpool":
            x = keras.layers.AveragePooling2D(tuple(network[f"kernel_{i}"]), tuple(network[f"stride_{i}"]))(x)
        elif kind == "flatten":
            fh, fw, fc = x.shape[1:]
            flattened = (fc, fh, fw)
            x = keras.layers.Flatten()(x)
        elif kind == "dense":
            weight, bias = network[f"weight_{i}"], network[f"bias_{i}"]
            if flattened is not None:  # columns in (C, H, W) order → Keras' (H, W, C) flatten order
                weight = weight.reshape(-1, *flattened).transpose(0, 2, 3, 1).reshape(weight.shape[0], -1)
                flattened = None
            layer = keras.layers.Dense(weight.shape[0], activation=activation)
            x = layer(x)
            layer.set_weights([weight.T, bias])
        else:
            raise ValueError(f"unsupported layer {kind}")
    return keras.Model(inputs, x)


def main() -> None:
    network = dict(np.load(sys.argv[1]))
    work = sys.argv[2]
    os.makedirs(work, exist_ok=True)
    timesteps = int(network["timesteps"])
    images = network["images"].transpose(0, 2, 3, 1).astype(np.float32)
    labels = network["labels"].astype(int)
    n = images.shape[0]
    model = build_model(network)
    model.compile("sgd", "categorical_crossentropy", metrics=["accuracy"])  # SNN Toolbox reloads it compiled
    model.save(os.path.join(work, "ann.h5"))
    np.savez_compressed(os.path.join(work, "x_test.npz"), images)
    np.savez_compressed(os.path.join(work, "y_test.npz"), np.eye(10, dtype=np.float32)[labels])
    np.savez_compressed(os.path.join(work, "x_norm.npz"), images[:1])

    config = configparser.ConfigParser()
    config["paths"] = {"path_wd": work, "dataset_path": work, "filename_ann": "ann"}
    config["tools"] = {"evaluate_ann": "False", "normalize": "False"}
    config["simulation"] = {"simulator": "INI", "duration": str(timesteps), "num_to_test": str(n),
                            "batch_size": str(n), "keras_backend": "tensorflow"}
    config["input"] = {"poisson_input": "False"}
    config["cell"] = {"reset": "Reset by subtraction", "v_thresh": "1"}
    config["output"] = {"verbose": "0"}
    path = os.path.join(work, "config")
    with open(path, "w") as f:
        config.write(f)

    dump = json.dump
    json.dump = lambda obj, fp, **kw: dump(obj, fp, default=_float_json, **kw)  # float32 scale factors
    from importlib import import_module

    from snntoolbox.bin.utils import import_target_sim, update_setup
    from snntoolbox.datasets.utils import get_dataset

    config = update_setup(path)
    snn = import_target_sim(config).SNN(config)
    _, testset = get_dataset(config)
    model_lib = import_module("snntoolbox.parsing.model_libs.keras_input_lib")
    parser = model_lib.ModelParser(model_lib.load(work, "ann")["model"], config)
    parser.parse()
    snn.build(parser.build_parsed_model(), **testset)
    snn.init_log_vars()
    snn.init_cells()
    start = time.perf_counter()
    output = snn.simulate(x_b_l=testset["x_test"], truth_b=labels)
    wall = time.perf_counter() - start
    predictions = np.argmax(output, 1)[:, -1]
    print("\n" + json.dumps({"wall_s": wall, "predictions": predictions.tolist()}))  # after its progress line


if __name__ == "__main__":
    main()
