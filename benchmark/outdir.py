"""The --out folder: writable before any work, and one run at a time in it."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from .errors import FxbenchError

LOCK_NAME = ".fxbench-run.lock"
SHARDS_DIR = ".fxbench-shards"


def check_writable(out: Path) -> None:
    """Create ``out`` and write a probe file in it; one clear error if that fails."""
    if out.exists() and not out.is_dir():
        raise FxbenchError(f"--out {out}: is a file, not a folder; give a folder for the results.")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".fxbench-probe-") as f:
            f.write(b"\0" * 4096)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise FxbenchError(f"--out {out}: cannot write there ({e.strerror or e}); nothing was run.") from None


def check_result_dir(final: Path) -> None:
    """OUT/<id> must be a folder (a result) or absent: a file there is the user's, never renamed or replaced."""
    if final.exists() and not final.is_dir():
        raise FxbenchError(f"{final}: a file is where this submission's result folder goes; move it away or give "
                           "another --out. Nothing was run.")


@contextlib.contextmanager
def run_lock(out: Path):
    """One run at a time per --out: a second one is refused (the lock goes with the process, even on kill -9).
    The lock file is removed when the run ends; a run that opened it just before then finds, once it holds the
    lock, that the file it locked is no longer the one at the path, and tries again on the new one."""
    try:
        import fcntl
    except ImportError:  # not POSIX (Windows): no lock, as before
        yield
        return
    path = out / LOCK_NAME
    for _ in range(100):  # each retry means another run removed the file between our open and lock
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise FxbenchError(f"--out {out}: cannot create the run lock {path.name} ({e.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise FxbenchError(
                f"--out {out}: another fxbench run (pid {holder}) is writing into this folder; wait for it to "
                "finish, or give another --out."
            ) from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    else:
        raise FxbenchError(f"--out {out}: could not take the run lock {path.name}; try again.")
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)  # still holding the lock: nobody else can be using this file
        os.close(fd)
