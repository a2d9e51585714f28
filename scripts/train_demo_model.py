#!/usr/bin/env python3
"""Train the small MNIST CNN that ships as spkeras' built-in demo model.

Writes, into ``spkeras/demo/`` (``--out``):

* ``mnist_cnn.keras``  -- the trained model (native Keras 3 format);
* ``mnist_test.npz``   -- the first 500 MNIST test images (``x`` uint8 NHWC,
  ``y`` uint8, ``classes``);
* ``mnist_calib.npz``  -- the first 500 MNIST training images, same format,
  for calibration (e.g. lambda / max-activation statistics);
* ``README.md``        -- provenance of the files above.

The architecture deliberately mixes the three ways Keras expresses ReLU
(``Activation('relu')``, ``activation='relu'`` on a layer, ``ReLU()``), a
stride-2 'same' convolution and BatchNormalization after both a convolution
and a dense layer, so that the demo exercises the converter's import paths.

Deterministic for a given ``--seed`` (CPU, torch backend).

Usage::

    python scripts/train_demo_model.py [--seed 0] [--epochs 3]
"""

import argparse
import os
import time

os.environ["KERAS_BACKEND"] = "torch"

import numpy as np  # noqa: E402
import keras  # noqa: E402
from keras import layers  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
N_SHIP = 500


def load_npz(path):
    d = np.load(path, allow_pickle=False)
    x = d["x"]
    y = d["y"]
    classes = d["classes"] if "classes" in d.files else np.array([str(i) for i in range(10)])
    assert x.dtype == np.uint8 and x.ndim == 4 and x.shape[1:] == (28, 28, 1), (x.dtype, x.shape)
    return x, y.astype(np.uint8), classes


def build_model():
    return keras.Sequential(
        [
            keras.Input(shape=(28, 28, 1)),
            layers.Conv2D(8, 3, padding="same", use_bias=True),
            layers.BatchNormalization(),
            layers.Activation("relu"),
            layers.AveragePooling2D(2),
            layers.Conv2D(16, 3, padding="same", activation="relu"),
            layers.AveragePooling2D(2),
            layers.Conv2D(16, 3, strides=2, padding="same"),
            layers.ReLU(),
            layers.Flatten(),
            layers.Dropout(0.2),
            layers.Dense(32),
            layers.BatchNormalization(),
            layers.Activation("relu"),
            layers.Dense(10),
            layers.Activation("softmax"),
        ],
        name="mnist_cnn",
    )


def accuracy(model, x_uint8, y):
    x = x_uint8.astype(np.float32) / 255.0
    p = model.predict(x, batch_size=500, verbose=0)
    return float(np.mean(np.argmax(p, axis=1) == y.astype(np.int64)))


def save_subset(path, x, y, classes):
    np.savez_compressed(
        path,
        x=np.ascontiguousarray(x, dtype=np.uint8),
        y=np.ascontiguousarray(y, dtype=np.uint8),
        classes=np.array([str(c) for c in classes]),
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train", default=os.path.join(ROOT, "..", "shared", "data", "mnist_train.npz"))
    ap.add_argument("--test", default=os.path.join(ROOT, "..", "shared", "data", "mnist_test.npz"))
    ap.add_argument("--out", default=os.path.join(ROOT, "spkeras", "demo"))
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    args = ap.parse_args()

    keras.utils.set_random_seed(args.seed)
    try:  # best effort: make torch kernels deterministic too
        import torch

        torch.use_deterministic_algorithms(True, warn_only=True)
    except Exception:  # pragma: no cover
        pass

    x_train_u8, y_train, classes = load_npz(args.train)
    x_test_u8, y_test, _ = load_npz(args.test)
    x_train = x_train_u8.astype(np.float32) / 255.0

    model = build_model()
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=args.lr),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.summary()

    t0 = time.time()
    model.fit(
        x_train,
        y_train.astype(np.int64),
        batch_size=args.batch_size,
        epochs=args.epochs,
        shuffle=True,
        verbose=2,
    )
    train_s = time.time() - t0

    acc_full = accuracy(model, x_test_u8, y_test)
    acc_ship = accuracy(model, x_test_u8[:N_SHIP], y_test[:N_SHIP])
    print(f"training time: {train_s:.1f} s")
    print(f"test accuracy (10k): {acc_full:.4f}")
    print(f"test accuracy (first {N_SHIP}): {acc_ship:.4f}")

    os.makedirs(args.out, exist_ok=True)
    model_path = os.path.join(args.out, "mnist_cnn.keras")
    model.save(model_path)
    save_subset(os.path.join(args.out, "mnist_test.npz"), x_test_u8[:N_SHIP], y_test[:N_SHIP], classes)
    save_subset(os.path.join(args.out, "mnist_calib.npz"), x_train_u8[:N_SHIP], y_train[:N_SHIP], classes)

    readme = (
        "# spkeras demo model and data\n\n"
        f"`mnist_cnn.keras` is a small Keras 3 CNN trained on the 60,000 MNIST training images "
        f"(pixels scaled to [0, 1], NHWC) by `scripts/train_demo_model.py` with `--seed {args.seed}` "
        f"({args.epochs} epochs, Adam lr {args.lr:g}, batch {args.batch_size}, torch backend, CPU); "
        f"it scores {100 * acc_full:.2f}% on the full 10,000-image MNIST test set and "
        f"{100 * acc_ship:.2f}% on the {N_SHIP} images shipped here. "
        f"`mnist_test.npz` holds the first {N_SHIP} canonical MNIST test images and "
        f"`mnist_calib.npz` the first {N_SHIP} training images (for calibration); each stores "
        f"`x` (uint8, {N_SHIP}x28x28x1, channels last), `y` (uint8 labels) and `classes` "
        f"('0'..'9'), and loads with `np.load(path, allow_pickle=False)`; divide `x` by 255 "
        f"before feeding the model.\n"
    )
    with open(os.path.join(args.out, "README.md"), "w") as f:
        f.write(readme)

    total = 0
    for name in ("mnist_cnn.keras", "mnist_test.npz", "mnist_calib.npz", "README.md"):
        size = os.path.getsize(os.path.join(args.out, name))
        total += size
        print(f"{name}: {size} bytes")
    print(f"total: {total} bytes")


if __name__ == "__main__":
    main()
