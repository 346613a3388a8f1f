"""validate compares an image alone with the same image in the batch sizes the batteries use."""

from __future__ import annotations

import pytest
import torch
from fxbench.errors import ModelMisbehaviour
from fxbench.models import check_model_outputs, wrap
from fxbench.models.validate import battery_batch_sizes


class BigBatchTrick(torch.nn.Module):
    """Honest on batches of up to 4 images (what v1's check used); shifts its logits in larger batches."""

    def forward(self, x):
        z = x.mean(dim=(1, 2, 3))[:, None] * torch.tensor([[-1.0, 1.0]])
        return z + (0.5 if x.shape[0] > 8 else 0.0)


def test_batch_independence_is_checked_at_the_batteries_batch_sizes():
    sizes = battery_batch_sizes("quick")
    assert max(sizes) > 8 and 48 in sizes  # the robustness battery's quick batch
    model = wrap(BigBatchTrick())
    check_model_outputs(model, device="cpu", batch_sizes=(4,))  # what the old check saw: passes
    with pytest.raises(ModelMisbehaviour, match="alone vs in a batch of"):
        check_model_outputs(model, device="cpu")  # the default: this device's preset's batch sizes
