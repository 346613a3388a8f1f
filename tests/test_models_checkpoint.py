"""Safe checkpoint loading: hash first, path confinement, no pickle code execution, url download + cache."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import pickle
import threading
from pathlib import Path

import pytest
import torch
from conftest import tiny_timm
from fxbench.errors import SubmissionError
from fxbench.models import load_submission
from fxbench.models.checkpoint import (
    CheckpointFile,
    confined_path,
    load_weights,
    parse_state_dict,
    read_checkpoint,
)
from fxbench.models.spec import Checkpoint
from fxbench.paths import checkpoint_cache_dir
from submission_kit import make_submission, save_weights, set_checkpoint, sha256


def as_file(path: Path) -> CheckpointFile:
    data = path.read_bytes()
    return CheckpointFile(path=path, sha256=hashlib.sha256(data).hexdigest(), data=data)


class WritesFile:
    """Unpickling this would create ``marker``: the payload that must never run."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


# --- confinement ---------------------------------------------------------------------------------------------


def test_confined_path_accepts_files_inside(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "w.bin").write_bytes(b"x")
    assert confined_path(tmp_path, "sub/../sub/w.bin", field="f") == (tmp_path / "sub" / "w.bin").resolve()


def test_dotdot_escape_is_refused(tmp_path):
    folder = tmp_path / "submission"
    folder.mkdir()
    (tmp_path / "outside.safetensors").write_bytes(b"x")
    with pytest.raises(SubmissionError, match=r"checkpoint.path: '\.\./outside.safetensors' leads outside"):
        confined_path(folder, "../outside.safetensors", field="checkpoint.path")


def test_symlink_out_of_the_folder_is_refused(tmp_path):
    folder = tmp_path / "submission"
    folder.mkdir()
    (tmp_path / "secret.bin").write_bytes(b"x")
    (folder / "w.bin").symlink_to(tmp_path / "secret.bin")
    with pytest.raises(SubmissionError, match="goes through a symlink that leads outside"):
        confined_path(folder, "w.bin", field="checkpoint.path")


def test_symlinked_folder_out_is_refused(tmp_path):
    folder = tmp_path / "submission"
    folder.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "w.bin").write_bytes(b"x")
    (folder / "d").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(SubmissionError, match="symlink"):
        confined_path(folder, "d/w.bin", field="checkpoint.path")


def test_absolute_and_missing_paths_are_refused(tmp_path):
    with pytest.raises(SubmissionError, match="must be relative"):
        confined_path(tmp_path, "/etc/passwd", field="checkpoint.path")
    with pytest.raises(SubmissionError, match="file not found"):
        confined_path(tmp_path, "nope.safetensors", field="checkpoint.path")
    (tmp_path / "dir").mkdir()
    with pytest.raises(SubmissionError, match="is not a file"):
        confined_path(tmp_path, "dir", field="checkpoint.path")


# --- hash before read ---------------------------------------------------------------------------------------


def test_wrong_hash_names_expected_and_actual(tmp_path):
    (tmp_path / "w.safetensors").write_bytes(b"not even weights")
    expected = "0" * 64
    with pytest.raises(SubmissionError) as e:
        read_checkpoint(Checkpoint(path="w.safetensors", sha256=expected), folder=tmp_path)
    assert expected in str(e.value) and sha256(tmp_path / "w.safetensors") in str(e.value)


def test_pickle_with_wrong_hash_is_never_parsed(tmp_path, monkeypatch):
    marker = tmp_path / "pwned.txt"
    (tmp_path / "w.pt").write_bytes(pickle.dumps(WritesFile(marker)))
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load called before the hash check"))
    with pytest.raises(SubmissionError, match="does not match"):
        read_checkpoint(Checkpoint(path="w.pt", sha256="1" * 64), folder=tmp_path)
    assert not marker.exists()


# --- formats ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("payload", ["pickle-protocol-2", "pickle-protocol-5", "torch-save"])
def test_pickle_payload_is_refused_and_does_not_run(tmp_path, payload):
    marker = tmp_path / "pwned.txt"
    path = tmp_path / "w.pt"
    if payload == "torch-save":
        torch.save({"fc.weight": torch.zeros(2), "evil": WritesFile(marker)}, path)
    else:
        path.write_bytes(pickle.dumps(WritesFile(marker), protocol=int(payload[-1])))
    # Sanity: the payload is real, plain unpickling would create the file.
    if payload != "torch-save":
        pickle.loads(path.read_bytes())
        assert marker.exists()
        marker.unlink()
    with pytest.raises(SubmissionError, match="w.pt was refused: .*nothing in it was run"):
        parse_state_dict(as_file(path))
    assert not marker.exists()


def test_refusal_names_the_global_it_would_call(tmp_path):
    torch.save({"evil": WritesFile(tmp_path / "m")}, tmp_path / "w.pt")
    with pytest.raises(SubmissionError, match="its pickle would call exec, so loading it could run code"):
        parse_state_dict(as_file(tmp_path / "w.pt"))


def test_pt_state_dict_and_nested_state_dict(tmp_path):
    net = tiny_timm()
    torch.save(net.state_dict(), tmp_path / "a.pt")
    torch.save({"state_dict": net.state_dict(), "epoch": 7, "note": "ok"}, tmp_path / "b.pth")
    torch.save({"model": net.state_dict()}, tmp_path / "c.bin")
    for name in ("a.pt", "b.pth", "c.bin"):
        state = parse_state_dict(as_file(tmp_path / name))
        assert set(state) == set(net.state_dict())


def test_format_is_told_by_content_not_suffix(tmp_path):
    net = tiny_timm()
    save_weights(net, tmp_path / "w.safetensors")
    os.replace(tmp_path / "w.safetensors", tmp_path / "w.bin")
    state = parse_state_dict(as_file(tmp_path / "w.bin"))
    assert torch.equal(state["fc.weight"], net.state_dict()["fc.weight"])


def test_not_a_state_dict_is_refused(tmp_path):
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(SubmissionError, match="holds a list, not a state dict"):
        parse_state_dict(as_file(tmp_path / "list.pt"))
    (tmp_path / "junk.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(SubmissionError, match="junk.bin was refused: it is not a plain PyTorch state dict"):
        parse_state_dict(as_file(tmp_path / "junk.bin"))
    torch.save(tiny_timm().state_dict(), tmp_path / "full.pt")
    (tmp_path / "truncated.pt").write_bytes((tmp_path / "full.pt").read_bytes()[:5000])
    with pytest.raises(SubmissionError, match="truncated.pt is neither safetensors nor a PyTorch state dict"):
        parse_state_dict(as_file(tmp_path / "truncated.pt"))


def test_key_and_shape_mismatches_are_listed():
    net = tiny_timm()
    state = dict(net.state_dict())
    state["fc.weight"] = torch.zeros(3, state["fc.weight"].shape[1])
    del state["conv1.0.weight"]
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(SubmissionError) as e:
        load_weights(tiny_timm(), state)
    msg = str(e.value)
    assert "1 missing key(s): conv1.0.weight" in msg
    assert "1 unexpected key(s): extra.weight" in msg
    assert "fc.weight (checkpoint (3, 96), model (2, 96))" in msg


def test_data_parallel_prefix_gets_a_hint():
    state = {f"module.{k}": v for k, v in tiny_timm().state_dict().items()}
    with pytest.raises(SubmissionError, match="save model.module.state_dict"):
        load_weights(tiny_timm(), state)


def test_fp16_checkpoint_loads_into_fp32_model(tmp_path):
    net = tiny_timm(seed=3)
    yaml_path = make_submission(tmp_path / "s", net=net, dtype=torch.float16)
    sub = load_submission(yaml_path)
    loaded = sub.model.net.state_dict()
    assert loaded["fc.weight"].dtype == torch.float32
    assert torch.equal(loaded["fc.weight"], net.state_dict()["fc.weight"].half().float())
    assert loaded["bn1.num_batches_tracked"].dtype == torch.int64


def test_pt_submission_loads_same_weights(tmp_path):
    net = tiny_timm(seed=5)
    yaml_path = make_submission(tmp_path / "s", net=net, weights="weights.pt")
    sub = load_submission(yaml_path)
    for k, v in net.state_dict().items():
        assert torch.equal(sub.model.net.state_dict()[k], v), k
    assert sub.checkpoint_sha256 == sha256(tmp_path / "s" / "weights.pt")
    assert sub.yaml_sha256 == sha256(yaml_path)


# --- url checkpoints ----------------------------------------------------------------------------------------


@pytest.fixture
def http_folder(tmp_path):
    """Serve a folder on 127.0.0.1; yields (folder, base_url, list of requested paths)."""
    served = tmp_path / "served"
    served.mkdir()
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(served))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served, f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()


def url_submission(tmp_path: Path, served: Path, base: str, *, sha: str | None = None) -> Path:
    net = tiny_timm(seed=1)
    save_weights(net, served / "w.safetensors")
    digest = sha or sha256(served / "w.safetensors")

    def edit(spec):
        spec["checkpoint"] = {"url": f"{base}/w.safetensors", "sha256": digest}

    return make_submission(tmp_path / "sub", edit=edit)


def test_url_checkpoint_is_downloaded_verified_and_cached(tmp_path, http_folder):
    served, base, requests = http_folder
    yaml_path = url_submission(tmp_path, served, base)
    digest = sha256(served / "w.safetensors")
    sub = load_submission(yaml_path)
    assert sub.checkpoint_sha256 == digest
    cached = checkpoint_cache_dir() / digest
    assert cached.is_file() and sha256(cached) == digest
    assert requests == ["/w.safetensors"]
    load_submission(yaml_path)
    assert requests == ["/w.safetensors"], "second load must reuse the cache"


def test_url_with_wrong_hash_keeps_nothing(tmp_path, http_folder):
    served, base, _ = http_folder
    yaml_path = url_submission(tmp_path, served, base, sha="2" * 64)
    with pytest.raises(SubmissionError, match=f"does not match: expected {'2' * 64}"):
        load_submission(yaml_path)
    cache = checkpoint_cache_dir()
    assert not cache.exists() or list(cache.iterdir()) == []


def test_url_not_found(tmp_path, http_folder):
    served, base, _ = http_folder
    yaml_path = url_submission(tmp_path, served, base)
    (served / "w.safetensors").unlink()
    with pytest.raises(SubmissionError, match="checkpoint.url: download of .* failed: HTTP 404"):
        load_submission(yaml_path)


def test_corrupt_cache_entry_is_replaced(tmp_path, http_folder):
    served, base, requests = http_folder
    yaml_path = url_submission(tmp_path, served, base)
    digest = sha256(served / "w.safetensors")
    checkpoint_cache_dir().mkdir(parents=True)
    (checkpoint_cache_dir() / digest).write_bytes(b"truncated")
    load_submission(yaml_path)
    assert requests == ["/w.safetensors"] and sha256(checkpoint_cache_dir() / digest) == digest


def test_set_checkpoint_helper_roundtrip(tmp_path):
    # The kit used by the CLI tests rewrites the hash correctly.
    yaml_path = make_submission(tmp_path / "s")
    save_weights(tiny_timm(seed=9), tmp_path / "s" / "other.safetensors")
    set_checkpoint(tmp_path / "s", "other.safetensors")
    assert load_submission(yaml_path).checkpoint_sha256 == sha256(tmp_path / "s" / "other.safetensors")
