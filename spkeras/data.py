"""Image datasets for evaluation and calibration.

``load_dataset(path)`` accepts:

* a ``.npz`` archive with ``x``/``y`` (optionally ``classes``), or the Keras
  MNIST keys ``x_test``/``y_test`` and ``x_train``/``y_train`` (test wins);
* a CIFAR-10 python-batch folder (``cifar-10-batches-py``) or one batch file
  inside it; a CIFAR-100 folder (``cifar-100-python``, fine labels) or its
  ``test``/``train`` file;
* a folder holding exactly one of the above, such as ``~/.keras/datasets``.

Images come back as float32 N x H x W x C; uint8 sources are scaled to [0, 1],
float sources are kept as they are. ``.npz`` files are always read with
``allow_pickle=False``. CIFAR batches are pickles, so they are read with an
unpickler that refuses every global except the four numpy names an ndarray
needs.
"""

from __future__ import annotations

import dataclasses
import io
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import SpkerasError

__all__ = ["DataError", "Dataset", "load_dataset", "SUPPORTED"]

SUPPORTED = (".npz with x/y (uint8 NHWC or float), MNIST .npz, "
             "CIFAR-10/100 python batch folders")

_CIFAR10_DIR = "cifar-10-batches-py"
_CIFAR100_DIR = "cifar-100-python"
_NPZ_KEY_PAIRS = (("x", "y"), ("x_test", "y_test"), ("x_train", "y_train"))


class DataError(SpkerasError, ValueError):
    """A dataset could not be loaded or used; the message is one line."""


def _error(source: object, problem: str, formats: bool = True) -> DataError:
    """Build a one-line DataError naming ``source`` and ``problem``."""
    text = " ".join(f"{source}: {problem}".split())
    if formats:
        text += f" (supported: {SUPPORTED})"
    return DataError(text)


@dataclass(frozen=True, eq=False)
class Dataset:
    """Images ``x`` (float32 NHWC), labels ``y`` (int64), optional class names."""

    x: np.ndarray
    y: np.ndarray
    classes: tuple[str, ...] | None
    source: str

    def __post_init__(self) -> None:
        """Check the invariants the rest of the package relies on."""
        if not isinstance(self.x, np.ndarray) or self.x.dtype != np.float32 or self.x.ndim != 4:
            raise _error(self.source, "x must be a float32 N x H x W x C array", False)
        if not isinstance(self.y, np.ndarray) or self.y.dtype != np.int64 or self.y.shape != (len(self.x),):
            raise _error(self.source, f"y must be an int64 array of shape ({len(self.x)},)", False)
        if len(self.x) == 0:
            raise _error(self.source, "dataset holds no images", False)

    def __len__(self) -> int:
        """Number of images."""
        return len(self.x)

    def take(self, n: int | None) -> "Dataset":
        """Return the first ``n`` images (all when ``n`` is None)."""
        if n is None:
            return self
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise _error(self.source, f"n must be a whole number >= 1 or None, got {n!r}", False)
        if n > len(self.x):
            raise _error(self.source, f"asked for {n} images but it holds only {len(self.x)}; "
                         f"use n between 1 and {len(self.x)} or None", False)
        return dataclasses.replace(self, x=self.x[:n], y=self.y[:n])


def load_dataset(path: str | os.PathLike, n: int | None = None) -> Dataset:
    """Load the dataset at ``path`` (see the module docstring) and keep the first ``n``."""
    p = Path(os.path.expanduser(os.fspath(path)))
    if not p.exists():
        raise _error(p, "no such file or folder")
    if p.is_dir():
        ds = _load_folder(p)
    elif p.suffix.lower() == ".npz":
        ds = _load_npz(p)
    else:
        ds = _load_cifar_file(p)
    return ds.take(n)


# ----------------------------------------------------------------- .npz files

def _load_npz(path: Path) -> Dataset:
    """Load an ``.npz`` archive with x/y, x_test/y_test or x_train/y_train."""
    try:
        with open(path, "rb") as fh:  # our handle, so it closes even when np.load fails
            archive = np.load(fh, allow_pickle=False)
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise _error(path, "not an .npz archive (plain .npy data)")
            with archive:
                x, y, classes = _npz_arrays(path, archive)
    except DataError:
        raise
    except Exception as exc:  # corrupt files: zipfile, zlib, ValueError, OSError...
        raise _error(path, f"cannot read .npz archive ({type(exc).__name__}: {exc})") from None
    return _make(path, x, y, classes)


def _npz_arrays(path: Path, archive) -> tuple[np.ndarray, np.ndarray, object]:
    """Pick the x/y (and classes) arrays out of an open archive."""
    keys = set(archive.files)
    for kx, ky in _NPZ_KEY_PAIRS:
        if kx in keys and ky in keys:
            classes = archive["classes"] if "classes" in keys else None
            return archive[kx], archive[ky], classes
    found = ", ".join(sorted(keys)) or "none"
    raise _error(path, f"no x/y arrays in archive (keys: {found})")


# ------------------------------------------------------------ CIFAR batches

class _CifarUnpickler(pickle.Unpickler):
    """Unpickler that allows only the numpy globals an ndarray needs."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def __init__(self, file, source: Path):
        """Read from ``file``; ``source`` names it in error messages."""
        super().__init__(file, encoding="bytes")
        self.source = source

    def find_class(self, module: str, name: str):
        """Resolve an allowed global; refuse every other one."""
        if (module, name) not in self._ALLOWED:
            raise _error(self.source, f"refused to unpickle global {module}.{name}; "
                         "CIFAR batches may only hold dicts, lists, bytes and numpy arrays")
        if name == "_reconstruct":
            return _reconstruct()
        return getattr(np, name)

    def persistent_load(self, pid):
        """Refuse persistent ids (never present in CIFAR batches)."""
        raise _error(self.source, "refused pickle persistent id")


def _reconstruct():
    """numpy's ndarray ``_reconstruct``, without touching the deprecated numpy.core."""
    try:
        from numpy._core.multiarray import _reconstruct as fn
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct as fn
    return fn


def _unpickle(path: Path) -> dict:
    """Read a CIFAR python batch with the restricted unpickler."""
    try:
        data = path.read_bytes()
        obj = _CifarUnpickler(io.BytesIO(data), path).load()
    except DataError:
        raise
    except Exception as exc:  # corrupt pickles raise many different types
        raise _error(path, f"cannot read CIFAR batch ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise _error(path, f"CIFAR batch must hold a dict, found {type(obj).__name__}")
    return obj


def _cifar_kind(path: Path) -> str | None:
    """Return 'cifar10', 'cifar100' or None for a file that may be a batch."""
    if path.name == "test_batch" or path.name.startswith("data_batch_"):
        return "cifar10"
    if path.name in ("test", "train") and (path.parent / "meta").is_file():
        return "cifar100"
    return None


def _load_cifar_file(path: Path) -> Dataset:
    """Load one CIFAR-10 or CIFAR-100 batch file, with class names from its meta file."""
    kind = _cifar_kind(path)
    if kind is None and path.name in ("batches.meta", "meta"):
        raise _error(path, "is a CIFAR meta file, not a batch; pass the folder or a batch file")
    if kind is None:
        raise _error(path, f"unsupported file type '{path.suffix or path.name}'")
    batch = _unpickle(path)
    label_key = b"labels" if kind == "cifar10" else b"fine_labels"
    meta_file = "batches.meta" if kind == "cifar10" else "meta"
    name_key = b"label_names" if kind == "cifar10" else b"fine_label_names"
    if b"data" not in batch or label_key not in batch:
        raise _error(path, f"CIFAR batch lacks b'data' or {label_key!r}")
    x = _chw_rows_to_nhwc(path, batch[b"data"])
    return _make(path, x, batch[label_key], _meta_names(path.parent / meta_file, name_key))


def _chw_rows_to_nhwc(path: Path, data: object) -> np.ndarray:
    """Turn N x 3072 row-major CHW rows into N x 32 x 32 x 3."""
    data = np.asarray(data)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise _error(path, f"CIFAR data must be N x 3072, found shape {data.shape}")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def _meta_names(meta: Path, key: bytes) -> list[str] | None:
    """Class names from a CIFAR meta file, or None when it is absent."""
    if not meta.is_file():
        return None
    names = _unpickle(meta).get(key)
    if names is None:
        return None
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]


# ------------------------------------------------------------------ folders

def _load_folder(path: Path) -> Dataset:
    """Load a CIFAR folder, or the single dataset found inside ``path``."""
    if (path / "test_batch").is_file():
        return _load_cifar_file(path / "test_batch")
    if (path / "test").is_file() and (path / "meta").is_file():
        return _load_cifar_file(path / "test")
    found = _find_datasets(path)
    if len(found) == 1:
        return load_dataset(found[0])
    if not found:
        raise _error(path, "no dataset found in folder")
    names = ", ".join(str(f.relative_to(path)) for f in found)
    raise _error(path, f"folder holds several datasets ({names}); pass one of them")


def _find_datasets(path: Path) -> list[Path]:
    """Dataset folders/files directly in ``path`` or one level down (Keras 3 '-target')."""
    found = []
    for folder in (path, *sorted(p for p in path.iterdir() if p.is_dir())):
        for name in (_CIFAR10_DIR, _CIFAR100_DIR):
            if (folder / name).is_dir():
                found.append(folder / name)
    if (path / "mnist.npz").is_file():
        found.append(path / "mnist.npz")
    return found


# --------------------------------------------------------------- validation

def _make(source: Path, x: np.ndarray, y: object, classes: object) -> Dataset:
    """Validate and normalise raw arrays into a Dataset."""
    x = _images(source, np.asarray(x))
    y = _labels(source, np.asarray(y), len(x))
    names = _class_names(source, classes, y)
    return Dataset(x=x, y=y, classes=names, source=str(source))


def _images(source: Path, x: np.ndarray) -> np.ndarray:
    """Return x as float32 NHWC, scaling uint8 to [0, 1]."""
    if x.ndim == 3:
        x = x[..., np.newaxis]
    if x.ndim != 4:
        raise _error(source, f"x must be N x H x W x C (or N x H x W), found shape {x.shape}")
    if len(x) == 0:
        raise _error(source, "x holds no images (N = 0)")
    if x.dtype == np.uint8:
        return x.astype(np.float32) / np.float32(255.0)
    if not np.issubdtype(x.dtype, np.floating):
        raise _error(source, f"x has dtype {x.dtype}; expected uint8 or float")
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise _error(source, "x contains NaN or infinite values")
    return x


def _labels(source: Path, y: np.ndarray, n: int) -> np.ndarray:
    """Return y as int64 of shape (n,), rejecting bad labels."""
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or len(y) != n:
        raise _error(source, f"y has shape {y.shape} but x holds {n} images; expected ({n},)")
    if y.dtype == bool or not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
        raise _error(source, f"y has dtype {y.dtype}; expected integer labels")
    if np.issubdtype(y.dtype, np.floating) and not (np.isfinite(y).all() and (y == np.round(y)).all()):
        raise _error(source, "y holds non-integer labels")
    if (y < 0).any():
        raise _error(source, f"y holds negative labels (min {y.min()})")
    return y.astype(np.int64)


def _class_names(source: Path, classes: object, y: np.ndarray) -> tuple[str, ...] | None:
    """Return class names as a tuple of str, checking they cover every label."""
    if classes is None:
        return None
    names = tuple(str(c) for c in np.asarray(classes).reshape(-1))
    if y.max() >= len(names):
        raise _error(source, f"label {y.max()} has no class name ({len(names)} classes)")
    return names
