"""validate compares an image alone with the same image in the batch sizes the batteries use."""

from __future__ import annotations

import pytest
import torch
from fxbench.definition import load_definition
from fxbench.errors import ModelMisbehaviour
from fxbench.models import check_model_outputs, wrap


class BigBatchTrick(torch.nn.Module):
    """Honest on batches of up to 4 images (what v1's check used); shifts its logits in larger batches."""

    def forward(self, x):
        z = x.mean(dim=(1, 2, 3))[:, None] * torch.tensor([[-1.0, 1.0]])
        return z + (0.5 if x.shape[0] > 8 else 0.0)


def test_batch_independence_is_checked_at_the_batteries_batch_sizes():
    sizes = load_definition(None).batch_sizes("quick")
    assert max(sizes) > 8 and 48 in sizes  # the robustness battery's quick batch
    model = wrap(BigBatchTrick())
    check_model_outputs(model, device="cpu", batch_sizes=(4,))  # what the old check saw: passes
    with pytest.raises(ModelMisbehaviour, match="alone vs in a batch of"):
        check_model_outputs(model, device="cpu")  # the default: this device's preset's batch sizes


BATCH_TRICK_PY = """
import torch
from torch import nn


class Net(nn.Module):
    # Honest alone and at every batch size the spec names; shifts its logits only in a batch of 24, the batched
    # model metrics' forward size in the test below (1024 on CUDA), which v2's `validate` did not check and
    # `run` did.
    def __init__(self):
        super().__init__()
        self.head = nn.Linear(1, 2)

    def forward(self, x):
        z = self.head(x.mean(dim=(1, 2, 3)).unsqueeze(1))
        return z + (0.5 if x.shape[0] == 24 else 0.0)


def build():
    return Net()
"""


def batch_trick_submission(folder):
    import hashlib
    import textwrap

    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    (folder / "model.py").write_text(BATCH_TRICK_PY)
    torch.manual_seed(0)
    net = torch.nn.Linear(1, 2)
    save_file({f"head.{k}": v.contiguous() for k, v in net.state_dict().items()}, str(folder / "w.safetensors"))
    sha = hashlib.sha256((folder / "w.safetensors").read_bytes()).hexdigest()
    (folder / "model.yaml").write_text(textwrap.dedent(f"""\
        id: batch-trick
        name: Batch trick
        authors: ["fxbench tests"]
        license: CC-BY-4.0
        model: {{entrypoint: model.py:build}}
        checkpoint: {{path: w.safetensors, sha256: {sha}}}
        input: {{size: 224, channels: 1, mean: [0.5], std: [0.25]}}
        output: {{num_classes: 2, fracture_index: 1}}
        training: {{adversarial: false, method: ERM}}
        """))
    return folder / "model.yaml"


def test_validate_and_run_refuse_the_same_batch_dependent_model(tmp_path, monkeypatch):
    """One rule (models.validate.check_batch_sizes) for both: a model `run` refuses is refused by `validate`.
    v2's validate checked only the spec's batch sizes, run also the batched metrics' forward batch (1024 on
    CUDA); the forward batch is set to 24 here to stand for it on the CPU."""
    from fxbench.models import device, validate_submission
    from fxbench.run import run_submission

    monkeypatch.setattr(device, "CPU_FORWARD_BATCH", 24)
    assert 24 not in load_definition(None).batch_sizes("quick")  # only the fast path's batch
    yaml_path = batch_trick_submission(tmp_path / "sub")
    report = validate_submission(yaml_path, device="cpu", trust_code=True)
    assert not report.ok and "alone vs in a batch of 24" in report.error
    with pytest.raises(ModelMisbehaviour, match="alone vs in a batch of 24"):
        run_submission(yaml_path, out=tmp_path / "out", device="cpu", preset="quick", limit=4, trust_code=True,
                       batteries=["clean"])
