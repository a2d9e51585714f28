"""The Python API (load_model, convert, evaluate); the CLI is a thin layer over it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from .data import Dataset, dataset_from
from .distributed import gather_rows, merge, shard, world
from .errors import ConfigError
from .evaluation import (MODES, EvaluationResult, checked_images, cnn_predictions, images_and_labels, peak_memory_mb,
                       run_snn, summarise)
from .ir import Graph
from .methods import get_method
from .methods.framework import PreparedConversion, prepare as prepare_graph
from .preprocessing import InputPreprocessing
from .progress import announce
from .simulate import RunOptions
from .snn import SpikingNetwork, load_snn

DEFAULT_CALIB_N = 2000


def load_model(source, input_shape=None, torch_class: str | None = None,
               preprocessing: InputPreprocessing | dict | None = None) -> Graph | SpikingNetwork:
    """A CNN graph from a Keras, PyTorch or ONNX file or model, or a converted network from a ``.snn`` file.

    ``input_shape`` ((C, H, W) or (F,)) is required for PyTorch models (or their ``input_shape``
    attribute); ``torch_class`` (``module:Class``) names the network of a PyTorch state-dict file.
    ``preprocessing`` (:class:`~spkeras.preprocessing.InputPreprocessing` or a dict of ``scale``,
    ``mean``, ``std``) says what the model expects of pixels in [0, 1]: (x·scale − mean)/std.
    """
    preprocessing = InputPreprocessing.of(preprocessing)
    if isinstance(source, SpikingNetwork) or (isinstance(source, (str, os.PathLike))
                                              and Path(source).suffix == ".snn"):
        if preprocessing is not None:
            raise ConfigError("input preprocessing applies at conversion; this network is already converted (.snn)")
        return source if isinstance(source, SpikingNetwork) else load_snn(source)
    if isinstance(source, Graph):
        graph = source
    else:
        from .importers import load_model as import_model

        graph = import_model(source, input_shape=input_shape, torch_class=torch_class)
    return preprocessing.apply(graph) if preprocessing is not None else graph


def as_dataset(data, n: int | None = None, **options) -> Dataset:
    """A Dataset from any accepted form: a path (see :func:`spkeras.data.load_dataset`), a
    Dataset, an ``(x, y)`` pair or dict of arrays or tensors, a bare image array (calibration
    only), a torch Dataset or DataLoader (:func:`spkeras.data.dataset_from`)."""
    return dataset_from(data, n, **options)


def model_name(model) -> str:
    """How a result names its model: the path, or the in-memory model's (or graph's) name."""
    if isinstance(model, (str, os.PathLike)):
        return str(model)
    if isinstance(model, SpikingNetwork):
        return model.graph.name
    return str(getattr(model, "name", type(model).__name__))


def check_device(device: str) -> str:
    """The device name, if torch can use it."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available; use --device cpu")
    if not (device == "cpu" or device.startswith("cuda")):
        raise ConfigError(f"device must be cpu or cuda[:N], got {device!r}")
    if device.startswith("cuda"):  # exact float32 as on the CPU: no TF32 in convolutions or products
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    return device


def prepare(model, calibration=None, method: str = "ecc", calib_n: int | None = DEFAULT_CALIB_N, batch_size: int = 100,
            device: str = "cpu", input_shape=None, torch_class: str | None = None, preprocessing=None,
            **options) -> PreparedConversion:
    """The T-independent part of converting a CNN (path, keras.Model or Graph): import, passes
    and λ. ``.network(T)`` then gives the spiking network for any T, running every T-dependent
    step (build, Spike-Norm, rate and delay calibration, quantisation) in one place.

    ``method`` names a preset (``ecc``, ``ecc+``, ``rueckauer2017``, …); ``options`` override its
    switches (e.g. ``tre='initial'``, ``eta=0.6``). λ and the calibrations use the first
    ``calib_n`` calibration images (None: all). ``input_shape``, ``torch_class`` and
    ``preprocessing`` say how to read the model (see :func:`load_model`).
    """
    graph = load_model(model, input_shape=input_shape, torch_class=torch_class, preprocessing=preprocessing)
    if isinstance(graph, SpikingNetwork):
        raise ConfigError("this model is already a converted .snn network")
    preset = get_method(method, **options)
    images = None
    if calibration is not None:
        dataset = as_dataset(calibration)
        images = checked_images(dataset.at_most(calib_n), graph)
    return prepare_graph(graph, images, preset, batch_size=batch_size, device=check_device(device))


def convert(model, calibration=None, method: str = "ecc", timesteps: int = 256, calib_n: int | None = DEFAULT_CALIB_N,
            batch_size: int = 100, device: str = "cpu", input_shape=None, torch_class: str | None = None,
            preprocessing=None, **options) -> SpikingNetwork:
    """Convert a CNN (path, keras.Model, torch.nn.Module, ONNX model or Graph) into a SpikingNetwork
    for T steps: ``prepare(model, calibration, method, …).network(timesteps)`` (see :func:`prepare`)."""
    if timesteps < 1:
        raise ConfigError(f"timesteps must be ≥ 1, got {timesteps}")
    return prepare(model, calibration, method, calib_n=calib_n, batch_size=batch_size, device=device,
                   input_shape=input_shape, torch_class=torch_class, preprocessing=preprocessing,
                   **options).network(timesteps)


def evaluate(model, data, calibration=None, method: str = "ecc", timesteps: int = 256, n: int | None = None,
             mode: str = "simulate", readout: str | None = None, device: str = "cpu", seed: int = 0,
             batch_size: int = 100, calib_n: int | None = DEFAULT_CALIB_N, checkpoints: list[int] | None = None,
             chunk: int = 8, early_exit: int | None = None, conv: str = "auto", input_shape=None,
             torch_class: str | None = None, preprocessing=None, **options) -> EvaluationResult:
    """Convert (unless given a SpikingNetwork or .snn) and evaluate CNN and SNN on ``data``.

    ``model`` is anything :func:`load_model` reads (``input_shape``, ``torch_class`` and
    ``preprocessing`` say how to read it), a SpikingNetwork or a ``.snn`` file.
    ``chunk`` timesteps go through the stateless layers as one batch: memory grows with
    batch_size × chunk, speed too up to a point. ``early_exit=K`` stops each image once its
    prediction has been the same for K steps (a different readout, labelled in the result).
    ``conv='auto'`` runs conv layers on sparse spikes event-driven on the CPU, ``'dense'``
    never (:func:`spkeras.simulate.simulate`).
    """
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if timesteps < 1:
        raise ConfigError(f"timesteps must be ≥ 1, got {timesteps}")
    if checkpoints and not all(1 <= t <= timesteps for t in checkpoints):
        raise ConfigError(f"checkpoints must lie in 1..{timesteps} (the run length), got {checkpoints}")
    device = check_device(device)
    torch.manual_seed(seed)
    started = time.perf_counter()
    dataset = as_dataset(data, n)
    loaded = load_model(model, input_shape=input_shape, torch_class=torch_class, preprocessing=preprocessing)
    if isinstance(loaded, SpikingNetwork) and any(v is not None for v in options.values()):
        raise ConfigError("method switches apply at conversion, and this network is already converted (.snn); "
                          "convert the CNN again with them")
    if isinstance(loaded, SpikingNetwork):
        net = loaded
    else:  # a readout asked for at run time is also the one the conversion calibrates for
        net = convert(loaded, calibration=calibration, method=method, timesteps=timesteps, calib_n=calib_n,
                      batch_size=batch_size, device=device, **{"readout": readout, **options})
    converted = time.perf_counter()
    images, labels = images_and_labels(dataset, net.cnn)
    rank, size = world(device)
    start, stop = shard(len(dataset), rank, size)
    cnn_pred = cnn_predictions(net.to(device).cnn, images[start:stop], batch_size, device)
    cnn_done = time.perf_counter()
    readout = readout or net.method.readout
    run = RunOptions(timesteps=timesteps, readout=readout, batch_size=batch_size, chunk=chunk, device=device, seed=seed,
                     conv=conv, early_exit=early_exit)
    announce(f"simulating {stop - start} images ({mode}, T={timesteps})")
    record = run_snn(net, images[start:stop], run, mode, checkpoints, image_ids=torch.arange(start, stop))
    if size > 1:
        record = merge(record, len(dataset), size)
        cnn_pred = gather_rows(cnn_pred, len(dataset), size)
    fields = summarise(net, record, labels, cnn_pred, timesteps, readout)
    notes = []
    if early_exit is not None:
        fields["early_exit"]["stable_steps"] = early_exit
        notes.append(f"early exit: each image stopped once its prediction was stable for {early_exit} steps "
                     f"(mean stop at step {fields['early_exit']['mean_exit_step']:.1f} of {timesteps}); "
                     "accuracy and operations are those of this readout")
    if net.method.depends_on_timesteps and timesteps != net.timesteps:
        notes.append(f"the network was made for T={net.timesteps} (its method depends on T); "
                     f"the run lasted {timesteps} steps")
    return EvaluationResult(
        method=net.method.name, mode=mode, timesteps=timesteps, n=len(dataset), readout=readout,
        cnn_accuracy=float((cnn_pred == labels).double().mean()),
        timings={"convert_s": converted - started, "cnn_s": cnn_done - converted, "snn_s": record.seconds,
                 "peak_memory_mb": peak_memory_mb(device), "chunk": chunk, "batch_size": batch_size,
                 "conv": conv, "event_conv_share": record.event_conv_share,
                 "total_s": time.perf_counter() - started},
        settings=net.method.to_dict(), lambdas=net.lambdas, device=device, seed=seed,
        model=model_name(model),
        data=dataset.source, converted_for_timesteps=net.timesteps, mode_description=MODES[mode], notes=notes,
        processes=size,
        **fields,
    )
