"""Atomic file writes: a reader never sees a half-written file."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


class ReadRefused(Exception):
    """A file that ``read_bounded`` will not read; callers turn the message into their own error."""


def read_bounded(path: str | os.PathLike, max_bytes: int, *, what: str, follow_links: bool = False) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``, checked before reading: a FIFO or device would
    hang or never end, a huge file exhausts memory. A symlink is refused unless ``follow_links`` (the caller
    then confines where it may lead). The size is checked again while reading (the file may grow)."""
    import stat

    path = Path(path)
    try:
        st = os.stat(path) if follow_links else os.lstat(path)
    except FileNotFoundError:
        raise ReadRefused(f"{path}: file not found (no such {what})") from None
    except OSError as e:
        raise ReadRefused(f"{path}: cannot be read ({e.strerror})") from None
    if stat.S_ISLNK(st.st_mode):
        raise ReadRefused(f"{path}: is a symbolic link; the {what} must be a regular file")
    if not stat.S_ISREG(st.st_mode):
        raise ReadRefused(f"{path}: not a regular file (a FIFO, device or folder); the {what} must be a file")
    if st.st_size > max_bytes:
        raise ReadRefused(f"{path}: {st.st_size} bytes, over the {max_bytes} byte limit for a {what}")
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise ReadRefused(f"{path}: cannot be read ({e.strerror})") from None
    if len(data) > max_bytes:
        raise ReadRefused(f"{path}: over the {max_bytes} byte limit for a {what}")
    return data


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write(path: str | os.PathLike, writer: Callable[[str], Any]) -> None:
    """Call ``writer(tmp_path)`` then rename the temporary file over ``path`` (same folder, same disk)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        writer(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; final files get the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def canonical_json(obj: Any) -> str:
    """Stable JSON (sorted keys, fixed separators, trailing newline): byte-identical on every run."""
    return json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, canonical_json(obj))


def safetensors_bytes(tensors: dict, *, metadata: dict[str, str] | None = None) -> bytes:
    """A safetensors file's bytes, the same on every run: the library stores ``metadata`` in a hash map whose
    order changes from process to process, so the header is rewritten with the metadata keys sorted (same
    length, same tensors and offsets). Torch tensors or numpy arrays, by the type of the first value."""
    import struct

    first = next(iter(tensors.values()), None)
    if first is not None and type(first).__module__.startswith("torch"):
        from safetensors.torch import save
    else:
        from safetensors.numpy import save
    data = save(tensors, metadata=metadata)
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    if "__metadata__" not in header:
        return data
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if len(text) > n:  # never expected (same keys, same values); keep the library's bytes rather than guess
        return data
    return data[:8] + text.ljust(n, b" ") + data[8 + n :]


def save_safetensors(tensors: dict, path: str | os.PathLike, *, metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` atomically as deterministic safetensors bytes (see ``safetensors_bytes``)."""
    atomic_write_bytes(path, safetensors_bytes(tensors, metadata=metadata))


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def replace_dir(tmp_dir: str | os.PathLike, final_dir: str | os.PathLike) -> None:
    """Swap a fully written temporary folder into place; the old folder is removed only afterwards."""
    final_dir = Path(final_dir)
    os.chmod(tmp_dir, 0o777 & ~_umask())  # mkdtemp creates 0700; the published folder gets the usual mode
    old = None
    if final_dir.exists():
        old = final_dir.with_name(f".{final_dir.name}.old-{os.getpid()}")
        os.replace(final_dir, old)
    os.replace(tmp_dir, final_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class DownloadFailed(Exception):
    """A download that broke a limit or failed; callers turn it into their own user-facing error."""


def env_limit(name: str, default: float) -> float:
    """A positive number from the environment (size or time limits for untrusted input), else ``default``."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise DownloadFailed(f"{name}={raw!r}: expected a positive number") from None
    if not value > 0:
        raise DownloadFailed(f"{name}={raw!r}: expected a positive number")
    return value


def fetch_url(url: str, path: str | os.PathLike, *, max_bytes: int, deadline_s: float,
              socket_timeout_s: float = 60.0) -> str:
    """Stream ``url`` into ``path`` and return its sha256, within ``max_bytes`` and an overall wall-clock
    ``deadline_s`` (a server that trickles one byte every few seconds never trips a socket timeout, so the
    deadline is checked after every read, and reads return whatever has arrived)."""
    import time
    import urllib.error
    import urllib.request

    start = time.monotonic()
    h = hashlib.sha256()
    total = 0
    request = urllib.request.Request(url, headers={"User-Agent": "fxbench"})
    try:
        with urllib.request.urlopen(request, timeout=min(socket_timeout_s, deadline_s)) as r, open(path, "wb") as f:
            length = r.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise DownloadFailed(f"{url}: the server announces {int(length)} bytes, over the {max_bytes} "
                                     "byte limit; nothing was kept")
            while True:
                if time.monotonic() - start > deadline_s:
                    raise DownloadFailed(f"{url}: not complete after {deadline_s:g} s (the download deadline; "
                                         f"{total} bytes received); nothing was kept")
                block = r.read1(1 << 16)
                if not block:
                    break
                total += len(block)
                if total > max_bytes:
                    raise DownloadFailed(f"{url}: more than {max_bytes} bytes (the size limit); nothing was kept")
                h.update(block)
                f.write(block)
    except urllib.error.HTTPError as e:
        raise DownloadFailed(f"download of {url} failed: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise DownloadFailed(f"{url}: download failed ({getattr(e, 'reason', e)})") from None
    return h.hexdigest()


def remove_stale(folder: str | os.PathLike, pattern: str, older_than_s: float) -> None:
    """Remove temporary files or folders left by a killed process (older than any live one could be)."""
    import time

    now = time.time()
    for p in Path(folder).glob(pattern):
        try:
            if now - p.lstat().st_mtime > older_than_s:
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        except OSError:
            pass
