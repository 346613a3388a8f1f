"""`fxbench data prepare --download` against a local HTTP server: the sha256 is checked before unpacking."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
import zipfile
from pathlib import Path

import pytest
from data_fixtures.synthetic import make_release
from fxbench.data import download
from fxbench.paths import default_data_dir


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A zip of the synthetic release (top folder FracAtlas/, like the figshare archive) and a junk file."""
    root = tmp_path_factory.mktemp("www")
    rel = make_release(tmp_path_factory.mktemp("src") / "FracAtlas")
    with zipfile.ZipFile(root / "FracAtlas.zip", "w") as z:
        for p in sorted(rel.rglob("*")):
            z.write(p, Path("FracAtlas") / p.relative_to(rel))
    (root / "junk.zip").write_bytes(b"not a zip at all")
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    yield {
        name: (f"{base}/{name}", hashlib.sha256((root / name).read_bytes()).hexdigest())
        for name in ("FracAtlas.zip", "junk.zip")
    }
    server.shutdown()
    thread.join()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(autouse=True)
def _no_pin(monkeypatch):
    monkeypatch.setattr(download, "RELEASE_SHA256", None)
    monkeypatch.delenv(download.URL_ENV, raising=False)
    monkeypatch.delenv(download.SHA256_ENV, raising=False)


def _unpacked() -> list[Path]:
    d = download.sources_dir()
    return sorted(d.iterdir()) if d.exists() else []


def test_good_archive_is_verified_unpacked_and_prepared(cli, served, monkeypatch):
    url, digest = served["FracAtlas.zip"]
    monkeypatch.setenv(download.URL_ENV, url)  # the URL may come from the environment
    r = cli("data", "prepare", "--download", "--sha256", digest, "--workers", "1")
    assert r.exit_code == 0, r
    assert digest in r.stdout and (default_data_dir() / "fxbench.json").is_file()
    [folder] = _unpacked()
    assert (folder / ".complete").is_file() and (folder / "FracAtlas" / "dataset.csv").is_file()
    # a second run reuses the verified copy
    assert cli("data", "prepare", "--download", "--sha256", digest, "--workers", "1").exit_code == 0


def test_wrong_sha256_is_refused_and_nothing_is_unpacked(cli, served):
    url, digest = served["FracAtlas.zip"]
    r = cli("data", "prepare", "--download", "--url", url, "--sha256", "0" * 64)
    assert r.exit_code == 2, r
    assert f"sha256 is {digest}" in r.stderr and "nothing unpacked" in r.stderr
    assert _unpacked() == [] and not default_data_dir().exists()


def test_matching_digest_but_not_a_zip(cli, served):
    url, digest = served["junk.zip"]
    r = cli("data", "prepare", "--download", "--url", url, "--sha256", digest)
    assert r.exit_code == 2 and "not a zip archive" in r.stderr
    assert _unpacked() == []


def test_no_pinned_digest_means_no_download(cli, served):
    url, _ = served["FracAtlas.zip"]
    r = cli("data", "prepare", "--download", "--url", url)
    assert r.exit_code == 2 and "no pinned sha256" in r.stderr


def test_download_and_source_are_exclusive(cli, tmp_path):
    r = cli("data", "prepare", "--download", "--source", tmp_path)
    assert r.exit_code == 2 and "exactly one" in r.stderr
    assert cli("data", "prepare").exit_code == 2


def test_unreachable_url(cli):
    r = cli("data", "prepare", "--download", "--url", "http://127.0.0.1:9/x.zip", "--sha256", "0" * 64)
    assert r.exit_code == 2 and "download failed" in r.stderr
