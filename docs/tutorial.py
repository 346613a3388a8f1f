"""fxbench from Python: a ten-minute tutorial that runs on the CPU on the embedded data.

    python docs/tutorial.py            # a few minutes on 2 CPU cores; writes only under a temporary folder

Measured with /usr/bin/time -v on this project's 2-core machine while it was shared by four engineers
(load average about 8): 4 min 37 s wall, 128 CPU-seconds, peak memory 1.4 GB.

It loads the data and a shipped baseline, evaluates that baseline and a trivial reference model *in memory*
with `fxbench.evaluate` (the same code and the same result object as `fxbench run`), and compares the two
with the paired bootstrap behind `fxbench compare`. Numbers from the embedded subset and a --limit are for
learning the API, not for the leaderboard (the results say so in their flags).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import fxbench  # its sub-packages (data, models, batteries) load on first use
import torch

LIMIT: int | None = 16  # images (class-balanced) per evaluation: keeps the tutorial to a few CPU minutes
BATTERIES = ["clean", "robustness"]  # add "explanations" for the Captum/Quantus battery (slower)


class AlwaysNoFracture(torch.nn.Module):
    """The trivial reference: the same logits for every image ("no fracture"). Every score of a real model
    is read against it: its balanced accuracy is exactly 0.5, and no attack can change its answer."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.zeros(1))  # a parameter, so gradients exist (all zero)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x.flatten(1)[:, :1] * self.scale
        return torch.cat([z + 5.0, z - 5.0], dim=1)  # [no fracture, fracture]


def main() -> None:
    torch.manual_seed(0)

    # 1. The data: a Hugging Face dataset (the prepared FracAtlas, else the embedded subset).
    ds = fxbench.data.load(split="eval")
    print(f"evaluation split: {len(ds)} images, {sum(ds['label'])} fractured; columns: {ds.column_names[:6]} ...")

    # 2. A submission by id (or a path): hash-checked, weights-only loading; `.model` is the canonical wrapper
    #    (224 x 224 grayscale in [0, 1] -> two logits, fracture at index 1).
    sub = fxbench.load_submission("fxb-resnet10t-pgdat", device="cpu")
    print(f"loaded {sub.spec.id}: {sub.spec.model.architecture}, {sub.n_parameters:,} parameters")

    # 3. Evaluate models in memory. `input`/`output` are model.yaml's blocks; here the baseline's own network
    #    with its declared preprocessing, and the constant reference.
    out = Path(tempfile.mkdtemp(prefix="fxbench-tutorial-"))
    common = dict(preset="quick", batteries=BATTERIES, device="cpu", limit=LIMIT, out=out)
    spec = sub.spec
    model = fxbench.evaluate(sub.model.net, input=spec.input.model_dump(mode="json"),
                             output=spec.output.model_dump(mode="json"), id="tutorial-pgdat", **common)
    ref = fxbench.evaluate(AlwaysNoFracture(), input={"size": 224, "channels": 1, "mean": [0.0], "std": [1.0]},
                           id="tutorial-constant", **common)

    # 4. The result is a RunResult: .result is result.json as a dict, .samples the per-image table.
    for name, r in (("PGD-AT baseline", model), ("always 'no fracture'", ref)):
        m = r.result["metrics"]
        print(f"{name:>22}: clean balanced accuracy {m['clean/balanced_accuracy']['value']:.3f}, "
              f"robust (L-inf 4/255) balanced accuracy {m['robust/linf-4/balanced_accuracy']['value']:.3f}, "
              f"n = {m['clean/balanced_accuracy']['n']}")
    print("flags:", ", ".join(f["code"] for f in model.result["flags"]))

    # 5. Paired comparison, as `fxbench compare A B`: Holm-adjusted p-values, no CI below min_n_for_ci.
    from fxbench.leaderboard.compare import compare_results, format_table, resolve_result

    c = compare_results(resolve_result(str(ref.out_dir), results_dir="."),
                        resolve_result(str(model.out_dir), results_dir="."),
                        select="headline", correction="holm")
    print(format_table(c))
    # How to read it: with LIMIT images every line is below min_n_for_ci, so no CI or p-value is printed and
    # no difference here, in either direction, is evidence of anything. On 16 images the baseline can even
    # score below the constant classifier. Set LIMIT = None for the whole embedded subset (96 images), or
    # prepare FracAtlas (`fxbench data prepare`) for the benchmark's 801.
    print(f"\nresult files: {model.out_dir}/result.json and {ref.out_dir}/result.json")


if __name__ == "__main__":
    main()
