"""The corruption battery's per-sample columns and metric definitions: a pure function of the config.

Per (corruption, severity): ``p_fracture``, ``correct`` and ``correct/drop`` (clean correct minus corrupted
correct) per image; balanced accuracy, sensitivity, specificity and the balanced-accuracy drop as metrics.
Means over corruptions: ``corrupt/mean-<severity>/`` (when the preset has more than one severity) and
``corrupt/mean/`` (every corruption and severity): per image, the share of conditions classified correctly,
so that the balanced-accuracy reducer gives the mean of the conditions' balanced accuracies (it is linear in
the column). Explanation stability: the endpoint on the clean image (``corrupt/clean/xai/<method>/<endpoint>``),
on each corrupted image, their per-image drop, and the means.
"""

from __future__ import annotations

from ..results.metric_ids import CLEAN_SHIFT, corrupt_id, mean_shift, shift_id
from ..results.metrics import LABEL, MetricDef
from .config import CorruptionConfig, parse_config
from .stability import ENDPOINTS

P_FRACTURE, CORRECT = "p_fracture", "correct"


def shifts(cfg: CorruptionConfig) -> list[str]:
    return [shift_id(c, s) for c, s in cfg.conditions]


def mean_shifts(cfg: CorruptionConfig) -> dict[str, list[str]]:
    """Pooled shift -> the condition shifts it averages (per severity only when there are several)."""
    out = {}
    if len(cfg.severities) > 1:
        for s in cfg.severities:
            out[mean_shift(s)] = [shift_id(c, s) for c in cfg.run]
    out[mean_shift()] = shifts(cfg)
    return out


def column(shift: str, name: str = CORRECT, *, drop: bool = False) -> str:
    return corrupt_id(shift, name, drop=drop)


def xai_column(cfg: CorruptionConfig, shift: str, *, drop: bool = False) -> str:
    st = cfg.stability
    return corrupt_id(shift, st.endpoint, method=st.method, drop=drop)


def stability_mean_shifts(cfg: CorruptionConfig) -> dict[str, list[str]]:
    conds = [shift_id(c, s) for c, s in cfg.stability_conditions]
    return {mean_shift(): conds} if conds else {}


def _classification(shift: str, *, pooled: bool) -> list[MetricDef]:
    correct, drop = column(shift), column(shift, drop=True)
    out = [
        MetricDef(corrupt_id(shift, "balanced_accuracy"), correct, reduce="balanced_accuracy"),
        MetricDef(corrupt_id(shift, "balanced_accuracy", drop=True), drop, reduce="balanced_accuracy",
                  higher_is_better=False),
    ]
    if pooled and shift != mean_shift():  # per-severity means: balanced accuracy and its drop only
        return out
    out += [
        MetricDef(corrupt_id(shift, "sensitivity"), correct, where={LABEL: 1}),
        MetricDef(corrupt_id(shift, "specificity"), correct, where={LABEL: 0}),
    ]
    if pooled:  # the overall mean: which class the corruptions cost, paired
        out += [
            MetricDef(corrupt_id(shift, "sensitivity", drop=True), drop, where={LABEL: 1}, higher_is_better=False),
            MetricDef(corrupt_id(shift, "specificity", drop=True), drop, where={LABEL: 0}, higher_is_better=False),
        ]
    return out


def expected_metrics(config) -> list[MetricDef]:
    cfg = parse_config(config)
    out = []
    for shift in shifts(cfg):
        out += _classification(shift, pooled=False)
    for shift in mean_shifts(cfg):
        out += _classification(shift, pooled=True)
    st = cfg.stability
    if st is not None:
        better = ENDPOINTS.get(st.endpoint).higher_is_better
        name = st.endpoint
        out.append(MetricDef(corrupt_id(CLEAN_SHIFT, name, method=st.method), xai_column(cfg, CLEAN_SHIFT),
                             higher_is_better=better))
        for shift in [shift_id(c, s) for c, s in cfg.stability_conditions] + list(stability_mean_shifts(cfg)):
            out.append(MetricDef(corrupt_id(shift, name, method=st.method), xai_column(cfg, shift),
                                 higher_is_better=better))
            out.append(MetricDef(corrupt_id(shift, name, method=st.method, drop=True),
                                 xai_column(cfg, shift, drop=True), higher_is_better=not better))
    return out
