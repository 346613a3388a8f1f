"""v3's output checks of `validate` (and of `run`, before any battery): measured on the decision margin, and on
real radiographs as well as on the canonical noise batch.

v2 compared whole logit vectors with tolerances of rtol x max |logit|: a model adding 1e6 to both logits passed
"two passes identical" with fresh +-3 noise on its fracture logit. And it compared batch sizes on a noise batch
only: a model that answers honestly on noise and at the sizes checked, and differently on radiograph-like
inputs in any other batch, passed. The rules here are switched on by the version's robustness spec
(`checks.margin`, `checks.model.odd_batch_sizes`, `checks.model.radiographs`); absent (v1, v2): v2's checks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import decision
from ..errors import ModelMisbehaviour


@dataclass(frozen=True)
class MarginRules:
    resolution: float             # refuse a common offset that float32 cannot resolve the margin under
    repeat_rtol: float            # two passes over the same batch
    batch_rtol: float             # an image alone against the same image in a batch
    odd_batch_sizes: tuple[int, ...]  # sizes checked beyond the spec's (a model may be honest only at those)
    radiographs: int              # real images of the embedded subset checked too (0: none)


def margin_rules(preset: str, *, device, version: str | None) -> MarginRules | None:
    """The rules of ``version``'s robustness spec for ``preset`` (auto: the device's default); None before v3."""
    from ..definition import load_definition, resolve_preset

    definition = load_definition(version)
    if "robustness" not in definition.batteries:
        return None
    checks = definition.battery_config("robustness", resolve_preset(preset, torch.device(device))).get("checks")
    if not isinstance(checks, dict) or "margin" not in checks:
        return None
    m, model = checks["margin"], checks.get("model", {})
    return MarginRules(resolution=float(m["resolution"]), repeat_rtol=float(m["repeat_rtol"]),
                       batch_rtol=float(m["batch_rtol"]),
                       odd_batch_sizes=tuple(int(n) for n in model.get("odd_batch_sizes", ())),
                       radiographs=int(model.get("radiographs", 0)))


def radiographs(n: int) -> torch.Tensor:
    """The first ``n`` images of the embedded subset (real radiographs, uint8 / 255), N x 1 x 224 x 224; read
    straight from its parquet file (decoding 8 PNGs; no dataset library)."""
    import numpy as np
    import pyarrow.parquet as pq

    from ..data.embedded import EMBEDDED_DIR, PARQUET
    from ..data.geometry import decode_png

    if n < 1:
        return torch.empty(0, 1, 224, 224)
    rows = pq.read_table(EMBEDDED_DIR / PARQUET, columns=["image"]).slice(0, n).to_pylist()
    arr = np.stack([decode_png(r["image"]["bytes"]) for r in rows]).astype(np.float32) / 255.0
    return torch.from_numpy(arr).unsqueeze(1)


def check_resolution(logits: torch.Tensor, rules: MarginRules, *, where: str) -> float:
    """Refuse logits whose common offset drowns the margin in float32; returns the batch's margin scale."""
    return decision.require_resolvable(logits, resolution=rules.resolution, where=where)


def check_repeat(a: torch.Tensor, b: torch.Tensor, rules: MarginRules, *, where: str) -> None:
    differs = decision.logits_differ(a, b, rules.repeat_rtol, decision.margin_scale(a))
    if bool(differs.any()):
        j = int(differs.nonzero()[0])
        ma, mb = (float(decision.margin(t[j : j + 1].double())[0]) for t in (a, b))
        raise ModelMisbehaviour(
            f"not deterministic in eval mode: two passes over the same batch ({where}) give margins "
            f"z_fracture - z_other of {ma:.6g} and {mb:.6g} for image {j} (dropout left active, or randomness "
            "in forward)"
        )


def check_batches(call, batch_of, k: int, sizes: tuple[int, ...], rules: MarginRules, *, where: str) -> list[int]:
    """The first ``k`` images of ``batch_of(n)`` (the same images whatever n) each alone against the same images
    in a batch of every size in ``sizes``, margins compared. Returns the sizes checked."""
    first_k = batch_of(max(k, 1))[:k]
    with torch.no_grad():
        alone = torch.cat([call(first_k[i : i + 1]) for i in range(k)])
    scale = decision.margin_scale(alone)
    checked = sorted({n for n in sizes if n > 1})
    for n in checked:
        with torch.no_grad():
            got = call(batch_of(n))[: min(k, n)]
        differs = decision.logits_differ(got, alone[: len(got)], rules.batch_rtol, scale)
        if bool(differs.any()):
            j = int(differs.nonzero()[0])
            ma, mb = (float(decision.margin(t[j : j + 1].double())[0]) for t in (alone, got))
            raise ModelMisbehaviour(
                f"not deterministic in eval mode: an image's logits depend on the rest of its batch ({where}, "
                f"image {j} alone vs in a batch of {n}: margins {ma:.6g} and {mb:.6g}); batch statistics are in "
                "use (e.g. batch norm kept in training mode), or the model answers differently at some batch sizes"
            )
    return checked
