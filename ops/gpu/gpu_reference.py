"""Write submissions/fxb-reference-no-fracture: the trivial reference row, a model that always answers "no fracture".

A plain timm architecture (lcnet_035, 0.37M parameters, 0.7 MiB as fp16), so it loads without --trust-code,
whose classifier has all-zero weights and the biases [+B, -B]: the logits are exactly [B, -B] for every
input, p(fracture) = sigmoid(-2B), the answer is always "no fracture" at the clean battery's 0.5 threshold.
The backbone is randomly initialised (seed 0) and has no influence on the output. Every score of a
constant classifier is known in advance (balanced accuracy, AUROC and robust balanced accuracy 0.5; no
attack can change its answer), so its row reads every other row against chance; its gradient with respect
to the input is exactly zero, so its attribution maps are all-zero (what the explanation battery does
with that is part of what the row shows).

Usage: python3 ops/gpu/gpu_reference.py [--out submissions]   (deterministic: the same bytes every time)
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import torch
import yaml

ID = "fxb-reference-no-fracture"
ARCH = "lcnet_035"
BIAS = 5.0  # logits [5, -5]: p(fracture) = sigmoid(-10) = 4.5e-5

CARD = """# Reference: always "no fracture"

`{id}`: the benchmark's trivial reference row. It is not a baseline to beat by a little: it is the floor
that every number on the leaderboard is read against.

## What it is
- timm `{arch}` (1 input channel, 2 classes; {n_params:,} parameters, {size_kib:.0f} KiB as fp16), loaded like
  any submission (no `--trust-code`), with its **classifier weights set to zero** and its classifier biases
  set to [+{b:g}, -{b:g}]. The logits are exactly [{b:g}, -{b:g}] for every image: p(fracture) =
  sigmoid(-{b2:g}) = {p:.1e}, the answer is "no fracture" for every input, clean or perturbed.
- The backbone is randomly initialised (seed 0) and never reaches the output; its gradient with respect to
  the input is exactly zero.
- Written by `python3 scripts/gpu_reference.py` (deterministic); no data was used.

## What it is for
- **Chance, measured by the harness itself.** Its expected scores are known: clean balanced accuracy 0.5,
  sensitivity 0, specificity 1, AUROC 0.5 (all scores tie); plain accuracy equals the share of
  non-fractured images (about 0.82 on the evaluation split: why plain accuracy is a poor headline);
  robust accuracy equals its clean accuracy at every budget, and robust balanced accuracy is 0.5, since no
  perturbation changes a constant. A result that deviates from these shows a harness bug.
- **What an explanation metric gives for a model that looks at nothing.** Its attributions are all zero
  (or undefined where a method normalises by their sum); the reference maps of the explanation battery
  (random, centre, edge, mask) remain the chance references for localisation.
- Any model whose balanced accuracy, clean or robust, is not clearly above 0.5 is doing no better than
  this row.

## Limitations
- Not a model of anything: do not rank it, cite it as a baseline, or read its explanation scores as those
  of a real classifier.
"""


def build(out: Path) -> Path:
    import timm
    from fxbench.io import save_safetensors

    torch.manual_seed(0)
    net = timm.create_model(ARCH, pretrained=False, num_classes=2, in_chans=1)
    head = net.get_classifier()
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.tensor([BIAS, -BIAS]))
    state = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in net.state_dict().items()}
    folder = out / ID
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / "weights.safetensors"
    save_safetensors(state, weights, metadata={"format": "pt", "fxbench_id": ID})  # sorted metadata: same bytes
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    spec = {
        "id": ID,
        "name": 'Reference: always "no fracture" (constant classifier)',
        "authors": ["fxbench baselines"],
        "license": "Apache-2.0",
        "description": (
            "The trivial reference row: a timm lcnet_035 whose classifier weights are zero, so it answers "
            '"no fracture" with the same logits for every input. Reads every other row against chance.'
        ),
        "model": {"timm": ARCH, "kwargs": {"num_classes": 2, "in_chans": 1}},
        "checkpoint": {"path": weights.name, "sha256": sha},
        "input": {"size": 224, "channels": 1, "mean": [0.5], "std": [0.25]},
        "output": {"num_classes": 2, "fracture_index": 1},
        "training": {"adversarial": False, "method": "none (constant classifier)"},
        "extra": {"reference": "constant-no-fracture", "logits": [BIAS, -BIAS], "seed": 0},
    }
    # The committed files name the script's old path (scripts/): model.yaml's bytes are hashed into the committed
    # results (yaml_sha256), so the text stays as it was when they were written.
    (folder / "model.yaml").write_text(
        "# Written by scripts/gpu_reference.py.\n" + yaml.safe_dump(spec, sort_keys=False), encoding="utf-8"
    )
    n = sum(p.numel() for p in net.parameters())
    (folder / "README.md").write_text(
        CARD.format(
            id=ID,
            arch=ARCH,
            n_params=n,
            size_kib=weights.stat().st_size / 1024,
            b=BIAS,
            b2=2 * BIAS,
            p=float(torch.sigmoid(torch.tensor(-2 * BIAS))),
        ),
        encoding="utf-8",
    )
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("submissions"))
    print(build(ap.parse_args().out))


if __name__ == "__main__":
    main()
