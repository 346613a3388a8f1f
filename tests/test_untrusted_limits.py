"""Resource limits on untrusted input (issue 12): every hostile input is refused quickly, before it can take
memory, time or disk. Each test is bounded itself (tiny files, sparse files, a SIGALRM guard, a local server
on 127.0.0.1 that is shut down afterwards)."""

from __future__ import annotations

import contextlib
import http.server
import io
import os
import signal
import threading
import time
import zipfile
from pathlib import Path

import pytest
import torch
import yaml
from fxbench.errors import SubmissionError
from fxbench.models.checkpoint import CheckpointFile, cached_download, parse_state_dict
from fxbench.models.spec import ModelSpec
from fxbench.models.submission import read_spec
from fxbench.paths import checkpoint_cache_dir
from submission_kit import base_spec


@contextlib.contextmanager
def within(seconds: int):
    """Fail (instead of hanging the suite) if the block takes longer than ``seconds``."""
    def expired(*_):
        raise AssertionError(f"did not finish within {seconds} s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# ---- checkpoints ------------------------------------------------------------------------------------------

def zip_bomb_pt() -> bytes:
    """A real torch.save file plus one entry of 64 MB of zeros that deflates to ~64 kB: torch would inflate
    it before looking at a key."""
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, buf)
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
        dst.writestr(f"{src.namelist()[0].split('/')[0]}/data/bomb", bytes(64 * 1024 * 1024),
                     compress_type=zipfile.ZIP_DEFLATED)
    return out.getvalue()


def test_a_zip_bomb_checkpoint_is_refused_before_torch_unpacks_it(monkeypatch):
    data = zip_bomb_pt()
    assert len(data) < 1024 * 1024
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load reached"))
    with within(10), pytest.raises(SubmissionError, match=r"is compressed .* inflating to 67108864"):
        parse_state_dict(CheckpointFile(path=Path("bomb.pt"), sha256="0" * 64, data=data))


def test_a_plain_torch_save_checkpoint_still_loads():
    buf = io.BytesIO()
    torch.save({"w": torch.ones(3)}, buf)
    got = parse_state_dict(CheckpointFile(path=Path("ok.pt"), sha256="0" * 64, data=buf.getvalue()))
    assert torch.equal(got["w"], torch.ones(3))


# ---- model.yaml -------------------------------------------------------------------------------------------

BILLION_LAUGHS = "a: &a ['lol','lol','lol','lol','lol','lol','lol','lol','lol']\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},"
    f"*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)}]\n" for i in range(8))


def test_a_yaml_alias_bomb_is_refused_quickly():
    with within(5), pytest.raises(SubmissionError, match=r"aliases \(\*name\) are not allowed"):
        ModelSpec.from_text(BILLION_LAUGHS)


def test_deeply_nested_yaml_is_an_error_not_a_recursion_error():
    with within(5), pytest.raises(SubmissionError, match="nested"):
        ModelSpec.from_text("a: " + "[" * 5000 + "]" * 5000)


def test_a_long_value_is_not_printed_whole():
    spec = base_spec()
    spec["input"]["size"] = "x" * 20000
    with pytest.raises(SubmissionError) as e:
        ModelSpec.from_text(yaml.safe_dump(spec))
    assert "input.size" in str(e.value) and len(str(e.value)) < 2000


def test_a_huge_model_yaml_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "model.yaml"
    with open(path, "wb") as f:
        f.truncate(60 * 1024 * 1024)  # sparse: no disk used
    with within(5), pytest.raises(SubmissionError, match="byte limit for a model.yaml"):
        read_spec(path)
    with pytest.raises(SubmissionError, match="over the"):
        ModelSpec.from_text("id: x\n" * 20000)


def test_a_fifo_model_yaml_does_not_hang(tmp_path):
    os.mkfifo(tmp_path / "model.yaml")
    with within(5), pytest.raises(SubmissionError, match="not a regular file"):
        read_spec(tmp_path)


def test_model_yaml_linked_to_dev_zero_or_outside_is_refused_without_printing_it(tmp_path):
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "model.yaml").symlink_to("/dev/zero")
    with within(5), pytest.raises(SubmissionError, match="leads outside its folder"):
        read_spec(sub)
    secret = tmp_path / "secret.txt"
    secret.write_text("password: hunter2\n")
    (sub / "model.yaml").unlink()
    (sub / "model.yaml").symlink_to(secret)
    with pytest.raises(SubmissionError) as e:
        read_spec(sub / "model.yaml")
    assert "hunter2" not in str(e.value) and "outside its folder" in str(e.value)


def test_model_yaml_linked_inside_its_folder_is_fine(tmp_path):
    (tmp_path / "real.yaml").write_text(yaml.safe_dump(base_spec()))
    (tmp_path / "model.yaml").symlink_to("real.yaml")
    assert read_spec(tmp_path).spec.id


# ---- downloads --------------------------------------------------------------------------------------------

@pytest.fixture
def hostile_server():
    """/big streams 3 MB with no Content-Length; /huge announces 10 GB; /slow sends 1 byte every 0.2 s."""
    stop = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def do_GET(self):
            self.send_response(200)
            if self.path == "/huge":
                self.send_header("Content-Length", str(10 * 1024**3))
                self.end_headers()
                return
            self.end_headers()
            try:
                if self.path == "/big":
                    for _ in range(48):
                        self.wfile.write(bytes(65536))
                elif self.path == "/slow":
                    while not stop.is_set():
                        self.wfile.write(b"x")
                        self.wfile.flush()
                        time.sleep(0.2)
            except OSError:
                pass

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        stop.set()
        server.shutdown()
        server.server_close()


def leftovers() -> list[str]:
    cache = checkpoint_cache_dir()
    return sorted(p.name for p in cache.iterdir()) if cache.is_dir() else []


@pytest.mark.parametrize("path,env,message", [
    ("/big", {"FXBENCH_MAX_CHECKPOINT_BYTES": "1048576"}, "more than 1048576 bytes"),
    ("/huge", {}, "announces 10737418240 bytes"),
    ("/slow", {"FXBENCH_DOWNLOAD_DEADLINE_S": "1"}, "not complete after 1 s"),
])
def test_checkpoint_downloads_are_capped_in_size_and_time_and_leave_nothing(hostile_server, monkeypatch, path, env,
                                                                            message):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with within(20), pytest.raises(SubmissionError, match=message):
        cached_download(hostile_server + path, "a" * 64)
    assert leftovers() == []


def test_a_temp_file_left_by_a_killed_download_is_cleaned_up(hostile_server, monkeypatch):
    cache = checkpoint_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    stale = cache / f".{'a' * 64}.killed.tmp"
    stale.write_bytes(b"partial")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    monkeypatch.setenv("FXBENCH_DOWNLOAD_DEADLINE_S", "60")
    with pytest.raises(SubmissionError):
        cached_download(hostile_server + "/huge", "a" * 64)
    assert leftovers() == []


def test_the_release_download_is_capped_too(hostile_server, monkeypatch, tmp_path):
    from fxbench.data.download import download_release
    from fxbench.errors import DataError

    monkeypatch.setenv("FXBENCH_DOWNLOAD_DEADLINE_S", "1")
    with within(20), pytest.raises(DataError, match="not complete after 1 s"):
        download_release(url=hostile_server + "/slow", sha256="b" * 64, cache=tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []
