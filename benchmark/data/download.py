"""`fxbench data prepare --download`: fetch the release zip, check its pinned sha256, then unpack.

Nothing is unpacked unless the digest matches; the archive is streamed to a temporary file first.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from ..io import DownloadFailed, env_limit, fetch_url, remove_stale, replace_dir
from ..paths import home

# The FracAtlas archive on figshare (article 22363012). The digest is pinned from a verified download; until
# it is, --download asks for --sha256 (or FXBENCH_FRACATLAS_SHA256) instead of trusting an unchecked file.
RELEASE_URL = "https://figshare.com/ndownloader/files/43283628"
RELEASE_SHA256: str | None = None
URL_ENV = "FXBENCH_FRACATLAS_URL"
SHA256_ENV = "FXBENCH_FRACATLAS_SHA256"


@dataclass(frozen=True)
class Downloaded:
    root: Path  # the unpacked release folder (holds dataset.csv)
    sha256: str
    url: str


def sources_dir() -> Path:
    return home() / "sources"


# Limits on the download (environment variables override them): the release zip is ~0.3 GB.
MAX_ARCHIVE_BYTES_ENV = "FXBENCH_MAX_ARCHIVE_BYTES"
MAX_ARCHIVE_BYTES = 4 * 1024**3
DEADLINE_ENV = "FXBENCH_DOWNLOAD_DEADLINE_S"
DEADLINE_S = 3 * 3600.0


def _limits() -> tuple[int, float]:
    try:
        return int(env_limit(MAX_ARCHIVE_BYTES_ENV, MAX_ARCHIVE_BYTES)), env_limit(DEADLINE_ENV, DEADLINE_S)
    except DownloadFailed as e:
        raise DataError(str(e)) from None


def _fetch(url: str, dest: Path) -> str:
    max_bytes, deadline = _limits()
    try:
        return fetch_url(url, dest, max_bytes=max_bytes, deadline_s=deadline)
    except DownloadFailed as e:
        raise DataError(str(e)) from None


def _unpack(archive: Path, dest: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as z:
            if sum(i.file_size for i in z.infolist()) > 4 * archive.stat().st_size + (1 << 30):
                raise DataError(f"{archive}: its entries would inflate far beyond a FracAtlas release; refused.")
            for name in z.namelist():
                target = (dest / name).resolve()
                if not target.is_relative_to(dest.resolve()):
                    raise DataError(f"{archive}: refuses to unpack {name!r} outside the target folder.")
            z.extractall(dest)
    except zipfile.BadZipFile as e:
        raise DataError(f"{archive}: not a zip archive ({e}).") from None


def _find_root(folder: Path) -> Path:
    for depth in ("", "*/", "*/*/"):
        hits = sorted(folder.glob(f"{depth}dataset.csv"))
        if hits:
            return hits[0].parent
    raise DataError("the downloaded archive has no dataset.csv: it is not a FracAtlas release.")


def download_release(
    *, url: str | None = None, sha256: str | None = None, cache: Path | None = None
) -> Downloaded:
    """Download (or reuse) the release archive, verify its sha256, unpack it under ``cache``."""
    url = url or os.environ.get(URL_ENV) or RELEASE_URL
    want = (sha256 or os.environ.get(SHA256_ENV) or RELEASE_SHA256 or "").strip().lower()
    if not want:
        raise DataError(
            f"no pinned sha256 for {url}: pass --sha256 (or set {SHA256_ENV}) with the digest "
            "of the archive you trust; nothing was downloaded."
        )
    cache = Path(cache) if cache else sources_dir()
    final = cache / f"fracatlas-{want[:16]}"
    if (final / ".complete").is_file():
        return Downloaded(_find_root(final), want, url)
    cache.mkdir(parents=True, exist_ok=True)
    remove_stale(cache, ".download-*", _limits()[1] + 3600)  # left by a download killed with SIGKILL
    with tempfile.TemporaryDirectory(prefix=".download-", dir=cache) as tmp:
        archive = Path(tmp) / "release.zip"
        got = _fetch(url, archive)
        if got != want:
            raise DataError(
                f"{url}: the archive's sha256 is {got}, expected {want}; refused, nothing unpacked."
            )
        unpacked = Path(tmp) / "unpacked"
        unpacked.mkdir()
        _unpack(archive, unpacked)
        _find_root(unpacked)  # refuse an archive that is not a release before it goes into place
        (unpacked / ".complete").write_text(f"{url}\n{got}\n")
        replace_dir(unpacked, final)
    return Downloaded(_find_root(final), want, url)
