"""Safe checkpoint loading: a checkpoint is untrusted input.

Order matters: the file is confined to the submission folder (or downloaded to the cache), its bytes are read
once and hashed, and only bytes whose sha256 matches model.yaml are parsed, from memory, as safetensors or as a
state dict through ``torch.load(weights_only=True)``, which refuses any pickle that would build other objects.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load as load_safetensors
from torch import nn

from ..errors import SubmissionError
from ..io import DownloadFailed, atomic_write, env_limit, fetch_url, remove_stale, sha256_file
from ..paths import checkpoint_cache_dir
from .spec import Checkpoint

NESTED_KEYS = (
    "state_dict",
    "model",
)  # accepted wrappers around a state dict, e.g. {"state_dict": {...}, "epoch": 3}
DOWNLOAD_TIMEOUT_S = 60  # per socket operation
# Limits on untrusted checkpoints (environment variables override them): the largest checkpoint read or
# downloaded, and the wall-clock deadline for a whole download.
MAX_CHECKPOINT_BYTES_ENV = "FXBENCH_MAX_CHECKPOINT_BYTES"
MAX_CHECKPOINT_BYTES = 4 * 1024**3
DOWNLOAD_DEADLINE_ENV = "FXBENCH_DOWNLOAD_DEADLINE_S"
DOWNLOAD_DEADLINE_S = 3600.0


def _limits() -> tuple[int, float]:
    try:
        return (int(env_limit(MAX_CHECKPOINT_BYTES_ENV, MAX_CHECKPOINT_BYTES)),
                env_limit(DOWNLOAD_DEADLINE_ENV, DOWNLOAD_DEADLINE_S))
    except DownloadFailed as e:
        raise SubmissionError(str(e)) from None


@dataclass(frozen=True)
class CheckpointFile:
    path: Path  # the local file (inside the submission folder, or in the download cache)
    sha256: str
    data: bytes = field(repr=False)


def confined_path(folder: Path, relative: str, *, field: str) -> Path:
    """``folder / relative``, refusing absolute paths and anything (``..``, symlinks) that leaves ``folder``."""
    if Path(relative).is_absolute():
        raise SubmissionError(f"{field}: {relative!r} must be relative to the submission folder")
    root = folder.resolve()
    candidate = folder / relative
    target = candidate.resolve()
    if not target.is_relative_to(root):
        lexical = Path(os.path.normpath(folder.absolute() / relative))
        how = "goes through a symlink that leads" if lexical.is_relative_to(folder.absolute()) else "leads"
        raise SubmissionError(
            f"{field}: {relative!r} {how} outside the submission folder {root} (to {target}); "
            "files must stay inside the folder"
        )
    if not target.exists():
        raise SubmissionError(f"{field}: file not found: {candidate}")
    if not target.is_file():
        raise SubmissionError(f"{field}: {candidate} is not a file")
    return target


def cached_download(url: str, sha256: str) -> Path:
    """Download ``url`` into the checkpoint cache as ``<sha256>`` (atomically, verified); reuse it if present."""
    dest = checkpoint_cache_dir() / sha256
    if dest.is_file() and sha256_file(dest) == sha256:
        return dest

    max_bytes, deadline = _limits()
    # A download killed with SIGKILL leaves its temporary file; one older than the deadline is nobody's.
    if dest.parent.is_dir():
        remove_stale(dest.parent, f".{dest.name}.*.tmp", deadline + 60)

    def fetch(tmp: str) -> None:
        got = fetch_url(url, tmp, max_bytes=max_bytes, deadline_s=deadline, socket_timeout_s=DOWNLOAD_TIMEOUT_S)
        if got != sha256:
            raise SubmissionError(
                f"checkpoint.sha256: the file downloaded from {url} does not match: expected {sha256}, "
                f"got {got}; nothing was kept"
            )

    try:
        atomic_write(dest, fetch)
    except DownloadFailed as e:
        raise SubmissionError(f"checkpoint.url: {e}") from None
    except OSError as e:
        raise SubmissionError(f"checkpoint.url: cannot store the download of {url}: {e.strerror or e}") from None
    return dest


def read_checkpoint(checkpoint: Checkpoint, *, folder: Path) -> CheckpointFile:
    """The checkpoint's bytes, verified against ``checkpoint.sha256`` before anything parses them."""
    if checkpoint.path is not None:
        path = confined_path(folder, checkpoint.path, field="checkpoint.path")
    else:
        path = cached_download(checkpoint.url, checkpoint.sha256)
    max_bytes, _ = _limits()
    data = _read_bounded(path, max_bytes)
    actual = hashlib.sha256(data).hexdigest()
    if actual != checkpoint.sha256:
        raise SubmissionError(
            f"checkpoint.sha256: {path.name} does not match: expected {checkpoint.sha256}, got {actual}. "
            "Nothing was loaded; update sha256 if the weights changed on purpose"
        )
    return CheckpointFile(path=path, sha256=actual, data=data)


def _read_bounded(path: Path, max_bytes: int) -> bytes:
    """The file's bytes, read as large as the open file says it is (never a buffer of the limit's size: a
    200 kB checkpoint must not reserve 4 GiB); a file over the limit is refused before anything is read."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size  # of the file opened, not of whatever the path names later
            if size > max_bytes:
                raise SubmissionError(f"checkpoint: {path.name} is {size} bytes, over the {max_bytes} byte limit "
                                      f"(set {MAX_CHECKPOINT_BYTES_ENV} to change it)")
            data = f.read(size)
            grew = f.read(1)
    except OSError as e:
        raise SubmissionError(f"checkpoint: cannot read {path} ({e.strerror or e})") from None
    if grew or len(data) != size:
        raise SubmissionError(f"checkpoint: {path.name} changed size while it was being read ({size} bytes when "
                              "opened); nothing was loaded")
    return data


def _looks_like_safetensors(data: bytes) -> bool:
    if len(data) < 10:
        return False
    header = int.from_bytes(data[:8], "little")
    return 8 + header <= len(data) and data[8:9] == b"{"


def parse_state_dict(file: CheckpointFile) -> dict[str, torch.Tensor]:
    """Tensors by name, from safetensors or a ``torch.save``-d state dict (format told by content)."""
    name = file.path.name
    if _looks_like_safetensors(file.data):
        try:
            return load_safetensors(file.data)
        except Exception as e:  # noqa: BLE001 - SafetensorError, or errors on a damaged header
            raise SubmissionError(f"checkpoint: {name} is not a readable safetensors file: {e}") from None
    _refuse_compressed_zip(file.data, name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about pickle protocols before refusing them
            obj = torch.load(io.BytesIO(file.data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # Raised by the restricted unpickler before any object is built: nothing in the file has run.
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        operand = re.search(r"Unsupported operand \d+", str(e))
        if found:
            why = f"its pickle would call {found.group(1)}, so loading it could run code"
        else:
            why = "it is not a plain PyTorch state dict" + (f" ({operand.group(0)})" if operand else "")
        raise SubmissionError(
            f"checkpoint: {name} was refused: {why}; nothing in it was run. Save the weights with "
            "safetensors (safetensors.torch.save_file) or torch.save(model.state_dict())"
        ) from None
    except Exception as e:  # noqa: BLE001 - a corrupt or foreign file: torch raises many types
        raise SubmissionError(
            f"checkpoint: {name} is neither safetensors nor a PyTorch state dict ({type(e).__name__}: {e})"
        ) from None
    return _as_state_dict(obj, name=name)


def _refuse_compressed_zip(data: bytes, name: str) -> None:
    """torch.save writes a zip of stored (uncompressed) entries; a compressed entry can inflate a few MB
    into gigabytes before any key is checked (a zip bomb). Refuse compressed entries and sizes that do
    not add up, reading only the zip directory."""
    if not data.startswith(b"PK"):
        return
    import zipfile

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            infos = z.infolist()
    except (zipfile.BadZipFile, ValueError, OSError):
        return  # not a zip after all: torch.load reports it
    for i in infos:
        if i.compress_type != zipfile.ZIP_STORED or i.file_size != i.compress_size:
            raise SubmissionError(
                f"checkpoint: {name} was refused: its entry {i.filename!r} is compressed ({i.compress_size} "
                f"bytes inflating to {i.file_size}); torch.save never compresses, so nothing was unpacked. "
                "Save the weights with safetensors or torch.save(model.state_dict())"
            )
    if sum(i.file_size for i in infos) > len(data):
        raise SubmissionError(f"checkpoint: {name} was refused: its entries claim more bytes than the file holds")


def _is_tensor_dict(obj: object) -> bool:
    return (
        isinstance(obj, dict)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def _as_state_dict(obj: object, *, name: str) -> dict[str, torch.Tensor]:
    if _is_tensor_dict(obj):
        return dict(obj)
    if isinstance(obj, dict):
        nested = [k for k in NESTED_KEYS if _is_tensor_dict(obj.get(k))]
        if len(nested) == 1:
            return dict(obj[nested[0]])
    raise SubmissionError(
        f"checkpoint: {name} holds a {type(obj).__name__}, not a state dict: expected a mapping of parameter "
        f"names to tensors (optionally under one of the keys {', '.join(NESTED_KEYS)})"
    )


def _names(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def load_weights(net: nn.Module, state: dict[str, torch.Tensor], *, source: str = "checkpoint") -> None:
    """Copy ``state`` into ``net`` exactly (every key, every shape), cast to the model's dtypes."""
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} (checkpoint {tuple(state[k].shape)}, model {tuple(expected[k].shape)})"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {_names(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {_names(unexpected)}")
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatch(es): {_names(mismatched, 3)}")
        hint = ""
        if unexpected and all(k.startswith("module.") for k in unexpected):
            hint = " (the keys start with 'module.': save model.module.state_dict() instead of the DataParallel wrapper)"
        raise SubmissionError(
            f"{source} does not fit the model built from model.yaml: {'; '.join(parts)}{hint}. "
            "Check model.timm/entrypoint and model.kwargs (e.g. num_classes, in_chans)"
        )
    # fp16/bf16 checkpoints load into the fp32 model: evaluation always runs in float32.
    net.load_state_dict({k: v.to(dtype=expected[k].dtype) for k, v in state.items()}, strict=True)
