"""Where the audit's clean tolerance comes from (v3 spec, leaderboard.audit.margin_band): how far the decision
margin z_fracture - z_other of the committed baselines moves when the same images are evaluated in other
batches or with other thread counts (other float32 summation orders), here on the 96 embedded images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from fxbench.clean import clean_logits
from fxbench.data import load_arrays
from fxbench.leaderboard.audit import audit_settings
from fxbench.models import load_submission, strict_fp32

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("sid", ["fxb-resnet10t-pgdat-v2", "fxb-effb0-erm-v2"])
def test_the_margin_band_is_far_above_the_float_noise_of_the_baselines(sid):
    ev = load_arrays(None, split="eval")
    model = load_submission(REPO / "submissions" / sid / "model.yaml").model
    margins = []
    threads = torch.get_num_threads()
    try:
        with strict_fp32():
            for n_threads, batch in ((1, 96), (1, 1), (1, 7), (2, 32)):
                torch.set_num_threads(n_threads)
                z = clean_logits(model, ev.x, batch_size=batch).double().numpy()
                margins.append(z[:, 1] - z[:, 0])
    finally:
        torch.set_num_threads(threads)
    noise = max(float(np.abs(m - margins[0]).max()) for m in margins[1:])
    band = audit_settings("v3").margin_band
    assert noise < band / 10  # measured: 2.7e-5 (EfficientNet-B0), 4.8e-7 (ResNet-10t)
    assert float(np.abs(margins[0]).min()) > noise  # the embedded images' decisions are all clear of it
