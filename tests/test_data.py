"""Tests for spkeras.data: npz, MNIST and CIFAR-10/100 loading, and its errors."""

import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the package is not installed in the venv
    sys.path.insert(0, str(ROOT))

from spkeras.data import DataError, Dataset, load_dataset  # noqa: E402

SHARED = ROOT.parent / "shared"
RNG = np.random.default_rng(0)


# ------------------------------------------------------------------ helpers

def save_npz(path, **arrays):
    """Write an uncompressed npz and return its path."""
    np.savez(path, **arrays)
    return path


def nhwc_to_rows(x):
    """Official CIFAR layout: N x 3072 rows, each CHW in row-major order."""
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)).reshape(len(x), 3072)


def dump(path, obj, protocol=3):
    """Pickle ``obj`` to ``path`` (protocol 3: bytes stay bytes, as in the official files)."""
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


def make_cifar10(root, n_test=4, n_train=3):
    """Fake cifar-10-batches-py folder; returns (folder, test NHWC, test labels)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    x = RNG.integers(0, 256, size=(n_test, 32, 32, 3), dtype=np.uint8)
    y = [int(v) for v in RNG.integers(0, 10, size=n_test)]
    dump(folder / "test_batch", {b"batch_label": b"testing batch 1 of 1",
                                 b"data": nhwc_to_rows(x), b"labels": y,
                                 b"filenames": [b"f%d.png" % i for i in range(n_test)]})
    for i in range(1, 6):
        xt = np.full((n_train, 32, 32, 3), i, dtype=np.uint8)
        dump(folder / f"data_batch_{i}", {b"data": nhwc_to_rows(xt), b"labels": [i] * n_train})
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer",
             b"dog", b"frog", b"horse", b"ship", b"truck"]
    dump(folder / "batches.meta", {b"label_names": names, b"num_vis": 3072})
    return folder, x, y


def make_cifar100(root, n=5):
    """Fake cifar-100-python folder; returns (folder, test NHWC, fine labels)."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    x = RNG.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    fine = [int(v) for v in RNG.integers(0, 100, size=n)]
    dump(folder / "test", {b"data": nhwc_to_rows(x), b"fine_labels": fine,
                           b"coarse_labels": [f // 5 for f in fine]})
    dump(folder / "train", {b"data": nhwc_to_rows(x[:2]), b"fine_labels": fine[:2],
                            b"coarse_labels": [0, 0]})
    dump(folder / "meta", {b"fine_label_names": [b"c%d" % i for i in range(100)],
                           b"coarse_label_names": [b"s%d" % i for i in range(20)]})
    return folder, x, fine


def assert_one_line_error(excinfo, *words):
    """The DataError message is a single line and mentions every word."""
    msg = str(excinfo.value)
    assert "\n" not in msg and msg.strip() == msg
    for word in words:
        assert word.lower() in msg.lower(), (word, msg)


# --------------------------------------------------------------------- .npz

def test_uint8_npz_is_scaled_to_unit_range(tmp_path):
    x = RNG.integers(0, 256, size=(6, 5, 4, 3), dtype=np.uint8)
    x[0, 0, 0, 0], x[0, 0, 0, 1] = 0, 255
    y = np.arange(6, dtype=np.uint8) % 3
    p = save_npz(tmp_path / "d.npz", x=x, y=y, classes=np.array(["a", "b", "c"]))
    ds = load_dataset(p)
    assert ds.x.dtype == np.float32 and ds.x.shape == (6, 5, 4, 3)
    assert ds.x.min() == 0.0 and ds.x.max() == 1.0
    np.testing.assert_allclose(ds.x, x / 255.0, rtol=1e-6)
    assert ds.y.dtype == np.int64 and ds.y.tolist() == y.tolist()
    assert ds.classes == ("a", "b", "c")
    assert ds.source == str(p)


def test_float_npz_is_kept_as_is(tmp_path):
    x = (RNG.standard_normal((3, 4, 4, 2)) * 3).astype(np.float64)
    p = save_npz(tmp_path / "f.npz", x=x, y=np.array([0, 1, 2]))
    ds = load_dataset(p)
    assert ds.x.dtype == np.float32
    np.testing.assert_array_equal(ds.x, x.astype(np.float32))
    assert ds.classes is None


def test_path_may_be_a_pathlike_or_str_with_user(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    save_npz(tmp_path / "h.npz", x=np.zeros((2, 2, 2, 1), np.uint8), y=[0, 1])
    assert len(load_dataset("~/h.npz").x) == 2
    assert len(load_dataset(tmp_path / "h.npz").x) == 2


def test_mnist_style_npz_prefers_test_and_adds_channel(tmp_path):
    xtr = np.full((5, 28, 28), 255, np.uint8)
    xte = np.zeros((3, 28, 28), np.uint8)
    xte[1, 2, 3] = 51
    p = save_npz(tmp_path / "mnist.npz", x_train=xtr, y_train=np.arange(5),
                 x_test=xte, y_test=np.array([7, 8, 9], np.uint8))
    ds = load_dataset(p)
    assert ds.x.shape == (3, 28, 28, 1)
    assert ds.x[1, 2, 3, 0] == pytest.approx(0.2)
    assert ds.y.tolist() == [7, 8, 9]


def test_mnist_style_npz_train_only(tmp_path):
    p = save_npz(tmp_path / "tr.npz", x_train=np.ones((4, 6, 6), np.uint8),
                 y_train=np.arange(4))
    ds = load_dataset(p)
    assert ds.x.shape == (4, 6, 6, 1) and ds.y.tolist() == [0, 1, 2, 3]


def test_column_labels_are_flattened(tmp_path):
    p = save_npz(tmp_path / "c.npz", x=np.zeros((3, 2, 2, 3), np.uint8),
                 y=np.array([[1], [2], [0]]))
    assert load_dataset(p).y.tolist() == [1, 2, 0]


def test_load_dataset_n_takes_first_images(tmp_path):
    x = np.arange(5 * 2 * 2 * 1, dtype=np.float32).reshape(5, 2, 2, 1)
    p = save_npz(tmp_path / "n.npz", x=x, y=np.arange(5))
    ds = load_dataset(p, n=2)
    assert ds.x.shape[0] == 2 and ds.y.tolist() == [0, 1]
    np.testing.assert_array_equal(ds.x, x[:2])


# -------------------------------------------------------------------- CIFAR

def test_cifar10_folder_loads_test_batch_in_nhwc_order(tmp_path):
    folder, x, y = make_cifar10(tmp_path)
    ds = load_dataset(folder)
    assert ds.x.shape == (4, 32, 32, 3) and ds.x.dtype == np.float32
    np.testing.assert_array_equal(np.round(ds.x * 255).astype(np.uint8), x)
    assert ds.y.tolist() == y
    assert ds.classes[:3] == ("airplane", "automobile", "bird") and len(ds.classes) == 10
    assert "test_batch" in ds.source


def test_cifar10_pixel_order_of_a_known_image(tmp_path):
    folder, _, _ = make_cifar10(tmp_path, n_test=1)
    img = np.zeros((1, 32, 32, 3), np.uint8)
    img[0, 0, 1, 0] = 255   # red at row 0, column 1
    img[0, 2, 0, 1] = 255   # green at row 2, column 0
    img[0, 31, 30, 2] = 255  # blue near the bottom right
    rows = nhwc_to_rows(img)
    assert rows[0, 1] == 255 and rows[0, 1024 + 64] == 255 and rows[0, 2048 + 31 * 32 + 30] == 255
    dump(folder / "test_batch", {b"data": rows, b"labels": [3]})
    ds = load_dataset(folder)
    assert ds.x[0, 0, 1].tolist() == [1, 0, 0]
    assert ds.x[0, 2, 0].tolist() == [0, 1, 0]
    assert ds.x[0, 31, 30].tolist() == [0, 0, 1]
    assert ds.x.sum() == 3


def test_cifar10_specific_batch_file(tmp_path):
    folder, _, _ = make_cifar10(tmp_path, n_train=3)
    ds = load_dataset(folder / "data_batch_4")
    assert ds.y.tolist() == [4, 4, 4]
    assert np.allclose(ds.x, 4 / 255)
    assert ds.classes is not None and ds.classes[4] == "deer"


def test_cifar10_file_inside_folder_is_test_batch(tmp_path):
    folder, x, _ = make_cifar10(tmp_path)
    ds = load_dataset(folder / "test_batch", n=2)
    np.testing.assert_array_equal(np.round(ds.x * 255).astype(np.uint8), x[:2])


def test_cifar10_without_meta_has_no_classes(tmp_path):
    folder, _, _ = make_cifar10(tmp_path)
    (folder / "batches.meta").unlink()
    assert load_dataset(folder).classes is None


def test_cifar_pickled_with_legacy_numpy_core_name(tmp_path):
    """Official batches name numpy.core.multiarray._reconstruct; it must load."""
    folder, x, y = make_cifar10(tmp_path)
    blob = pickle.dumps({b"data": nhwc_to_rows(x), b"labels": y}, protocol=3)
    legacy = blob.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    assert b"numpy.core.multiarray\n_reconstruct\n" in legacy
    (folder / "test_batch").write_bytes(legacy)
    ds = load_dataset(folder)
    np.testing.assert_array_equal(np.round(ds.x * 255).astype(np.uint8), x)


def test_cifar100_folder_uses_fine_labels(tmp_path):
    folder, x, fine = make_cifar100(tmp_path)
    ds = load_dataset(folder)
    np.testing.assert_array_equal(np.round(ds.x * 255).astype(np.uint8), x)
    assert ds.y.tolist() == fine
    assert len(ds.classes) == 100 and ds.classes[7] == "c7"
    train = load_dataset(folder / "train")
    assert train.y.tolist() == fine[:2]


def test_keras_datasets_folder_with_one_dataset(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    datasets = tmp_path / ".keras" / "datasets"
    _, x, _ = make_cifar10(datasets)
    (datasets / "cifar-10-batches-py.tar.gz").write_bytes(b"not used")
    ds = load_dataset("~/.keras/datasets")
    np.testing.assert_array_equal(np.round(ds.x * 255).astype(np.uint8), x)
    assert len(load_dataset("~/.keras/datasets/cifar-10-batches-py").x) == 4


def test_keras3_target_layout(tmp_path):
    datasets = tmp_path / "datasets"
    _, _, fine = make_cifar100(datasets / "cifar-100-python-target")
    assert load_dataset(datasets).y.tolist() == fine


def test_folder_with_several_datasets_is_ambiguous(tmp_path):
    make_cifar10(tmp_path)
    make_cifar100(tmp_path)
    with pytest.raises(DataError) as e:
        load_dataset(tmp_path)
    assert_one_line_error(e, "several", "cifar-10-batches-py", "cifar-100-python")


# --------------------------------------------------------- pickle safety

class _WritesMarker:
    """Unpickling this object would create ``path`` (a visible side effect)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


class _RunsShell:
    """Unpickling this object would run a shell command."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


@pytest.mark.parametrize("payload, refused", [(_WritesMarker, "io.open"),
                                              (_RunsShell, "system")])
def test_malicious_cifar_pickle_is_refused(tmp_path, payload, refused):
    folder, _, _ = make_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    dump(folder / "test_batch", {b"data": payload(marker), b"labels": [0]})
    with pytest.raises(DataError) as e:
        load_dataset(folder)
    assert_one_line_error(e, "refused", refused)
    assert not marker.exists()


def test_malicious_meta_file_is_refused(tmp_path):
    folder, _, _ = make_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    dump(folder / "batches.meta", {b"label_names": _WritesMarker(marker)})
    with pytest.raises(DataError) as e:
        load_dataset(folder)
    assert_one_line_error(e, "refused", "batches.meta")
    assert not marker.exists()


def test_npz_with_object_array_is_refused(tmp_path):
    p = tmp_path / "obj.npz"
    np.savez(p, x=np.array([{"a": 1}], dtype=object), y=np.array([0]))
    with pytest.raises(DataError) as e:
        load_dataset(p)
    assert_one_line_error(e, "cannot read", "obj.npz")


def test_pickle_renamed_to_npz_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    p = tmp_path / "evil.npz"
    p.write_bytes(pickle.dumps(_WritesMarker(marker)))
    with pytest.raises(DataError) as e:
        load_dataset(p)
    assert_one_line_error(e, "evil.npz", "supported")
    assert not marker.exists()


# ------------------------------------------------------------ error cases

def _npz(tmp_path, name="bad.npz", **arrays):
    return save_npz(tmp_path / name, **arrays)


def _bad_cases(tmp_path):
    """(path, words the message must contain) for each bad input."""
    img = np.zeros((3, 4, 4, 1), np.uint8)
    nan = np.zeros((2, 2, 2, 1), np.float32)
    nan[0, 0, 0, 0] = np.nan
    inf = np.zeros((2, 2, 2, 1), np.float32)
    inf[1, 1, 1, 0] = np.inf
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 this is not really a zip archive")
    truncated = tmp_path / "truncated.npz"
    np.savez(truncated, x=img, y=[0, 1, 2])
    truncated.write_bytes(truncated.read_bytes()[:100])
    npy = tmp_path / "plain.npz"
    with open(npy, "wb") as f:
        np.save(f, img)
    unknown = tmp_path / "images.csv"
    unknown.write_text("1,2,3\n")
    return {
        "missing": (tmp_path / "nope.npz", ["no such file"]),
        "unknown extension": (unknown, ["unsupported", "images.csv"]),
        "no x/y": (_npz(tmp_path, "nokeys.npz", a=img, b=[1]), ["no x/y", "a, b"]),
        "corrupt": (corrupt, ["cannot read"]),
        "truncated": (truncated, ["cannot read"]),
        "npy as npz": (npy, ["not an .npz"]),
        "empty": (_npz(tmp_path, "empty.npz", x=np.zeros((0, 4, 4, 1), np.uint8),
                       y=np.zeros(0, np.int64)), ["no images"]),
        "y length": (_npz(tmp_path, "ylen.npz", x=img, y=[0, 1]), ["y has shape", "3 images"]),
        "negative label": (_npz(tmp_path, "neg.npz", x=img, y=[0, -1, 2]), ["negative"]),
        "not 4-D": (_npz(tmp_path, "dims.npz", x=np.zeros((3, 4), np.uint8), y=[0, 1, 2]),
                    ["n x h x w x c", "(3, 4)"]),
        "5-D": (_npz(tmp_path, "dims5.npz", x=np.zeros((3, 1, 2, 2, 1), np.uint8),
                     y=[0, 1, 2]), ["n x h x w x c"]),
        "nan": (_npz(tmp_path, "nan.npz", x=nan, y=[0, 1]), ["nan"]),
        "inf": (_npz(tmp_path, "inf.npz", x=inf, y=[0, 1]), ["infinite"]),
        "int16 x": (_npz(tmp_path, "i16.npz", x=img.astype(np.int16), y=[0, 1, 2]),
                    ["dtype int16"]),
        "float labels": (_npz(tmp_path, "fy.npz", x=img, y=[0.5, 1, 2]), ["non-integer"]),
        "label beyond classes": (_npz(tmp_path, "cls.npz", x=img, y=[0, 1, 5],
                                      classes=np.array(["a", "b"])), ["label 5"]),
        "empty folder": (tmp_path / "emptydir", ["no dataset found"]),
    }


@pytest.fixture
def bad_cases(tmp_path):
    (tmp_path / "emptydir").mkdir()
    return _bad_cases(tmp_path)


CASE_NAMES = ["missing", "unknown extension", "no x/y", "corrupt", "truncated", "npy as npz",
              "empty", "y length", "negative label", "not 4-D", "5-D", "nan", "inf",
              "int16 x", "float labels", "label beyond classes", "empty folder"]


@pytest.mark.parametrize("case", CASE_NAMES)
def test_bad_input_raises_one_line_data_error(bad_cases, case):
    path, words = bad_cases[case]
    with pytest.raises(DataError) as e:
        load_dataset(path)
    assert_one_line_error(e, path.name, "supported", ".npz with x/y", "CIFAR-10/100", *words)
    assert isinstance(e.value, ValueError)


def test_case_list_covers_every_case(tmp_path):
    (tmp_path / "emptydir").mkdir()
    assert sorted(_bad_cases(tmp_path)) == sorted(CASE_NAMES)


def test_cifar_batch_with_wrong_data_shape(tmp_path):
    folder, _, _ = make_cifar10(tmp_path)
    dump(folder / "test_batch", {b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]})
    with pytest.raises(DataError) as e:
        load_dataset(folder)
    assert_one_line_error(e, "n x 3072", "(2, 100)")


def test_cifar_batch_missing_labels(tmp_path):
    folder, _, _ = make_cifar10(tmp_path)
    dump(folder / "test_batch", {b"data": np.zeros((2, 3072), np.uint8)})
    with pytest.raises(DataError) as e:
        load_dataset(folder)
    assert_one_line_error(e, "labels")


def test_cifar_batch_label_count_mismatch(tmp_path):
    folder, _, _ = make_cifar10(tmp_path)
    dump(folder / "test_batch", {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]})
    with pytest.raises(DataError) as e:
        load_dataset(folder)
    assert_one_line_error(e, "y has shape")


def test_corrupt_cifar_batch(tmp_path):
    folder, _, _ = make_cifar10(tmp_path)
    (folder / "test_batch").write_bytes(b"\x80\x03garbage")
    with pytest.raises(DataError) as e:
        load_dataset(folder)
    assert_one_line_error(e, "cannot read cifar batch")


def test_meta_file_is_not_a_batch(tmp_path):
    folder, _, _ = make_cifar10(tmp_path)
    with pytest.raises(DataError) as e:
        load_dataset(folder / "batches.meta")
    assert_one_line_error(e, "meta file")


# -------------------------------------------------------------------- take

def _small(n=5):
    x = np.arange(n * 4, dtype=np.float32).reshape(n, 2, 2, 1)
    return Dataset(x=x, y=np.arange(n, dtype=np.int64), classes=None, source="mem")


def test_take_first_n_and_none():
    ds = _small()
    assert ds.take(None) is ds
    t = ds.take(3)
    assert t.y.tolist() == [0, 1, 2] and t.x.shape == (3, 2, 2, 1)
    np.testing.assert_array_equal(t.x, ds.x[:3])
    assert t.source == ds.source and t.classes == ds.classes
    assert ds.take(5).y.tolist() == [0, 1, 2, 3, 4]
    assert ds.take(np.int64(1)).y.tolist() == [0]


@pytest.mark.parametrize("n", [0, -1, 2.5, True, "3"])
def test_take_rejects_bad_n(n):
    with pytest.raises(DataError) as e:
        _small().take(n)
    assert_one_line_error(e, "n must be")


def test_take_more_than_available():
    with pytest.raises(DataError) as e:
        _small().take(6)
    assert_one_line_error(e, "asked for 6", "only 5")


def test_load_dataset_n_too_large(tmp_path):
    p = save_npz(tmp_path / "s.npz", x=np.zeros((2, 2, 2, 1), np.uint8), y=[0, 1])
    with pytest.raises(DataError) as e:
        load_dataset(p, n=3)
    assert_one_line_error(e, "asked for 3", "only 2")


def test_dataset_is_frozen():
    ds = _small()
    with pytest.raises(AttributeError):
        ds.x = ds.x * 2


# ------------------------------------------------------------- real data

@pytest.mark.skipif(not SHARED.is_dir(), reason="shared data folder absent")
def test_real_mnist_test_set():
    ds = load_dataset(SHARED / "data" / "mnist_test.npz")
    assert ds.x.shape == (10000, 28, 28, 1) and ds.x.dtype == np.float32
    assert ds.x.min() == 0.0 and ds.x.max() == 1.0
    assert ds.y.shape == (10000,) and ds.y.dtype == np.int64
    assert set(ds.y.tolist()) == set(range(10))
    assert ds.classes is not None and len(ds.classes) == 10


def _as_python2_pickle(blob):
    """Rewrite a protocol-3 pickle the way Python 2's cPickle wrote CIFAR: str, not bytes."""
    import pickletools
    out, last = bytearray(b"\x80\x02"), 2
    swap = {"SHORT_BINBYTES": b"U", "BINBYTES": b"T", "BINUNICODE": b"T"}
    for op, _, pos in pickletools.genops(blob):
        if op.name in swap:
            out += blob[last:pos] + swap[op.name]
            last = pos + 1
    out += blob[last:]
    return bytes(out).replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")


def test_cifar_batch_written_like_python2(tmp_path):
    """The official files are Python 2 pickles: str payloads, numpy.core names."""
    folder, x, y = make_cifar10(tmp_path)
    blob = _as_python2_pickle(pickle.dumps({b"data": nhwc_to_rows(x), b"labels": y}, protocol=3))
    assert b"numpy.core.multiarray\n" in blob and blob[:2] == b"\x80\x02"
    (folder / "test_batch").write_bytes(blob)
    meta = _as_python2_pickle(pickle.dumps({b"label_names": [b"a%d" % i for i in range(10)]},
                                           protocol=3))
    (folder / "batches.meta").write_bytes(meta)
    ds = load_dataset(folder)
    np.testing.assert_array_equal(np.round(ds.x * 255).astype(np.uint8), x)
    assert ds.y.tolist() == y and ds.classes[9] == "a9"
