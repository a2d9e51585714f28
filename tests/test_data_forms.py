"""Every data form a user may bring: image folders (written here with Pillow), .npy pairs, .npz
with other keys, channels-first arrays, torch Datasets and DataLoaders, numpy arrays, a CIFAR-100
archive as keras.datasets leaves it; and one clear line for anything else."""

import io
import pickle
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from spkeras import api
from spkeras.cli import main
from spkeras.data import DataError, dataset_from, load_dataset
from spkeras.evaluation import checked_images, images_and_labels
from tests import helpers

RNG = np.random.default_rng(0)


def graph_for(shape):
    """A small CNN whose input is (C, H, W) = shape."""
    return helpers.chain_cnn(dtype=torch.float32, channels=shape[0], size=shape[1])


def write_image_folder(root, sizes=((9, 9),) * 3, mode="RGB"):
    """root/<class>/<n>.png, classes 'cat' and 'ant' (so sorted order differs from writing order)."""
    pixels = {}
    for label, name in enumerate(("cat", "ant")):
        (root / name).mkdir(parents=True)
        for k, (h, w) in enumerate(sizes):
            channels = (h, w, 3) if mode == "RGB" else (h, w)
            array = RNG.integers(0, 256, channels, dtype=np.uint8)
            Image.fromarray(array, mode).save(root / name / f"{k}.png")
            pixels[(name, k)] = array
    (root / "ant" / "notes.txt").write_text("not an image")
    return pixels


def test_image_folder_in_class_subfolders(tmp_path):
    pixels = write_image_folder(tmp_path / "images")
    data = load_dataset(tmp_path / "images")
    assert data.classes == ("ant", "cat") and data.y.tolist() == [0, 0, 0, 1, 1, 1]
    assert data.x.shape == (6, 9, 9, 3) and data.layout == "nhwc"
    np.testing.assert_array_equal(data.x[3], pixels[("cat", 0)].astype(np.float32) / 255)
    assert checked_images(data, graph_for((3, 9, 9))).shape == (6, 3, 9, 9)


def test_grayscale_image_folder_has_one_channel(tmp_path):
    write_image_folder(tmp_path / "gray", mode="L")
    assert load_dataset(tmp_path / "gray").x.shape == (6, 9, 9, 1)


def test_image_folder_of_mixed_sizes_is_resized_only_when_asked(tmp_path):
    write_image_folder(tmp_path / "mixed", sizes=((9, 9), (12, 10)))
    with pytest.raises(DataError, match="images differ in size.*--image-size"):
        load_dataset(tmp_path / "mixed")
    assert load_dataset(tmp_path / "mixed", image_size=(9, 9)).x.shape == (4, 9, 9, 3)


def test_corrupt_image_is_named(tmp_path):
    write_image_folder(tmp_path / "bad")
    (tmp_path / "bad" / "cat" / "9.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="9.png: cannot decode image"):
        load_dataset(tmp_path / "bad")


def test_npy_pair_and_npz_with_other_keys(tmp_path):
    x = RNG.integers(0, 256, (5, 9, 9, 3), dtype=np.uint8)
    y = np.arange(5) % 2
    (tmp_path / "pair").mkdir()
    np.save(tmp_path / "pair" / "x.npy", x)
    np.save(tmp_path / "pair" / "y.npy", y)
    np.save(tmp_path / "pair" / "images.npy", x)
    np.save(tmp_path / "pair" / "labels.npy", y)
    for data in (load_dataset(tmp_path / "pair"), load_dataset(tmp_path / "pair", keys=("images", "labels"))):
        np.testing.assert_array_equal(data.x, x.astype(np.float32) / 255)
        assert data.y.tolist() == y.tolist()
    np.savez(tmp_path / "other.npz", images=x, labels=y)
    with pytest.raises(DataError, match="no x/y arrays.*--data-keys"):
        load_dataset(tmp_path / "other.npz")
    assert load_dataset(tmp_path / "other.npz", keys=("images", "labels")).y.tolist() == y.tolist()


def test_channels_first_arrays_are_detected_against_the_model(tmp_path):
    x = RNG.random((4, 3, 9, 9), dtype=np.float32)
    graph = graph_for((3, 9, 9))
    np.savez(tmp_path / "nchw.npz", x=x, y=np.zeros(4, dtype=np.int64))
    for data in (load_dataset(tmp_path / "nchw.npz"), dataset_from((x, np.zeros(4)))):
        assert data.layout == "auto"
        assert torch.equal(checked_images(data, graph), torch.from_numpy(x))
    channels_last = x.transpose(0, 2, 3, 1).copy()
    assert torch.equal(checked_images(dataset_from((channels_last, np.zeros(4))), graph), torch.from_numpy(x))
    with pytest.raises(DataError, match=r"\(H, W, C\) but the model expects"):
        checked_images(dataset_from((x, np.zeros(4)), layout="nhwc"), graph)


def test_ambiguous_layout_asks_which():
    cube = RNG.random((2, 3, 3, 3), dtype=np.float32)
    graph = helpers.mlp(dtype=torch.float32, sizes=(27, 4, 3))
    graph.input.shape = (3, 3, 3)   # only the shape matters here
    with pytest.raises(DataError, match="channels-first and channels-last; say which"):
        checked_images(dataset_from((cube, np.zeros(2))), graph)
    assert checked_images(dataset_from((cube, np.zeros(2)), layout="nchw"), graph).shape == (2, 3, 3, 3)


def test_torch_dataset_dataloader_dict_tensors_and_bare_arrays():
    x = torch.rand(10, 3, 9, 9)
    y = torch.arange(10) % 3
    expected = dataset_from((x.numpy(), y.numpy()))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)
    for form in (torch.utils.data.TensorDataset(x, y), loader, {"x": x, "y": y}, (x, y), [x.numpy(), y.numpy()]):
        data = dataset_from(form)
        np.testing.assert_array_equal(data.x, expected.x)
        assert data.y.tolist() == y.tolist() and data.labelled, type(form).__name__
    assert len(dataset_from(loader, n=5)) == 5
    bare = dataset_from(x)
    assert not bare.labelled
    graph = graph_for((3, 9, 9))
    assert checked_images(bare, graph).shape == (10, 3, 9, 9)       # fine for calibration
    with pytest.raises(DataError, match="calibration only"):
        images_and_labels(bare, graph)


@pytest.mark.parametrize("thing", [3.5, "not/a/path/at/all.npz", {"images": np.zeros(3)}, object()])
def test_anything_else_is_one_line(thing):
    with pytest.raises(DataError) as caught:
        dataset_from(thing)
    assert "\n" not in str(caught.value)


def cifar_pickle(obj) -> bytes:
    return pickle.dumps(obj, protocol=3)   # bytes stay bytes, as in the official files


def test_cifar100_archive_as_keras_datasets_leaves_it(tmp_path):
    data = RNG.integers(0, 256, (4, 3072), dtype=np.uint8)
    members = {"cifar-100-python/test": cifar_pickle({b"data": data, b"fine_labels": [3, 1, 0, 2]}),
               "cifar-100-python/meta": cifar_pickle({b"fine_label_names": [b"a", b"b", b"c", b"d"]})}
    folder = tmp_path / "datasets"
    folder.mkdir()
    with tarfile.open(folder / "cifar-100-python.tar.gz", "w:gz") as archive:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    for dataset in (load_dataset(folder / "cifar-100-python.tar.gz"), load_dataset(folder)):
        assert dataset.y.tolist() == [3, 1, 0, 2] and dataset.classes == ("a", "b", "c", "d")
        np.testing.assert_array_equal(dataset.x[1], data[1].reshape(3, 32, 32).transpose(1, 2, 0) / np.float32(255))


def test_cli_reads_an_image_folder_with_its_options(tmp_path, capsys):
    from spkeras.demo import asset

    root = tmp_path / "digits"
    digits = load_dataset(asset("mnist_test.npz"), n=12)
    for k, (image, label) in enumerate(zip(digits.x, digits.y)):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray((image[..., 0] * 255).round().astype(np.uint8), "L").resize((20, 20)).save(root / str(label) / f"{k}.png")
    args = ["evaluate", asset("mnist_cnn.keras"), "--data", str(root), "--calib", asset("mnist_calib.npz"),
            "--calib-n", "50", "--timesteps", "4", "--method", "rueckauer2017", "--image-size", "28,28", "--quiet"]
    assert main(args) == 0
    assert "n=12" in capsys.readouterr().out
    assert main(args[:-3] + ["--quiet"]) == 2   # 20 x 20 images, not resized
    error = capsys.readouterr().err
    assert "model expects (1, 28, 28)" in error and error.count("\n") == 1


def test_api_takes_input_shape_for_a_torch_module():
    module = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                 torch.nn.Linear(4 * 7 * 7, 3))
    x, y = torch.rand(20, 1, 9, 9), torch.arange(20) % 3
    net = api.convert(module, (x, y), input_shape=(1, 9, 9), timesteps=8)
    result = api.evaluate(module, (x, y), calibration=(x, y), input_shape=(1, 9, 9), timesteps=8)
    assert net.graph.input.shape == (1, 9, 9) and result.n == 20


def test_readme_python_api_with_a_torch_module_runs_verbatim(capsys):
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = [b.split("```", 1)[0] for b in readme.split("```python\n")[1:]]
    block = next(b for b in blocks if "input_shape=(1, 28, 28)" in b)
    exec(compile(block, "README.md", "exec"), {})
    printed = capsys.readouterr().out.split()
    assert len(printed) == 2 and all(0 <= float(v) <= 1 for v in printed)
