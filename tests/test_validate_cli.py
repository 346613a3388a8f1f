"""`fxbench validate` through the real entry point: exit 0 when valid, exit 2 naming the problem otherwise."""

from __future__ import annotations

import importlib.util
import os
import pickle
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file
from submission_kit import make_submission, set_checkpoint, sha256, write_yaml


def refused(result, *needles: str) -> str:
    assert result.exit_code == 2, result
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)
    assert result.stdout == "", result.stdout
    return result.stderr


def listing(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def edit_yaml(yaml_path: Path, edit) -> None:
    spec = yaml.safe_load(yaml_path.read_text())
    edit(spec)
    write_yaml(yaml_path.parent, spec)


def test_valid_submission_exits_0_and_writes_nothing(tmp_path, cli):
    yaml_path = make_submission(tmp_path / "sub", channels=3)
    before = listing(tmp_path)
    r = cli("validate", tmp_path / "sub")
    assert r.exit_code == 0, r
    for check in ("schema", "checkpoint", "weights", "forward", "finite", "deterministic", "gradient"):
        assert check in r.stdout
    assert "FAIL" not in r.stdout and f"valid: fxb-tiny ({yaml_path})" in r.stdout
    assert "Grad-CAM layer: layer4" in r.stdout
    assert listing(tmp_path) == before
    home = Path(os.environ["FXBENCH_HOME"])
    assert not home.exists() or not any(home.rglob("*"))


def test_single_logit_and_fp16_pt_submissions_are_valid(tmp_path, cli):
    assert cli("validate", make_submission(tmp_path / "a", num_classes=1)).exit_code == 0
    r = cli("validate", make_submission(tmp_path / "b", weights="w.pt", dtype=torch.float16))
    assert r.exit_code == 0, r
    assert "float16" in r.stdout


def test_malformed_yaml(tmp_path, cli):
    (tmp_path / "model.yaml").write_text("id: fxb-x\nname: [oops\n")
    refused(cli("validate", tmp_path), "model.yaml: not valid YAML: line")


@pytest.mark.parametrize(
    "edit, needles",
    [
        (lambda s: s.pop("license"), ["license: required field is missing"]),
        (lambda s: s["input"].update(channels="three"), ["input.channels: "]),
        (
            lambda s: s.update(chekpoint=s.pop("checkpoint")),
            ["chekpoint: unknown key; did you mean 'checkpoint'?"],
        ),
        (
            lambda s: s["model"].update(timm="resnet_18"),
            ["unknown timm architecture 'resnet_18'", "resnet18"],
        ),
        (
            lambda s: s["checkpoint"].update(sha256="f" * 64),
            ["checkpoint.sha256: weights.safetensors does not match", "expected " + "f" * 64],
        ),
        (lambda s: s["checkpoint"].update(path="nothere.safetensors"), ["checkpoint.path: file not found"]),
        (
            lambda s: s["checkpoint"].update(path="../weights.safetensors"),
            ["leads outside the submission folder"],
        ),
        (lambda s: s["model"]["kwargs"].update(num_classes=3), ["does not fit the model", "fc.weight"]),
    ],
)
def test_bad_submissions_exit_2(tmp_path, cli, edit, needles):
    yaml_path = make_submission(tmp_path / "sub")
    (tmp_path / "weights.safetensors").write_bytes((tmp_path / "sub" / "weights.safetensors").read_bytes())
    edit_yaml(yaml_path, edit)
    msg = refused(cli("validate", yaml_path), *needles)
    assert str(yaml_path) in msg


def test_wrong_input_channels_fail_the_forward_check(tmp_path, cli):
    # Weights fit (3-channel timm model) but the yaml says 1 channel: conv sees 1 channel, says so.
    yaml_path = make_submission(tmp_path / "sub", channels=3)
    edit_yaml(yaml_path, lambda s: s["input"].update(channels=1, mean=[0.5], std=[0.2]))
    # in_chans=3 stays in kwargs, so the weights load; the wrapper then refuses in words (issue 24), before the
    # forward pass would fail with PyTorch's shape error.
    refused(cli("validate", yaml_path), "input.channels is 1, but the network's first convolution 'conv1.0' "
            "takes 3 channels: declare channels: 3")


def test_symlink_out_of_the_folder(tmp_path, cli):
    yaml_path = make_submission(tmp_path / "sub")
    os.replace(tmp_path / "sub" / "weights.safetensors", tmp_path / "outside.safetensors")
    (tmp_path / "sub" / "weights.safetensors").symlink_to(tmp_path / "outside.safetensors")
    refused(cli("validate", yaml_path), "goes through a symlink that leads outside the submission folder")


class WritesFile:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def test_pickle_payload_is_refused_and_never_runs(tmp_path, cli):
    folder = tmp_path / "sub"
    make_submission(folder)
    marker = tmp_path / "pwned.txt"
    torch.save({"conv1.0.weight": torch.zeros(1), "payload": WritesFile(marker)}, folder / "weights.pt")
    set_checkpoint(folder, "weights.pt")  # correct hash: the refusal must come from the loader itself
    refused(cli("validate", folder), "weights.pt was refused", "its pickle would call exec")
    assert not marker.exists()
    (folder / "raw.pkl").write_bytes(pickle.dumps(WritesFile(marker)))
    set_checkpoint(folder, "raw.pkl")
    refused(cli("validate", folder), "raw.pkl was refused")
    assert not marker.exists()


def test_missing_model_yaml_and_path(tmp_path, cli):
    refused(cli("validate", tmp_path), "no model.yaml in this folder")
    refused(cli("validate", tmp_path / "nope"), "no such file or folder")


# --- entrypoint models --------------------------------------------------------------------------------------

MODELS = '''
import torch
import torch.nn.functional as F
from torch import nn


class Pooled(nn.Module):
    """Logits from the mean intensity; ``mode`` picks a way to be a bad submission."""

    def __init__(self, mode="good", outputs=2):
        super().__init__()
        self.mode = mode
        self.lin = nn.Linear(1, outputs)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        h = x.mean(dim=(1, 2, 3))[:, None].repeat(1, 1)
        if self.mode == "detached":
            h = h.detach()
        if self.mode == "batch_stats":
            h = F.batch_norm(x, None, None, training=True).pow(2).mean(dim=(1, 2, 3))[:, None]
        if self.mode == "needs_a_batch":
            h = F.batch_norm(h, None, None, training=True)
        z = self.lin(h)
        if self.mode == "nan":
            z = z * float("nan")
        if self.mode == "noisy":
            z = z + torch.rand_like(z)
        if self.mode == "dropout":
            z = F.dropout(z, 0.5, training=True)
        if self.mode == "stuck_train":
            z = self.drop(z)
        return z

    def train(self, mode=True):
        # "stuck_train" ignores eval(): its dropout stays active.
        return super().train(True if self.mode == "stuck_train" else mode)


def build(mode="good", outputs=2):
    return Pooled(mode, outputs)
'''


def entry_submission(folder: Path, **kwargs) -> Path:
    folder.mkdir(parents=True)
    (folder / "model.py").write_text(textwrap.dedent(MODELS))
    spec = importlib.util.spec_from_file_location("fxbench_test_models", folder / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    save_file(module.build(**kwargs).state_dict(), str(folder / "w.safetensors"))
    yaml_path = make_submission(folder / "tmp")  # a valid spec to start from
    raw = yaml.safe_load(yaml_path.read_text())
    raw["model"] = {"entrypoint": "model.py:build", "kwargs": kwargs}
    raw["checkpoint"] = {"path": "w.safetensors", "sha256": sha256(folder / "w.safetensors")}
    return write_yaml(folder, raw)


def test_entrypoint_needs_trust_code(tmp_path, cli):
    yaml_path = entry_submission(tmp_path / "sub")
    refused(cli("validate", yaml_path), "model.entrypoint: model.py:build runs Python code", "--trust-code")
    r = cli("validate", yaml_path, "--trust-code")
    assert r.exit_code == 0, r
    assert "entrypoint:model.py:build" in r.stdout


@pytest.mark.parametrize(
    "kwargs, needles",
    [
        ({"outputs": 3}, ["model check 'forward' failed", "shape (4, 3), expected (N, 2)"]),
        ({"mode": "nan"}, ["model check 'finite' failed: 8 of 8 output logits are NaN"]),
        ({"mode": "noisy"}, ["model check 'deterministic' failed: not deterministic in eval mode"]),
        ({"mode": "dropout"}, ["model check 'deterministic' failed: not deterministic in eval mode"]),
        (
            {"mode": "stuck_train"},
            ["model check 'eval mode' failed: modules still in training mode after eval()"],
        ),
        (
            {"mode": "batch_stats"},
            ["model check 'batch independent' failed", "depend on the rest of its batch"],
        ),
        (
            {"mode": "needs_a_batch"},
            ["'batch independent' failed: forward pass on a canonical batch (1, 1, 224, 224)"],
        ),
        ({"mode": "detached"}, ["model check 'gradient' failed: the output has no gradient"]),
    ],
)
def test_bad_model_behaviour_exits_2(tmp_path, cli, kwargs, needles):
    refused(cli("validate", entry_submission(tmp_path / "sub", **kwargs), "--trust-code"), *needles)


# --- devices ------------------------------------------------------------------------------------------------


def test_unknown_device(tmp_path, cli):
    refused(
        cli("validate", make_submission(tmp_path / "sub"), "--device", "tpu"), "--device tpu: unknown device"
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_on_a_cpu_machine(tmp_path, cli):
    refused(
        cli("validate", make_submission(tmp_path / "sub"), "--device", "cuda"),
        "--device cuda: no CUDA device is available here",
    )
