"""Model importers: turn a trained network (a file or an in-memory model) into a CNN :class:`Graph`.

Importer modules are imported only when used, so ``import spkeras`` stays fast. To add a
framework, register its file suffixes in ``FILE_IMPORTERS`` and an in-memory detector in
``MODEL_IMPORTERS``, and extend ``SUPPORTED_FORMATS``.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

from ..errors import ConfigError, ModelError
from ..ir import Graph

SUPPORTED_FORMATS = (".keras and .h5 (Keras), .pt/.pth/.ts (PyTorch: TorchScript, or a state dict with "
                     "--torch-class), .onnx (ONNX)")

# file suffix → (module in spkeras.importers, function taking a path)
FILE_IMPORTERS = {
    ".keras": ("keras", "load_keras"),
    ".h5": ("keras", "load_keras"),
    ".pt": ("torch", "load_torch"),
    ".pth": ("torch", "load_torch"),
    ".ts": ("torch", "load_torch"),
    ".onnx": ("onnx", "load_onnx"),
}
# importers whose file function also takes input_shape= (and torch_class=, for "torch")
SHAPED_IMPORTERS = ("torch", "onnx")


def _is_keras_model(obj) -> bool:
    """True for a keras.Model; never imports Keras (a Keras model implies it is loaded)."""
    keras = sys.modules.get("keras")
    return keras is not None and isinstance(obj, keras.Model)


def _is_torch_module(obj) -> bool:
    """True for a torch.nn.Module (after Keras: Keras models on the torch backend are modules too)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


def _is_onnx_model(obj) -> bool:
    onnx = sys.modules.get("onnx")
    return onnx is not None and isinstance(obj, onnx.ModelProto)


# (detector, module in spkeras.importers, function taking the in-memory model)
MODEL_IMPORTERS = [
    (_is_keras_model, "keras", "keras_to_graph"),
    (_is_torch_module, "torch", "module_to_graph"),
    (_is_onnx_model, "onnx", "onnx_to_graph"),
]


def _importer(module: str, function: str):
    """The importer function, importing its module on first use."""
    return getattr(importlib.import_module(f"{__name__}.{module}"), function)


def load_model(source, input_shape=None, torch_class: str | None = None) -> Graph:
    """Import a model file path or an in-memory model (keras.Model, torch.nn.Module, onnx.ModelProto).

    ``input_shape`` ((C, H, W) or (F,)) is needed by PyTorch models, which do not record it; for
    other formats it is checked against the model's. ``torch_class`` (``module:Class``) names the
    network a PyTorch state-dict file belongs to.
    """
    options = {} if input_shape is None else {"input_shape": tuple(input_shape)}
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.suffix not in FILE_IMPORTERS:
            raise ModelError(f"unsupported model file {path}: supported formats are {SUPPORTED_FORMATS}")
        module, function = FILE_IMPORTERS[path.suffix]
        if torch_class is not None:
            if module != "torch":
                raise ConfigError(f"--torch-class applies to PyTorch state-dict files (.pt, .pth), not {path.name}")
            options["torch_class"] = torch_class
        graph = _importer(module, function)(path, **options) if module in SHAPED_IMPORTERS else _importer(
            module, function)(path)
        return _check_shape(graph, input_shape, path)
    for detect, module, function in MODEL_IMPORTERS:
        if detect(source):
            if module in SHAPED_IMPORTERS:
                return _importer(module, function)(source, **options)
            return _check_shape(_importer(module, function)(source), input_shape, type(source).__name__)
    raise ModelError(
        f"cannot import a {type(source).__name__}: expected a model file ({SUPPORTED_FORMATS}), a keras.Model, "
        "a torch.nn.Module or an onnx.ModelProto"
    )


def _check_shape(graph: Graph, input_shape, where) -> Graph:
    """Refuse an input shape that contradicts the one the model records."""
    if input_shape is not None and tuple(input_shape) != tuple(graph.input.shape):
        raise ModelError(f"{where}: --input-shape {tuple(input_shape)} contradicts the model's input shape "
                         f"{tuple(graph.input.shape)} (C, H, W)")
    return graph
