"""Training images as one compact uint8 tensor, from a prepared dataset or an exported array file.

The whole training split as uint8 is about 170 MB, small enough to sit on a GPU, so batches are sliced and
augmented on the device and data loading is never the bottleneck. Only the "train" split is accepted:
the evaluation images (official valid + test) never reach training or model selection.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from ..io import atomic_write, safetensors_bytes, sha256_file
from ..models.wrapper import CANONICAL_SIZE

TRAIN_SPLIT = "train"
ARRAY_SUFFIXES = (".npz", ".safetensors")


@dataclass(frozen=True)
class TrainArrays:
    """x: uint8 (N, 1, 224, 224); y: int64 (N,), 1 = fracture; ids: image ids in the order of x."""

    x: torch.Tensor
    y: torch.Tensor
    ids: list[str]
    source: str  # where the images came from, for the model card
    dataset: str  # dataset name and fingerprint when known

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, index: torch.Tensor) -> TrainArrays:
        idx = index.tolist()
        return TrainArrays(
            self.x[index], self.y[index], [self.ids[i] for i in idx], self.source, self.dataset
        )


@dataclass(frozen=True)
class HoldoutSplit:
    fit: torch.Tensor  # indices trained on
    holdout: torch.Tensor  # indices used only to select the epoch


@dataclass(frozen=True)
class ExportedArrays:
    path: Path
    n: int
    n_fractured: int
    sha256: str


def holdout_key(image_id: str, salt: str) -> str:
    return hashlib.sha256(f"{salt}/{image_id}".encode()).hexdigest()


def holdout_split(ids: list[str], y: torch.Tensor, *, fraction: float, salt: str) -> HoldoutSplit:
    """Per label, the ``round(fraction * n_label)`` images with the smallest sha256(salt/image_id) are held out.

    Depends only on the ids, labels and salt (not on their order or the seed); the salt keeps it independent
    of the dataset's own hash-ordered split of non-fractured images."""
    labels = y.tolist()
    held: set[int] = set()
    for label in sorted(set(labels)):
        members = [i for i, v in enumerate(labels) if v == label]
        members.sort(key=lambda i: holdout_key(ids[i], salt))
        held.update(members[: round(fraction * len(members))])
    fit = [i for i in range(len(ids)) if i not in held]
    return HoldoutSplit(torch.tensor(fit, dtype=torch.long), torch.tensor(sorted(held), dtype=torch.long))


def _check(x: np.ndarray | torch.Tensor, y, ids: list[str], *, source: str) -> None:
    shape = tuple(x.shape)
    if len(shape) != 4 or shape[1:] != (1, CANONICAL_SIZE, CANONICAL_SIZE):
        raise DataError(f"{source}: x has shape {shape}, expected (N, 1, {CANONICAL_SIZE}, {CANONICAL_SIZE})")
    if len(y) != shape[0] or len(ids) != shape[0]:
        raise DataError(
            f"{source}: x has {shape[0]} images but y has {len(y)} labels and image_id {len(ids)} ids"
        )
    if len(set(ids)) != len(ids):
        raise DataError(f"{source}: image_id has duplicates")
    bad = set(np.asarray(y).tolist()) - {0, 1}
    if bad:
        raise DataError(f"{source}: y must hold 0 (no fracture) or 1 (fracture), found {sorted(bad)}")
    if len(set(np.asarray(y).tolist())) < 2:
        raise DataError(f"{source}: the training images need both classes")


def _to_uint8(x: torch.Tensor, *, source: str) -> torch.Tensor:
    if x.dtype == torch.uint8:
        return x
    if not torch.is_floating_point(x) or x.min() < 0 or x.max() > 1:
        raise DataError(f"{source}: x must be uint8, or float in [0, 1] (canonical pixels); got {x.dtype}")
    return (x * 255).round().to(torch.uint8)


def _encode_pngs(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 1, H, W) uint8 -> one byte buffer of PNGs (zlib level 9) and N + 1 offsets into it."""
    from PIL import Image

    blobs = []
    for img in x[:, 0]:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG", compress_level=9)
        blobs.append(buf.getvalue())
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
    return np.frombuffer(b"".join(blobs), dtype=np.uint8), offsets


def _decode_pngs(arrays: dict[str, np.ndarray], *, source: str) -> np.ndarray:
    from PIL import Image

    if "png_offsets" not in arrays:
        raise DataError(f"{source}: has png but no png_offsets")
    data, off = arrays["png"].tobytes(), arrays["png_offsets"]
    try:
        images = [
            np.asarray(Image.open(io.BytesIO(data[a:b])).convert("L")) for a, b in zip(off[:-1], off[1:])
        ]
    except OSError as e:
        raise DataError(f"{source}: an image in png cannot be decoded ({e})") from None
    return np.stack(images)[:, None] if images else np.zeros((0, 1, CANONICAL_SIZE, CANONICAL_SIZE), np.uint8)


def _from_file(path: Path) -> TrainArrays:
    source = str(path)
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
        except (OSError, ValueError) as e:
            raise DataError(f"{source}: not a readable .npz file ({e})") from None
        if "x" not in arrays and "png" in arrays:
            arrays["x"] = _decode_pngs(arrays, source=source)
        missing = [k for k in ("x", "y", "image_id") if k not in arrays]
        if missing:
            raise DataError(f"{source}: missing array(s) {', '.join(missing)} (need x or png, y, image_id)")
        ids = [str(i) for i in arrays["image_id"].tolist()]
        split = str(arrays["split"]) if "split" in arrays else TRAIN_SPLIT
        dataset = str(arrays["dataset"]) if "dataset" in arrays else "unknown"
        x, y = arrays["x"], arrays["y"]
    else:
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="np") as f:
                meta = f.metadata() or {}
                keys = set(f.keys())
                missing = [k for k in ("x", "y") if k not in keys]
                if missing:
                    raise DataError(f"{source}: missing tensor(s) {', '.join(missing)} (need x, y)")
                x, y = f.get_tensor("x"), f.get_tensor("y")
        except (SafetensorError, OSError) as e:
            raise DataError(f"{source}: not a readable safetensors file ({e})") from None
        if "image_id" not in meta:
            raise DataError(f"{source}: metadata needs image_id (a JSON list of ids in the order of x)")
        ids = [str(i) for i in json.loads(meta["image_id"])]
        split, dataset = meta.get("split", TRAIN_SPLIT), meta.get("dataset", "unknown")
    if split != TRAIN_SPLIT:
        raise DataError(
            f"{source}: holds the {split!r} split; training uses only the 'train' split "
            "(the evaluation images must never be trained on)"
        )
    _check(x, y, ids, source=source)
    xt = _to_uint8(torch.from_numpy(np.ascontiguousarray(x)), source=source)
    return TrainArrays(
        xt,
        torch.from_numpy(np.asarray(y)).long(),
        ids,
        f"{path.name} (sha256 {sha256_file(path)[:12]})",
        dataset,
    )


def _from_dataset(path: Path | None) -> TrainArrays:
    from ..data import load_arrays

    data = load_arrays(path, split=TRAIN_SPLIT)
    meta_splits = set(data.meta["split"]) if "split" in data.meta else {TRAIN_SPLIT}
    if meta_splits != {TRAIN_SPLIT}:
        raise DataError(f"{path}: load_arrays(split='train') returned images of splits {sorted(meta_splits)}")
    source = str(path) if path is not None else "the default prepared dataset"
    _check(data.x, data.y.numpy(), list(data.ids), source=source)
    dataset = f"{data.dataset.name} (fingerprint {data.dataset.fingerprint[:12]})"
    return TrainArrays(_to_uint8(data.x, source=source), data.y.long(), list(data.ids), source, dataset)


def load_train_arrays(path: str | Path | None = None) -> TrainArrays:
    """The training split from a prepared dataset folder (``fxbench.data``; None = the default one) or from a
    ``.npz`` / ``.safetensors`` file with x (uint8 N x 1 x 224 x 224), y and image_id."""
    if path is None:
        return _from_dataset(None)
    path = Path(path)
    if path.is_file() and path.suffix in ARRAY_SUFFIXES:
        return _from_file(path)
    if path.is_dir():
        return _from_dataset(path)
    if not path.exists():
        raise DataError(f"--data {path}: not found")
    raise DataError(
        f"--data {path}: expected a prepared dataset folder or a {' / '.join(ARRAY_SUFFIXES)} file"
    )


def export_arrays(
    split: str, path: str | Path, *, data: str | Path | None = None, encoding: str = "raw"
) -> ExportedArrays:
    """Write one split of a prepared dataset as one array file: x uint8 (N, 1, 224, 224), y int64, image_id,
    plus the split and dataset names. ``.npz`` (deflate-compressed) or ``.safetensors``; ``encoding="png"``
    (``.npz`` only) stores x as lossless PNGs instead, about 2/3 of the deflated size on FracAtlas."""
    from ..data import load_arrays

    path = Path(path)
    if path.suffix not in ARRAY_SUFFIXES:
        raise DataError(f"{path}: the file name must end in {' or '.join(ARRAY_SUFFIXES)}")
    if encoding not in ("raw", "png") or (encoding == "png" and path.suffix != ".npz"):
        raise DataError(f"{path}: encoding {encoding!r}: use 'raw', or 'png' with a .npz file")
    evalset = load_arrays(data, split=split)
    x = _to_uint8(evalset.x, source=str(data)).numpy()
    y = evalset.y.numpy().astype(np.int64)
    ids = list(evalset.ids)
    dataset = f"{evalset.dataset.name} (fingerprint {evalset.dataset.fingerprint[:12]})"
    if path.suffix == ".npz":
        named = {"y": y, "image_id": np.array(ids), "split": np.array(split), "dataset": np.array(dataset)}
        if encoding == "png":
            png, offsets = _encode_pngs(x)
            named.update(png=png, png_offsets=offsets)
        else:
            named["x"] = x

        def writer(tmp: str) -> None:
            with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
                (np.savez if encoding == "png" else np.savez_compressed)(f, **named)

    else:
        meta = {"image_id": json.dumps(ids), "split": split, "dataset": dataset}

        def writer(tmp: str) -> None:
            Path(tmp).write_bytes(safetensors_bytes({"x": x, "y": y}, metadata=meta))

    atomic_write(path, writer)
    return ExportedArrays(path=path, n=len(ids), n_fractured=int(y.sum()), sha256=sha256_file(path))
