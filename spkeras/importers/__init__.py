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

from ..errors import ModelError
from ..ir import Graph

SUPPORTED_FORMATS = ".keras and .h5 (Keras)"

# file suffix → (module in spkeras.importers, function taking a path)
FILE_IMPORTERS = {
    ".keras": ("keras", "load_keras"),
    ".h5": ("keras", "load_keras"),
}


def _is_keras_model(obj) -> bool:
    """True for a keras.Model; never imports Keras (a Keras model implies it is loaded)."""
    keras = sys.modules.get("keras")
    return keras is not None and isinstance(obj, keras.Model)


# (detector, module in spkeras.importers, function taking the in-memory model)
MODEL_IMPORTERS = [
    (_is_keras_model, "keras", "keras_to_graph"),
]


def _importer(module: str, function: str):
    """The importer function, importing its module on first use."""
    return getattr(importlib.import_module(f"{__name__}.{module}"), function)


def load_model(source) -> Graph:
    """Import a model file path (.keras, .h5) or an in-memory keras.Model as a CNN graph."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.suffix not in FILE_IMPORTERS:
            raise ModelError(f"unsupported model file {path}: supported formats are {SUPPORTED_FORMATS}")
        return _importer(*FILE_IMPORTERS[path.suffix])(path)
    for detect, module, function in MODEL_IMPORTERS:
        if detect(source):
            return _importer(module, function)(source)
    raise ModelError(
        f"cannot import a {type(source).__name__}: expected a model file ({SUPPORTED_FORMATS}) or a keras.Model"
    )
