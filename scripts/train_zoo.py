#!/usr/bin/env python3
"""Train the reference CNN zoo (scripts/zoo.py) on the CPU and write PyTorch + Keras files.

For each network (``vgg_maxpool``, ``resnet18``, ``mobilenetv2``, ``densenet``, ``resnet20``):

* trains it on the 10,000 images of ``cifar10_train_10k.npz`` (pixels / 255, no normalisation;
  random crop with 4-pixel zero padding and horizontal flip), SGD with Nesterov momentum, weight
  decay and a one-cycle learning-rate schedule, deterministic for a given ``--seed`` and
  ``--threads`` (seeded weights, data order, augmentation and dropout);
* measures its accuracy on test images 0-999 and on all 10,000 of ``cifar10_test.npz``;
* builds its Keras twin (``zoo.keras_twin``) and checks that the twin -- and the twin as read back
  from its saved file -- gives the same logits (max abs difference < 1e-3) and the same argmax as
  the PyTorch model on test images 0-99; refuses to write the network otherwise;
* writes ``<out>/<name>.pt`` (``torch.save(model.state_dict())``) and ``<out>/<name>.keras``
  atomically (temporary name, then ``os.replace``).

Finally it (re)writes ``<out>/README.md`` from the results of this run; results of networks
trained by earlier runs into the same folder (and not retrained now) are kept, read back from a
JSON block the README carries.

Usage::

    python scripts/train_zoo.py                      # all five, default epochs
    python scripts/train_zoo.py --nets resnet18,densenet --epochs 2
    python scripts/train_zoo.py --epochs vgg_maxpool=3,resnet18=4 --limit-train 2000 --out /tmp/zoo
"""

import argparse
import json
import os
import re
import shlex
import shutil
import sys
import time

# Other jobs share this machine's cores: OpenMP threads that spin while waiting slow everything
# down many times over when a core is taken, so let them sleep (must be set before torch loads).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import zoo  # noqa: E402

DATA = os.path.join(ROOT, "..", "shared", "data")
NAMES = tuple(zoo.NETS)
# per-net defaults: the first four trained in 24 minutes (1421 s) on 2 shared CPU cores, resnet20 in
# 8.5 minutes (508 s) more; the .pt/.keras files and README.md in models/zoo come from these epochs
DEFAULT_EPOCHS = {"vgg_maxpool": 12, "resnet18": 25, "mobilenetv2": 8, "densenet": 9, "resnet20": 11}
DEFAULT_LR = {"vgg_maxpool": 0.05, "resnet18": 0.1, "mobilenetv2": 0.1, "densenet": 0.1, "resnet20": 0.1}
TWIN_TOL = 1e-3
N_TWIN_CHECK = 100
RESULTS_TAG = "zoo-results"


def log(msg):
    print(msg, flush=True)


def load_npz(path):
    d = np.load(path, allow_pickle=False)
    x, y = d["x"], d["y"].astype(np.int64)
    assert x.dtype == np.uint8 and x.shape[1:] == (32, 32, 3), (x.dtype, x.shape)
    return x, y


def to_nchw_float(x_u8):
    return torch.from_numpy(np.ascontiguousarray(x_u8)).permute(0, 3, 1, 2).float().div_(255.0)


def parse_per_net(text, kind, defaults):
    """'12' -> the same for every net; 'vgg_maxpool=3,resnet18=4' -> per net (others: defaults)."""
    out = dict(defaults)
    if text is None:
        return out
    if re.fullmatch(r"[0-9.eE+-]+", text):
        return {n: kind(text) for n in out}
    for part in text.split(","):
        name, _, value = part.partition("=")
        if name not in out or not value:
            raise SystemExit(f"bad value {part!r}: expected NUMBER or NAME=NUMBER,... with NAME in {', '.join(NAMES)}")
        out[name] = kind(value)
    return out


class Augmenter:
    """Random crop with 4-pixel zero padding and horizontal flip, on uint8 NCHW batches."""

    def __init__(self, x_u8_nhwc, pad=4):
        x = torch.from_numpy(np.ascontiguousarray(x_u8_nhwc)).permute(0, 3, 1, 2)
        self.pad = pad
        self.xp = F.pad(x, (pad, pad, pad, pad))  # uint8 zeros = black pixels = 0.0 after /255
        self.ar = torch.arange(32)

    def batch(self, idx, gen):
        n = len(idx)
        oy = torch.randint(0, 2 * self.pad + 1, (n,), generator=gen)
        ox = torch.randint(0, 2 * self.pad + 1, (n,), generator=gen)
        flip = torch.rand(n, generator=gen) < 0.5
        rows = oy[:, None] + self.ar  # (n, 32)
        cols = ox[:, None] + self.ar
        cols = torch.where(flip[:, None], cols.flip(1), cols)
        b = torch.as_tensor(idx)[:, None, None, None]
        c = torch.arange(3)[None, :, None, None]
        xb = self.xp[b, c, rows[:, None, :, None], cols[:, None, None, :]]
        return xb.float().div_(255.0)


@torch.no_grad()
def predict(model, x, batch=500):
    model.eval()
    cl = torch.channels_last
    return torch.cat([model(x[i:i + batch].contiguous(memory_format=cl)) for i in range(0, len(x), batch)])


def accuracy(model, x, y):
    return float((predict(model, x).argmax(1).numpy() == y).mean())


def train_one(name, args, epochs, lr, data):
    x_train_u8, y_train, x_test, y_test = data
    cls = zoo.NETS[name][0]
    torch.manual_seed(args.seed)
    model = cls()
    n_params = zoo.count_params(model)
    model = model.to(memory_format=torch.channels_last)  # faster convs on CPU (oneDNN)
    log(f"== {name}: {cls.__name__}, {n_params:,} parameters, {epochs} epochs, lr {lr:g}, seed {args.seed}")
    aug = Augmenter(x_train_u8)
    y_t = torch.from_numpy(y_train)
    rng = np.random.default_rng(args.seed)  # data order
    gen = torch.Generator().manual_seed(args.seed)  # augmentation
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    opt = torch.optim.SGD([{"params": decay, "weight_decay": args.weight_decay},
                           {"params": no_decay, "weight_decay": 0.0}],
                          lr=lr, momentum=0.9, nesterov=True)
    n = len(x_train_u8)
    steps = (n + args.batch_size - 1) // args.batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, epochs=epochs, steps_per_epoch=steps,
                                                pct_start=0.25, div_factor=10.0, final_div_factor=100.0)
    t0 = time.time()
    for epoch in range(1, epochs + 1):
        te = time.time()
        model.train()
        order = rng.permutation(n)
        loss_sum, correct = 0.0, 0
        for s in range(steps):
            idx = order[s * args.batch_size:(s + 1) * args.batch_size]
            xb, yb = aug.batch(idx, gen).contiguous(memory_format=torch.channels_last), y_t[idx]
            out = model(xb)
            loss = F.cross_entropy(out, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += float(loss.detach()) * len(idx)
            correct += int((out.argmax(1) == yb).sum())
        train_s = time.time() - te
        acc1k = accuracy(model, x_test[:1000], y_test[:1000])
        log(f"{name} epoch {epoch}/{epochs}: loss {loss_sum / n:.4f}, train acc {correct / n:.4f}, "
            f"test[0:1000] acc {acc1k:.4f}, {train_s:.1f} s (elapsed {time.time() - t0:.0f} s)")
    train_time = time.time() - t0
    model.eval()
    return model, n_params, train_time, correct / n


def twin_diff(model, keras_model, x):
    ref = predict(model, x).numpy()
    got = keras_model.predict(x.permute(0, 2, 3, 1).numpy(), batch_size=len(x), verbose=0)
    got = np.asarray(got)
    return float(np.abs(ref - got).max()), bool((ref.argmax(1) == got.argmax(1)).all())


def check_twin(name, model, keras_model, x, what):
    diff, same = twin_diff(model, keras_model, x)
    log(f"{name}: {what} vs torch on {len(x)} test images: max |logit diff| {diff:.2e}, same argmax: {same}")
    if not (diff < TWIN_TOL and same):
        raise RuntimeError(f"{name}: the Keras twin ({what}) differs from the torch model "
                           f"(max abs diff {diff:.3g}, same argmax {same}); not writing it")
    return diff


def save_files(name, model, out, x_check):
    import keras

    model = model.to(memory_format=torch.contiguous_format)  # plain NCHW weights in the state dict
    keras_model = zoo.keras_twin(model)
    diff = check_twin(name, model, keras_model, x_check, "Keras twin")
    os.makedirs(out, exist_ok=True)
    pt, ks = os.path.join(out, f"{name}.pt"), os.path.join(out, f"{name}.keras")
    # written under their final names into a temporary folder beside them (torch.save names the
    # archive's records after the file), then moved into place
    tmp_dir = os.path.join(out, f".tmp-{name}-{os.getpid()}")
    os.makedirs(tmp_dir, exist_ok=True)
    tmp_pt, tmp_ks = os.path.join(tmp_dir, f"{name}.pt"), os.path.join(tmp_dir, f"{name}.keras")
    try:
        torch.save(model.state_dict(), tmp_pt)
        keras_model.save(tmp_ks)
        # read both back: the state dict into a fresh module, the .keras file with Keras
        fresh = type(model)()
        fresh.load_state_dict(torch.load(tmp_pt, weights_only=True))
        fresh.eval()
        if not torch.equal(predict(fresh, x_check), predict(model, x_check)):
            raise RuntimeError(f"{name}: the saved state dict does not reproduce the model")
        diff_saved = check_twin(name, model, keras.models.load_model(tmp_ks), x_check, "saved .keras")
        os.replace(tmp_pt, pt)
        os.replace(tmp_ks, ks)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return {"pt_bytes": os.path.getsize(pt), "keras_bytes": os.path.getsize(ks),
            "twin_max_abs_diff": max(diff, diff_saved), "keras_layers": len(keras_model.layers)}


def atomic_write_text(path, text):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def read_previous_results(out):
    path = os.path.join(out, "README.md")
    try:
        with open(path) as f:
            m = re.search(rf"<!-- {RESULTS_TAG}\n(.*?)\n-->", f.read(), re.S)
        return json.loads(m.group(1)) if m else {}
    except (OSError, ValueError):
        return {}


def fmt_bytes(n):
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


def write_readme(out, results):
    order = [n for n in NAMES if n in results]
    lines = [
        "# Reference CNN zoo (CIFAR-10)",
        "",
        "Five CNNs with the layers of real-world models, for testing conversion: trained on the CPU by",
        "`scripts/train_zoo.py` on the 10,000 images of `cifar10_train_10k.npz` (nothing held out;",
        "random crop with 4-pixel zero padding and horizontal flip; SGD, Nesterov momentum 0.9,",
        "weight decay on conv/linear weights, one-cycle learning rate, batch 128), tested on",
        "`cifar10_test.npz` (JPEG copies of CIFAR-10; see `../../../shared/data/README.md`).",
        "This file is generated by the training script from the results of its runs.",
        "",
        "Inputs: 3x32x32 (PyTorch NCHW) / 32x32x3 (Keras NHWC), pixels / 255 in [0, 1], no mean/std",
        "normalisation; outputs: 10 logits (no softmax). Architectures: `scripts/zoo.py`.",
        "",
        "* `<name>.pt`: `torch.save(model.state_dict())`; load with",
        "  `m = zoo.<Class>(); m.load_state_dict(torch.load(path, weights_only=True)); m.eval()`,",
        "  or convert with `--torch-class zoo:<Class>` (with `scripts/` on sys.path or as the current folder).",
        "* `<name>.keras`: its Keras twin (Functional, channels last, built by `zoo.keras_twin`), checked",
        f"  before writing to give the same logits (max abs difference < {TWIN_TOL:g}) and argmax as the",
        f"  PyTorch model on test images 0-{N_TWIN_CHECK - 1}, both as built and as read back from the file.",
        "",
        "| name | class | parameters | .pt | .keras | epochs | training time | test 0-999 | test 10k |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in order:
        r = results[n]
        lines.append(
            f"| `{n}` | `zoo:{r['class']}` | {r['params']:,} | {fmt_bytes(r['pt_bytes'])} | "
            f"{fmt_bytes(r['keras_bytes'])} | {r['epochs']} | {r['train_s'] / 60:.1f} min | "
            f"{100 * r['acc_1k']:.1f} % | {100 * r['acc_10k']:.2f} % |")
    total = sum(results[n]["train_s"] for n in order)
    lines += ["", f"Training time of the networks above together: {total:.0f} s ({total / 60:.1f} min); "
              "evaluation, Keras checks and saving add about a minute per network.", ""]
    for n in order:
        r = results[n]
        lines += [
            f"## `{n}` (`zoo:{r['class']}`)",
            "",
            f"* Architecture: {r['description']}.",
            f"* Layers (PyTorch): {r['layers']}; Keras twin: {r['keras_layers']} layers.",
            f"* Parameters: {r['params']:,} (trainable; plus BatchNorm running statistics).",
            f"* Files: `{n}.pt` {r['pt_bytes']:,} bytes, `{n}.keras` {r['keras_bytes']:,} bytes.",
            f"* Training: {r['epochs']} epochs, peak learning rate {r['lr']:g}, weight decay {r['weight_decay']:g}, "
            f"batch {r['batch_size']}, seed {r['seed']}, {r['threads']} threads, {r['n_train']:,} training images; "
            f"{r['train_s']:.0f} s ({r['train_s'] / 60:.1f} min) of training on {r['host_cpus']} CPU cores, "
            f"torch {r['torch']}, finished {r['date']}.",
            f"* Command: `{r['command']}`",
            f"* Accuracy: {100 * r['acc_1k']:.1f} % on test images 0-999, {100 * r['acc_10k']:.2f} % on all "
            f"10,000 test images; final training accuracy (augmented) {100 * r['train_acc_aug']:.1f} %.",
            f"* Keras twin: max |logit difference| {r['twin_max_abs_diff']:.1e} on test images 0-{N_TWIN_CHECK - 1}.",
            "",
        ]
    lines += [f"<!-- {RESULTS_TAG}", json.dumps(results, indent=1, sort_keys=True), "-->", ""]
    atomic_write_text(os.path.join(out, "README.md"), "\n".join(lines))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nets", default=",".join(NAMES),
                    help=f"comma-separated subset of {','.join(NAMES)} (default: all)")
    ap.add_argument("--epochs", default=None,
                    help="N for every net, or NAME=N,... (default: " +
                         ",".join(f"{k}={v}" for k, v in DEFAULT_EPOCHS.items()) + ")")
    ap.add_argument("--lr", default=None, help="peak learning rate: X or NAME=X,... (default: " +
                    ",".join(f"{k}={v:g}" for k, v in DEFAULT_LR.items()) + ")")
    ap.add_argument("--weight-decay", type=float, default=5e-4)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit-train", type=int, default=None,
                    help="train on the first N training images only (for timing)")
    ap.add_argument("--train", default=os.path.join(DATA, "cifar10_train_10k.npz"))
    ap.add_argument("--test", default=os.path.join(DATA, "cifar10_test.npz"))
    ap.add_argument("--out", default=os.path.join(ROOT, "models", "zoo"))
    args = ap.parse_args()

    nets = [n.strip() for n in args.nets.split(",") if n.strip()]
    unknown = [n for n in nets if n not in NAMES]
    if unknown or not nets:
        raise SystemExit(f"unknown net(s) {unknown}; choose from {', '.join(NAMES)}")
    epochs = parse_per_net(args.epochs, int, DEFAULT_EPOCHS)
    lrs = parse_per_net(args.lr, float, DEFAULT_LR)

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # denormal weights/gradients make CPU training many times slower
    torch.use_deterministic_algorithms(True, warn_only=True)
    os.environ.setdefault("KERAS_BACKEND", "torch")

    x_train_u8, y_train = load_npz(args.train)
    if args.limit_train:
        x_train_u8, y_train = x_train_u8[:args.limit_train], y_train[:args.limit_train]
    x_test_u8, y_test = load_npz(args.test)
    x_test = to_nchw_float(x_test_u8)
    data = (x_train_u8, y_train, x_test, y_test)
    command = "python " + " ".join(shlex.quote(a) for a in
                                   [os.path.relpath(os.path.abspath(sys.argv[0]), ROOT)] + sys.argv[1:])
    log(f"training {', '.join(nets)} on {len(x_train_u8)} images, {args.threads} threads, seed {args.seed}; "
        f"epochs {', '.join(f'{n}={epochs[n]}' for n in nets)}")

    results = read_previous_results(args.out)
    results = {k: v for k, v in results.items()
               if k in NAMES and os.path.exists(os.path.join(args.out, f"{k}.pt"))}
    t_all = time.time()
    for name in nets:
        model, n_params, train_s, train_acc = train_one(name, args, epochs[name], lrs[name], data)
        te = time.time()
        acc_1k = accuracy(model, x_test[:1000], y_test[:1000])
        acc_10k = accuracy(model, x_test, y_test)
        log(f"{name}: test accuracy {acc_1k:.4f} on images 0-999, {acc_10k:.4f} on all 10,000 "
            f"({time.time() - te:.0f} s)")
        files = save_files(name, model, args.out, x_test[:N_TWIN_CHECK])
        log(f"{name}: wrote {name}.pt ({files['pt_bytes']:,} bytes), {name}.keras ({files['keras_bytes']:,} bytes)")
        cls = zoo.NETS[name][0]
        results[name] = {
            "class": cls.__name__, "description": cls.DESCRIPTION, "layers": zoo.layer_summary(model),
            "params": n_params, "epochs": epochs[name], "lr": lrs[name], "weight_decay": args.weight_decay,
            "batch_size": args.batch_size, "seed": args.seed, "threads": args.threads,
            "n_train": len(x_train_u8), "train_s": round(train_s, 1),
            "acc_1k": acc_1k, "acc_10k": acc_10k, "train_acc_aug": train_acc,
            "command": command, "torch": torch.__version__, "host_cpus": os.cpu_count(),
            "date": time.strftime("%Y-%m-%d"), **files,
        }
        write_readme(args.out, results)
        log(f"{name}: done; {time.time() - t_all:.0f} s since start")
    log(f"all done in {time.time() - t_all:.0f} s; README: {os.path.join(args.out, 'README.md')}")


if __name__ == "__main__":
    main()
