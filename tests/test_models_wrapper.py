"""CanonicalModel against hand computations: channels, normalisation, resize, logit layout, gradients."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from conftest import linear_model
from fxbench.models import wrap
from torch import nn


class Recorder(nn.Module):
    """Returns fixed logits and keeps the tensor it was given."""

    def __init__(self, logits: list[float]):
        super().__init__()
        self.logits = torch.tensor(logits)
        self.scale = nn.Parameter(torch.ones(1))
        self.seen = None

    def forward(self, x):
        self.seen = x.detach().clone()
        return self.logits.expand(x.shape[0], -1) * self.scale + 0 * x.sum()


def test_three_channel_model_sees_replicated_normalised_grayscale():
    net = Recorder([0.0, 1.0])
    model = wrap(net, channels=3, mean=(0.1, 0.2, 0.3), std=(0.5, 0.25, 2.0), input_size=224)
    x = torch.rand(2, 1, 224, 224)
    model(x)
    assert net.seen.shape == (2, 3, 224, 224)
    for c, (m, s) in enumerate([(0.1, 0.5), (0.2, 0.25), (0.3, 2.0)]):
        torch.testing.assert_close(net.seen[:, c], (x[:, 0] - m) / s)


def test_input_is_resized_to_the_declared_size():
    net = Recorder([0.0, 1.0])
    model = wrap(net, channels=1, mean=(0.0,), std=(1.0,), input_size=112)
    x = torch.rand(1, 1, 224, 224)
    model(x)
    # Halving with bilinear (align_corners=False) samples between pixel pairs: exactly a 2x2 average.
    torch.testing.assert_close(net.seen, F.avg_pool2d(x, 2))


def test_single_logit_becomes_zero_and_z():
    model = wrap(Recorder([2.5]), num_classes=1)
    torch.testing.assert_close(model(torch.rand(3, 1, 224, 224)), torch.tensor([[0.0, 2.5]] * 3))


def test_fracture_index_zero_swaps_the_logits():
    model = wrap(Recorder([3.0, -1.0]), fracture_index=0)
    torch.testing.assert_close(model(torch.rand(1, 1, 224, 224)), torch.tensor([[-1.0, 3.0]]))


def test_gradient_reaches_the_canonical_input():
    w = torch.randn(224 * 224)
    model = linear_model(w)  # z = w.x, logits [-z/2, z/2]
    x = torch.rand(2, 1, 224, 224, requires_grad=True)
    model(x)[:, 1].sum().backward()
    torch.testing.assert_close(x.grad, (w / 2).reshape(1, 1, 224, 224).expand(2, -1, -1, -1))


def test_gradient_through_normalisation_and_channels():
    # 3 channels, std s_c: d/dx of sum_c w_c (x - m_c) / s_c is sum_c w_c / s_c.
    class ChannelSum(nn.Module):
        def forward(self, x):
            z = (x * torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1)).sum(dim=(1, 2, 3))
            return torch.stack([torch.zeros_like(z), z], dim=1)

    model = wrap(ChannelSum(), channels=3, mean=(0.5, 0.5, 0.5), std=(0.5, 0.25, 2.0))
    x = torch.rand(1, 1, 224, 224, requires_grad=True)
    model(x)[:, 1].sum().backward()
    torch.testing.assert_close(x.grad, torch.full_like(x, 1 / 0.5 + 2 / 0.25 + 3 / 2.0))


def test_parameters_frozen_and_eval_mode_kept():
    model = wrap(nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(224 * 224, 2)))
    assert not any(p.requires_grad for p in model.parameters())
    model.train()
    assert not any(m.training for m in model.modules())
    x = torch.rand(2, 1, 224, 224)
    assert torch.equal(model(x), model(x))  # dropout inactive
