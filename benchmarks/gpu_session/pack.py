"""Pack the shared model and data small enough for the device transfer (lossless), and unpack there.

python pack.py pack SRC_SHARED DEST      |   python pack.py unpack DEST OUT_SHARED
"""
import io, json, lzma, sys, zipfile
from pathlib import Path
import numpy as np


def shuffle_compress(raw: np.ndarray) -> bytes:
    planes = raw.view(np.uint8).reshape(-1, raw.dtype.itemsize).T.copy()
    return b"".join(len(c).to_bytes(8, "little") + c for c in (lzma.compress(p.tobytes(), preset=6) for p in planes))


def shuffle_decompress(blob: bytes, dtype, count: int) -> np.ndarray:
    itemsize = np.dtype(dtype).itemsize
    planes, pos = [], 0
    for _ in range(itemsize):
        size = int.from_bytes(blob[pos:pos + 8], "little"); pos += 8
        planes.append(np.frombuffer(lzma.decompress(blob[pos:pos + size]), np.uint8)); pos += size
    return np.ascontiguousarray(np.stack(planes).T).view(dtype).reshape(count)


def pack_model(keras_file: Path, dest: Path):
    import h5py
    with zipfile.ZipFile(keras_file) as z:
        texts = {n: z.read(n).decode() for n in z.namelist() if n.endswith(".json")}
        h5 = h5py.File(io.BytesIO(z.read("model.weights.h5")), "r")
    items, arrays = [], []
    def visit(name, obj):
        entry = {"name": name, "attrs": {k: (v.decode() if isinstance(v, bytes) else str(v)) for k, v in obj.attrs.items()}}
        if isinstance(obj, h5py.Dataset):
            a = np.asarray(obj); assert a.dtype == np.float32, (name, a.dtype)
            entry.update(shape=list(a.shape)); arrays.append(a.ravel())
        items.append(entry)
    h5.visititems(visit)
    flat = np.concatenate(arrays) if arrays else np.zeros(0, np.float32)
    (dest / (keras_file.stem + ".manifest.json")).write_text(json.dumps({"texts": texts, "items": items, "count": int(flat.size)}))
    (dest / (keras_file.stem + ".weights.bin")).write_bytes(shuffle_compress(flat))


def unpack_model(dest: Path, stem: str, out: Path):
    import h5py
    m = json.loads((dest / (stem + ".manifest.json")).read_text())
    flat = shuffle_decompress((dest / (stem + ".weights.bin")).read_bytes(), np.float32, m["count"])
    buf, pos = io.BytesIO(), 0
    with h5py.File(buf, "w") as f:
        for e in m["items"]:
            if "shape" in e:
                size = int(np.prod(e["shape"]))
                obj = f.create_dataset(e["name"], data=flat[pos:pos + size].reshape(e["shape"])); pos += size
            else:
                obj = f.require_group(e["name"])
            for k, v in e["attrs"].items():
                obj.attrs[k] = v
    with zipfile.ZipFile(out / (stem + ".keras"), "w") as z:
        for name, text in m["texts"].items():
            z.writestr(name, text)
        z.writestr("model.weights.h5", buf.getvalue())


def pack_data(npz: Path, dest: Path, start: int = 0, stop: int | None = None, stem: str | None = None):
    d = np.load(npz)
    x = d["x"][start:stop]
    delta = np.diff(x.astype(np.int16), axis=2, prepend=0).astype(np.uint8)
    stem = stem or npz.stem
    (dest / (stem + ".x.xz")).write_bytes(lzma.compress(delta.tobytes(), preset=6))
    np.savez(dest / (stem + ".meta.npz"), y=d["y"][start:stop], classes=d["classes"], shape=np.array(x.shape))


def unpack_data(dest: Path, stem: str, out: Path):
    meta = np.load(dest / (stem + ".meta.npz"))
    delta = np.frombuffer(lzma.decompress((dest / (stem + ".x.xz")).read_bytes()), np.uint8).reshape(meta["shape"])
    x = np.cumsum(delta.astype(np.uint32), axis=2).astype(np.uint8)  # wraps mod 256 like the packing
    np.savez(out / (stem + ".npz"), x=x, y=meta["y"], classes=meta["classes"])


if __name__ == "__main__":
    verb, a, b = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    b.mkdir(parents=True, exist_ok=True)
    if verb == "pack":
        pack_model(a / "models" / "vgg16_cifar10.keras", b)
        pack_data(a / "data" / "cifar10_test.npz", b)
        pack_data(a / "data" / "cifar10_train_10k.npz", b, 0, 2000)
        pack_data(a / "data" / "cifar10_train_10k.npz", b, 9000, 10000, "cifar10_heldout")
    else:
        (b / "models").mkdir(exist_ok=True); (b / "data").mkdir(exist_ok=True)
        unpack_model(a, "vgg16_cifar10", b / "models")
        unpack_data(a, "cifar10_test", b / "data")
        unpack_data(a, "cifar10_train_10k", b / "data")
        unpack_data(a, "cifar10_heldout", b / "data")
