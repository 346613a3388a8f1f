"""What a result in a version folder of the results store must match: the version's spec, taken from the
versioned benchmark definition and the committed split manifest, never from the result being checked."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..definition import PRESETS
from ..errors import FxbenchError, ResultError
from ..results.metrics import MetricDef


@dataclass(frozen=True)
class VersionSpec:
    """What a result in a version folder must match. ``version_spec`` fills every field; the optional ones are
    None only in synthetic specs that tests build (nothing is then checked for them)."""

    version: str
    fingerprint: str
    config_hashes: dict[str, str]  # preset -> config hash
    bootstrap: dict[str, Any]  # n_resamples, seed, alpha
    configs: dict[str, dict[str, Any]] | None = None  # preset -> resolved config (what the hash covers)
    catalogue: dict[str, dict[str, MetricDef]] | None = None  # preset -> metric id -> definition
    eval_split: dict[str, tuple[str, int]] | None = None  # image id -> (split, label) of the eval split


def version_spec(version: str) -> VersionSpec:
    from ..data.manifest import load_manifest
    from ..data.splits import EVAL
    from ..definition import load_definition

    try:
        d = load_definition(version)
        catalogue = {p: d.metric_catalogue(p) for p in PRESETS}
    except FxbenchError as e:
        raise ResultError(f"results folder {version!r}: {e}") from None
    manifest = load_manifest()
    if manifest is None:
        raise ResultError(f"results folder {version!r}: no split manifest is committed to check image ids against")
    eval_split = {i: sl for i, sl in manifest.labels().items() if sl[0] in EVAL}
    return VersionSpec(
        version=version,
        fingerprint=d.dataset_fingerprint,
        config_hashes={p: d.config_hash(p) for p in PRESETS},
        bootstrap=d.bootstrap,
        configs={p: d.resolved(p) for p in PRESETS},
        catalogue=catalogue,
        eval_split=eval_split,
    )


__all__ = ["VersionSpec", "version_spec"]
