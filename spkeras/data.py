"""Image datasets for evaluation and calibration.

``load_dataset(path)`` accepts:

* a ``.npz`` archive with ``x``/``y`` (optionally ``classes``), or the Keras
  MNIST keys ``x_test``/``y_test`` and ``x_train``/``y_train`` (test wins);
* a CIFAR-10 python-batch folder (``cifar-10-batches-py``) or one batch file
  inside it; a CIFAR-100 folder (``cifar-100-python``, fine labels) or its
  ``test``/``train`` file;
* a ``.tar.gz`` CIFAR-10/100 python archive, as ``keras.datasets`` downloads it;
* a folder of images in class subfolders (``root/<class>/<image>.png|jpg``, the
  layout of torchvision's ImageFolder and Keras' ``image_dataset_from_directory``;
  classes in sorted order, decoded with Pillow, resized only when ``image_size``
  is given);
* a folder holding ``x.npy`` and ``y.npy`` (other names with ``keys``);
* a folder holding exactly one of the above, such as ``~/.keras/datasets``.

``keys=(X, Y)`` names the image and label arrays of an ``.npz`` or ``.npy`` pair.
In memory (:func:`dataset_from`): a Dataset, an ``(x, y)`` pair or a dict with
``x``/``y`` of numpy arrays or torch tensors, a bare image array (calibration
only: no labels), a ``torch.utils.data.Dataset`` of ``(image, label)`` items or a
``DataLoader`` of such batches.

Images come back as float32 N x H x W x C (or N x C x H x W where ``layout``
says so or the model's input shape shows it: :attr:`Dataset.layout`); uint8
sources are scaled to [0, 1], float sources are kept as they are. ``.npz`` files are always read with
``allow_pickle=False``. CIFAR batches are pickles, so they are read with an
unpickler that refuses every global except the four numpy names an ndarray
needs.
"""

from __future__ import annotations

import dataclasses
import io
import os
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import SpkerasError

__all__ = ["DataError", "Dataset", "dataset_from", "load_dataset", "SUPPORTED"]

SUPPORTED = (".npz with x/y (uint8 NHWC or float), MNIST .npz, a folder with x.npy/y.npy, "
             "CIFAR-10/100 python batch folders or .tar.gz archives, image folders in class subfolders")
LAYOUTS = ("auto", "nhwc", "nchw")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")

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
    """Images ``x`` (float32, 4-D), labels ``y`` (int64), optional class names.

    ``layout``: ``nhwc`` (channels last, what the loaders give), ``nchw`` (channels first), or
    ``auto``: whichever of the two matches the model's input shape (an error if both do).
    ``labelled``: False for images given without labels (calibration only; ``y`` is zeros).
    """

    x: np.ndarray
    y: np.ndarray
    classes: tuple[str, ...] | None
    source: str
    layout: str = "nhwc"
    labelled: bool = True

    def __post_init__(self) -> None:
        """Check the invariants the rest of the package relies on."""
        if self.layout not in LAYOUTS:
            raise _error(self.source, f"layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}", False)
        if not isinstance(self.x, np.ndarray) or self.x.dtype != np.float32 or self.x.ndim != 4:
            raise _error(self.source, "x must be a float32 N x H x W x C (or N x C x H x W) array", False)
        if not isinstance(self.y, np.ndarray) or self.y.dtype != np.int64 or self.y.shape != (len(self.x),):
            raise _error(self.source, f"y must be an int64 array of shape ({len(self.x)},)", False)
        if len(self.x) == 0:
            raise _error(self.source, "dataset holds no images", False)

    def __len__(self) -> int:
        """Number of images."""
        return len(self.x)

    def at_most(self, n: int | None) -> "Dataset":
        """The first ``n`` images, or all of them when there are fewer or ``n`` is None (a
        calibration budget, unlike :meth:`take`, which refuses more than there are)."""
        return self.take(min(n, len(self)) if n else None)

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


def load_dataset(path: str | os.PathLike, n: int | None = None, keys: tuple[str, str] | None = None,
                 image_size: tuple[int, int] | None = None, layout: str | None = None) -> Dataset:
    """Load the dataset at ``path`` (see the module docstring) and keep the first ``n``.

    ``keys`` names the image and label arrays of an ``.npz`` or ``.npy`` pair; ``image_size``
    (H, W) resizes the images of an image folder; ``layout`` says how arrays are laid out
    (``nhwc``, ``nchw``, or ``auto``: decided against the model; default ``auto`` for ``.npz``
    and ``.npy`` arrays, ``nhwc`` for the formats that are channels-last by definition)."""
    p = Path(os.path.expanduser(os.fspath(path)))
    if not p.exists():
        raise _error(p, "no such file or folder")
    if p.is_dir():
        ds = _load_folder(p, keys, image_size)
    elif p.suffix.lower() == ".npz":
        ds = _load_npz(p, keys)
    elif p.name.endswith((".tar.gz", ".tgz")):
        ds = _load_cifar_archive(p)
    else:
        ds = _load_cifar_file(p)
    return (dataclasses.replace(ds, layout=layout) if layout else ds).take(n)


# ----------------------------------------------------------------- .npz files

def _load_npz(path: Path, keys: tuple[str, str] | None = None) -> Dataset:
    """Load an ``.npz`` archive with x/y, x_test/y_test, x_train/y_train, or the ``keys`` given."""
    try:
        with open(path, "rb") as fh:  # our handle, so it closes even when np.load fails
            archive = np.load(fh, allow_pickle=False)
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise _error(path, "not an .npz archive (plain .npy data)")
            with archive:
                x, y, classes = _npz_arrays(path, archive, keys)
    except DataError:
        raise
    except Exception as exc:  # corrupt files: zipfile, zlib, ValueError, OSError...
        raise _error(path, f"cannot read .npz archive ({type(exc).__name__}: {exc})") from None
    return _make(path, x, y, classes, layout="auto")


def _npz_arrays(path: Path, archive, wanted: tuple[str, str] | None = None) -> tuple[np.ndarray, np.ndarray, object]:
    """Pick the x/y (and classes) arrays out of an open archive."""
    keys = set(archive.files)
    for kx, ky in [tuple(wanted)] if wanted else _NPZ_KEY_PAIRS:
        if kx in keys and ky in keys:
            classes = archive["classes"] if "classes" in keys else None
            return archive[kx], archive[ky], classes
    found = ", ".join(sorted(keys)) or "none"
    asked = f"{wanted[0]}/{wanted[1]}" if wanted else "x/y"
    raise _error(path, f"no {asked} arrays in archive (keys: {found}; name others with --data-keys X,Y)")


def _load_npy_pair(folder: Path, keys: tuple[str, str]) -> Dataset:
    """Images and labels from two ``.npy`` files in ``folder`` (no pickle)."""
    arrays = []
    for key in keys:
        try:
            arrays.append(np.load(folder / f"{key}.npy", allow_pickle=False))
        except Exception as exc:
            raise _error(folder / f"{key}.npy", f"cannot read .npy array ({type(exc).__name__}: {exc})") from None
    return _make(folder, arrays[0], arrays[1], None, layout="auto")


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


def _unpickle(path: Path, data: bytes | None = None) -> dict:
    """Read a CIFAR python batch (the file, or ``data`` read from it) with the restricted unpickler."""
    try:
        data = path.read_bytes() if data is None else data
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
    meta = path.parent / ("batches.meta" if kind == "cifar10" else "meta")
    return _cifar_dataset(path, kind, _unpickle(path), _unpickle(meta) if meta.is_file() else None)


def _cifar_dataset(source: Path, kind: str, batch: dict, meta: dict | None) -> Dataset:
    """A Dataset from an unpickled CIFAR-10 or CIFAR-100 (fine labels) batch and its meta dict."""
    label_key = b"labels" if kind == "cifar10" else b"fine_labels"
    name_key = b"label_names" if kind == "cifar10" else b"fine_label_names"
    if b"data" not in batch or label_key not in batch:
        raise _error(source, f"CIFAR batch lacks b'data' or {label_key!r}")
    x = _chw_rows_to_nhwc(source, batch[b"data"])
    names = None if meta is None or meta.get(name_key) is None else [
        n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in meta[name_key]]
    return _make(source, x, batch[label_key], names)


# archive member holding the test batch, and its meta file, by kind
_CIFAR_ARCHIVE_MEMBERS = {"cifar10": (f"{_CIFAR10_DIR}/test_batch", f"{_CIFAR10_DIR}/batches.meta"),
                          "cifar100": (f"{_CIFAR100_DIR}/test", f"{_CIFAR100_DIR}/meta")}


def _load_cifar_archive(path: Path) -> Dataset:
    """The test batch of a CIFAR-10/100 python ``.tar.gz`` archive, read without extracting it."""
    try:
        with tarfile.open(path, "r:gz") as archive:
            names = set(archive.getnames())
            kind = next((k for k, (batch, _) in _CIFAR_ARCHIVE_MEMBERS.items() if batch in names), None)
            if kind is None:
                raise _error(path, f"not a CIFAR python archive (no {_CIFAR10_DIR}/test_batch or "
                                   f"{_CIFAR100_DIR}/test inside)")
            batch_name, meta_name = _CIFAR_ARCHIVE_MEMBERS[kind]
            batch = _unpickle(path, archive.extractfile(batch_name).read())
            meta = _unpickle(path, archive.extractfile(meta_name).read()) if meta_name in names else None
    except DataError:
        raise
    except Exception as exc:  # tarfile.ReadError, EOFError, zlib errors…
        raise _error(path, f"cannot read archive ({type(exc).__name__}: {exc})") from None
    return _cifar_dataset(path, kind, batch, meta)


def _chw_rows_to_nhwc(path: Path, data: object) -> np.ndarray:
    """Turn N x 3072 row-major CHW rows into N x 32 x 32 x 3."""
    data = np.asarray(data)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise _error(path, f"CIFAR data must be N x 3072, found shape {data.shape}")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


# ------------------------------------------------------------------ folders

def _load_folder(path: Path, keys: tuple[str, str] | None = None, image_size: tuple[int, int] | None = None) -> Dataset:
    """Load a CIFAR folder, an .npy pair, an image folder, or the single dataset inside ``path``."""
    if (path / "test_batch").is_file():
        return _load_cifar_file(path / "test_batch")
    if (path / "test").is_file() and (path / "meta").is_file():
        return _load_cifar_file(path / "test")
    pair = tuple(keys) if keys else ("x", "y")
    if all((path / f"{key}.npy").is_file() for key in pair):
        return _load_npy_pair(path, pair)
    if _class_folders(path):
        return _load_image_folder(path, image_size)
    found = _find_datasets(path)
    if len(found) == 1:
        return load_dataset(found[0])
    if not found:
        raise _error(path, "no dataset found in folder")
    names = ", ".join(str(f.relative_to(path)) for f in found)
    raise _error(path, f"folder holds several datasets ({names}); pass one of them")


def _find_datasets(path: Path) -> list[Path]:
    """Dataset folders/files directly in ``path`` or one level down (Keras 3 '-target'); a CIFAR
    archive counts where its extracted folder is absent."""
    found = []
    for folder in (path, *sorted(p for p in path.iterdir() if p.is_dir())):
        for name in (_CIFAR10_DIR, _CIFAR100_DIR):
            if (folder / name).is_dir():
                found.append(folder / name)
            elif (folder / f"{name.replace('-batches', '')}.tar.gz").is_file():
                found.append(folder / f"{name.replace('-batches', '')}.tar.gz")
    if (path / "mnist.npz").is_file():
        found.append(path / "mnist.npz")
    return found


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _class_folders(path: Path) -> list[Path]:
    """The subfolders of ``path`` that hold images, in sorted order (one class each)."""
    return sorted(p for p in path.iterdir() if p.is_dir() and _image_files(p))


def _load_image_folder(path: Path, image_size: tuple[int, int] | None) -> Dataset:
    """Images in class subfolders (ImageFolder layout), decoded with Pillow; labels are the
    positions of their folders in sorted order. All images must share one size unless
    ``image_size`` (H, W) resizes them (bilinear)."""
    from PIL import Image, UnidentifiedImageError

    classes = _class_folders(path)
    files = [(f, label) for label, folder in enumerate(classes) for f in _image_files(folder)]
    pictures = []
    for file, _ in files:
        try:
            with Image.open(file) as image:
                image.load()
                pictures.append(image.copy())
        except (OSError, UnidentifiedImageError) as exc:
            raise _error(file, f"cannot decode image ({type(exc).__name__}: {exc})") from None
    mode = "L" if all(p.mode in ("L", "1", "I;16") for p in pictures) else "RGB"
    if image_size is not None:
        pictures = [p.resize((image_size[1], image_size[0]), Image.BILINEAR) for p in pictures]
    sizes = {p.size for p in pictures}
    if len(sizes) > 1:
        (w1, h1), (w2, h2) = sorted(sizes)[:2]
        raise _error(path, f"images differ in size ({h1}x{w1} and {h2}x{w2}); give image_size (--image-size H,W) "
                           "to resize them", False)
    x = np.stack([np.asarray(p.convert(mode), dtype=np.uint8) for p in pictures])
    return _make(path, x, np.array([label for _, label in files]), [c.name for c in classes])


# --------------------------------------------------------------- validation

def _make(source: Path, x: np.ndarray, y: object, classes: object, layout: str = "nhwc") -> Dataset:
    """Validate and normalise raw arrays into a Dataset."""
    x = _images(source, np.asarray(x))
    y = _labels(source, np.asarray(y), len(x))
    names = _class_names(source, classes, y)
    return Dataset(x=x, y=y, classes=names, source=str(source), layout=layout)


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


# ---------------------------------------------------------------- in memory

IN_MEMORY = ("a Dataset, a path, an (x, y) pair or {'x': …, 'y': …} dict of arrays or tensors, a bare image array "
             "(calibration only), a torch Dataset of (image, label) items or a DataLoader of such batches")


def dataset_from(data, n: int | None = None, layout: str = "auto", **load_options) -> Dataset:
    """A Dataset from any accepted form (see the module docstring); arrays and tensors of any
    layout (``auto``: decided against the model; ``nhwc``/``nchw`` to say which)."""
    if isinstance(data, Dataset):
        return data.take(n)
    if isinstance(data, (str, os.PathLike)):
        return load_dataset(data, n, layout=None if layout == "auto" else layout, **load_options)
    x, y = _in_memory_arrays(data, n)
    source = type(data).__name__
    images = _images(source, x)
    labelled = y is not None
    labels = _labels(source, y, len(images)) if labelled else np.zeros(len(images), dtype=np.int64)
    return Dataset(x=images, y=labels, classes=None, source=f"in-memory {source}", layout=layout,
                   labelled=labelled).take(n)


def _in_memory_arrays(data, n: int | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Images and labels (None when not given) as numpy arrays, from the in-memory forms."""
    if isinstance(data, dict):
        if "x" not in data:
            raise DataError(f"dict data needs key 'x' (and 'y' for labels); it has {', '.join(map(str, data)) or 'none'}")
        return _numpy(data["x"]), _numpy(data["y"]) if "y" in data else None
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return _numpy(data[0]), _numpy(data[1])
    if isinstance(data, np.ndarray) or type(data).__module__.startswith("torch") and hasattr(data, "numpy"):
        return _numpy(data), None
    if _is_torch_data(data):
        return _from_torch_data(data, n)
    raise DataError(f"cannot use a {type(data).__name__} as data; expected {IN_MEMORY}")


def _numpy(value) -> np.ndarray:
    """A numpy array from an array-like or a (CPU or GPU) torch tensor."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _is_torch_data(data) -> bool:
    from torch.utils.data import DataLoader, Dataset as TorchDataset

    return isinstance(data, (DataLoader, TorchDataset))


def _from_torch_data(data, n: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Stack the (image, label) items of a torch Dataset, or the (images, labels) batches of a
    DataLoader, stopping after ``n`` images."""
    from torch.utils.data import DataLoader

    batched = isinstance(data, DataLoader) and data.batch_size is not None
    images, labels, count = [], [], 0
    for item in data:
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise DataError(f"a {type(data).__name__} must yield (image, label) pairs; got {type(item).__name__}")
        x, y = _numpy(item[0]), _numpy(item[1])
        images.append(x if batched else x[np.newaxis])
        labels.append(np.reshape(y, (-1,)))
        count += len(images[-1])
        if n is not None and count >= n:
            break
    if not images:
        raise DataError(f"the {type(data).__name__} yields no images")
    return np.concatenate(images), np.concatenate(labels)
