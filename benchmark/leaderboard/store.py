"""The results store: ``<results>/<version>/<submission-id>.json`` with ``<submission-id>.parquet`` (the
per-sample table) beside it and optional overlay images under ``<submission-id>/gallery/``.

Every file is checked on the way in; a file that does not belong is refused with the reason, so a table
never mixes versions, datasets or battery configurations. What a version requires is ``spec.VersionSpec``;
the size and format checks of the parquet and PNG files are in ``filechecks``; the consistency of a result
with its version (ids, definitions, values, CIs, split) and the reading of the store are here.
"""

from __future__ import annotations

import html
import io
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..definition import PRESETS as DEFINED_PRESETS
from ..definition import hash_config
from ..errors import FxbenchError, ResultError
from ..results.metric_ids import XAI, adv_variant, try_parse
from ..results.metrics import LABEL, REDUCERS, MetricDef, compute_metric
from ..results.resultfile import read_limited, read_result
from .consistency import check_consistency, copied_rows
from .evidence import Evidence, audits_root, orphan_records, read_evidence
from .filechecks import MAX_SAMPLES_BYTES, check_gallery, check_parquet_size
from .spec import VersionSpec, version_spec

VERSION_RE = re.compile(r"^v[0-9]+$")  # used with fullmatch: "v1\n" is not a version
# The order the leaderboard lists presets in (full first): the presets are fxbench.definition's, whose own
# order ("quick", "full") would put v1's quick table above its full one. generate.py imports this name.
PRESETS = tuple(sorted(DEFINED_PRESETS, key=lambda p: p != "full"))


@dataclass
class StoredResult:
    version: str
    path: Path  # the <id>.json file
    result: dict[str, Any]
    samples: pd.DataFrame
    gallery: dict[str, Path] = field(default_factory=dict)  # "gallery/<...>.png" -> file
    evidence: Evidence = field(default_factory=Evidence)  # that the run happened (evidence.py)

    @property
    def id(self) -> str:
        return self.result["submission"]["id"]

    @property
    def name(self) -> str:
        return self.result["submission"]["name"]

    @property
    def preset(self) -> str:
        return self.result["benchmark"]["preset"]

    @property
    def metrics(self) -> dict[str, dict[str, Any]]:
        return self.result["metrics"]

    @property
    def flags(self) -> list[dict[str, str]]:
        return self.result["flags"]

    def metric_def(self, metric_id: str) -> MetricDef:
        """The definition stored with the metric; the store accepted it only where it equals the catalogue's."""
        m = self.metrics[metric_id]
        return MetricDef.from_json(metric_id, m["definition"], m["higher_is_better"])


@dataclass
class Store:
    root: Path
    versions: dict[str, list[StoredResult]]  # version -> results sorted by id
    specs: dict[str, VersionSpec]


def read_json(path: Path) -> dict[str, Any]:
    """A result file, read and checked against the schema (the one reader: fxbench.results.resultfile)."""
    return read_result(path)


def samples_path(json_path: Path, result: dict[str, Any]) -> Path:
    """A run folder's ``files.samples`` beside its result.json; ``<id>.parquet`` beside ``<id>.json`` in the store.
    The schema allows ``files.samples`` to be a plain file name only, so it cannot leave the run folder."""
    if json_path.name == "result.json":
        name = result.get("files", {}).get("samples", "samples.parquet")
        if Path(name).name != name or name.startswith("."):
            raise ResultError(f"{json_path}: files.samples {name!r} must name a file in the run folder")
        return json_path.parent / name
    return json_path.with_suffix(".parquet")


def read_samples(path: Path, result: dict[str, Any], source: Path, spec: VersionSpec | None = None) -> pd.DataFrame:
    if not path.is_file() and not path.is_symlink():
        raise ResultError(f"{source}: its per-sample file {path.name} is missing (expected at {path})")
    data = read_limited(path, MAX_SAMPLES_BYTES, what="per-sample file")
    check_parquet_size(data, path)
    try:
        df = pd.read_parquet(io.BytesIO(data))
    except Exception as e:  # noqa: BLE001 - pyarrow raises many types for a corrupt file
        raise ResultError(f"{path}: not a readable parquet file ({type(e).__name__}: {e})") from None
    for col in ("image_id", LABEL):
        if col not in df.columns:
            raise ResultError(f"{path}: column {col!r} is missing")
    if df["image_id"].duplicated().any():
        dup = df.loc[df["image_id"].duplicated(), "image_id"].iloc[0]
        raise ResultError(f"{path}: image_id {dup!r} appears more than once")
    n = result["benchmark"]["dataset"]["n"]
    if len(df) != n:
        raise ResultError(f"{path}: {len(df)} rows, but the result says the dataset has n={n} images")
    if spec is not None and spec.eval_split is not None:
        check_eval_split(df, spec, source=f"{source} (per-sample file {path.name})")
    if spec is not None and spec.catalogue is not None:
        check_against_catalogue(result, df, spec, source=f"{source} (per-sample file {path.name})")
        check_consistency(result, df, source=f"{source} (per-sample file {path.name})")
    else:
        check_metric_values(result, df, source=f"{source} (per-sample file {path.name})")
    return df


def check_eval_split(df: pd.DataFrame, spec: VersionSpec, *, source: str) -> None:
    """The per-sample rows are exactly the manifest's evaluation split, with the manifest's labels."""
    want = spec.eval_split or {}
    have = [str(i) for i in df["image_id"]]
    missing = sorted(set(want) - set(have))
    extra = sorted(set(have) - set(want))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} evaluation image(s) missing (e.g. {missing[0]})")
        if extra:
            parts.append(f"{len(extra)} image(s) not in the evaluation split (e.g. {extra[0]!r})")
        raise ResultError(f"{source}: image ids are not {spec.version}'s evaluation split of {len(want)} images "
                          f"from the committed manifest: {'; '.join(parts)}")
    labels = pd.to_numeric(df[LABEL], errors="coerce").to_numpy(float)  # a forged "x" or NaN is simply wrong
    wrong = [i for i, y in zip(have, labels, strict=True) if not y == want[i][1]]
    if wrong:
        raise ResultError(f"{source}: {len(wrong)} label(s) differ from the manifest (e.g. {wrong[0]})")
    if "split" in df.columns:
        moved = [i for i, s in zip(have, df["split"], strict=True) if s != want[i][0]]
        if moved:
            raise ResultError(f"{source}: {len(moved)} image(s) in another split than the manifest's (e.g. {moved[0]})")


def allowed_omissions(result: dict[str, Any]) -> Callable[[str], bool]:
    """A catalogue metric may be missing only where the battery recorded why: an attribution method it
    reported unsupported (``components.explanations.unsupported``: ``<method>`` or ``<method>/adv-<attack>``),
    or under-attack metrics when the attack on explanations was not computed."""
    xai = (result.get("components") or {}).get("explanations") or {}
    unsupported = xai.get("unsupported") if isinstance(xai.get("unsupported"), dict) else {}
    attack_done = (xai.get("under_attack") or {}).get("status") == "computed"

    def ok(mid: str) -> bool:
        p = try_parse(mid)
        if p is None or p.family != XAI or p.method is None:
            return False
        if p.under_attack:  # adv-<attack> (with its flipped split) and drop-<attack>
            return not attack_done or p.method in unsupported or f"{p.method}/{adv_variant(p.threat)}" in unsupported
        return p.method in unsupported

    return ok


def check_metric_ids(result: dict[str, Any], spec: VersionSpec, *, source: Any) -> dict[str, MetricDef]:
    """Ids, definitions and directions as the version's catalogue has them; returns the catalogue's defs."""
    preset = result["benchmark"]["preset"]
    catalogue = (spec.catalogue or {}).get(preset)
    if catalogue is None:
        raise ResultError(f"{source}: {spec.version} has no metric catalogue for preset {preset!r}")
    stored = result["metrics"]
    extra = sorted(set(stored) - set(catalogue))
    if extra:
        raise ResultError(f"{source}: metric {extra[0]} is not defined by {spec.version} ({preset} preset)"
                          + (f" ({len(extra) - 1} more)" if len(extra) > 1 else ""))
    may_omit = allowed_omissions(result)
    missing = sorted(m for m in set(catalogue) - set(stored) if not may_omit(m))
    if missing:
        raise ResultError(f"{source}: metric {missing[0]} of {spec.version} is missing and no battery reported it "
                          "unsupported" + (f" ({len(missing) - 1} more)" if len(missing) > 1 else ""))
    for mid, m in sorted(stored.items()):
        want = catalogue[mid]
        if m["definition"] != want.to_json():
            raise ResultError(f"{source}: metric {mid} has definition {m['definition']}, but {spec.version} "
                              f"defines it as {want.to_json()}")
        if m["higher_is_better"] != want.higher_is_better:
            raise ResultError(f"{source}: metric {mid} says higher_is_better={m['higher_is_better']}, but "
                              f"{spec.version} defines {want.higher_is_better}")
    return {mid: catalogue[mid] for mid in stored}


def _same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def check_against_catalogue(result: dict[str, Any], df: pd.DataFrame, spec: VersionSpec, *, source: str) -> None:
    """Every stored value, n and CI must be what the catalogue's definition and the version's bootstrap
    settings give on the per-sample table."""
    defs = check_metric_ids(result, spec, source=source)
    catalogue = (spec.catalogue or {})[result["benchmark"]["preset"]]
    for mid in sorted(set(catalogue) - set(defs)):  # omitted as unsupported: the samples must agree
        col = catalogue[mid].column
        if col in df.columns and np.isfinite(pd.to_numeric(df[col], errors="coerce").to_numpy(float)).any():
            raise ResultError(f"{source}: metric {mid} is omitted as unsupported, but its column {col!r} holds values")
    boot = spec.bootstrap
    wrong = []
    for mid, d in sorted(defs.items()):
        needed = [d.column, *d.where] + ([LABEL] if d.reduce != "mean" else [])
        missing = [c for c in needed if c not in df.columns]
        if missing:
            raise ResultError(f"{source}: metric {mid} needs column {missing[0]!r}, which is not in the file")
        try:
            got = compute_metric(df, d, n_resamples=boot["n_resamples"], seed=boot["seed"],
                                 alpha=boot.get("alpha", 0.05)).to_json()
        except (TypeError, ValueError) as e:
            raise ResultError(f"{source}: metric {mid} cannot be computed from column {d.column!r} ({e})") from None
        m = result["metrics"][mid]
        for k in ("value", "n", "ci_low", "ci_high"):
            if not _same(m[k], got[k]):
                wrong.append(f"{mid} {k} (stored {m[k]}, recomputed {got[k]})")
                break
    if wrong:
        more = f" and {len(wrong) - 3} more" if len(wrong) > 3 else ""
        raise ResultError(
            f"{source}: metric values do not match the per-sample table: {', '.join(wrong[:3])}{more}"
        )


def check_metric_values(result: dict[str, Any], df: pd.DataFrame, *, source: str) -> None:
    """Every stored value must be what its definition gives on the per-sample table (synthetic test specs
    without a catalogue only; real versions go through ``check_against_catalogue``)."""
    wrong = []
    for mid, m in sorted(result["metrics"].items()):
        d = MetricDef.from_json(mid, m["definition"], m["higher_is_better"])
        needed = [d.column, *d.where] + ([LABEL] if d.reduce != "mean" else [])
        missing = [c for c in needed if c not in df.columns]
        if missing:
            raise ResultError(f"{source}: metric {mid} needs column {missing[0]!r}, which is not in the file")
        if d.reduce not in REDUCERS:
            raise ResultError(f"{source}: metric {mid} uses unknown reducer {d.reduce!r}")
        rows = d.rows(df)
        got = REDUCERS.get(d.reduce)(rows, d) if len(rows) else float("nan")
        stored = m["value"]
        if stored is None:
            ok = not np.isfinite(got)
        else:
            ok = np.isfinite(got) and math.isclose(got, stored, rel_tol=1e-6, abs_tol=1e-9)
        if not ok:
            wrong.append(f"{mid} (stored {stored}, recomputed {got:.6g})")
    if wrong:
        more = f" and {len(wrong) - 3} more" if len(wrong) > 3 else ""
        raise ResultError(
            f"{source}: metric values do not match the per-sample table: {', '.join(wrong[:3])}{more}"
        )


def _ineligible_reasons(b: dict[str, Any]) -> list[str]:
    """Why a result cannot go on the leaderboard, each reason named (issue 13: not "embedded or --limit")."""
    ds, reasons = b["dataset"], []
    if b.get("limit") is not None:
        reasons.append(f"it is a --limit {b['limit']} run ({ds['n']} images, part of the evaluation split); "
                       "rerun without --limit")
    if str(ds["name"]).endswith("embedded"):
        reasons.append(f"it was computed on the embedded subset ({ds['n']} images shipped with the package), "
                       "not on a prepared FracAtlas; run `fxbench data prepare` first, then rerun")
    elif b.get("limit") is None:
        reasons.append(f"its dataset {ds['name']!r} is not leaderboard-eligible (not the release the split "
                       "manifest names); prepare the FracAtlas release and rerun")
    return reasons


def check_belongs(result: dict[str, Any], spec: VersionSpec, *, source: Path) -> None:
    """Refuse a result that was not computed by this folder's benchmark version, data and battery config."""
    b = result["benchmark"]
    ds = b["dataset"]
    if b["version"] != spec.version:
        raise ResultError(f"{source}: benchmark version {b['version']!r} does not match its folder {spec.version!r}")
    if not ds["leaderboard_eligible"] or b.get("limit") is not None:
        raise ResultError(f"{source}: not leaderboard-eligible: {'; '.join(_ineligible_reasons(b))}")
    if ds["fingerprint"] != spec.fingerprint:
        raise ResultError(
            f"{source}: dataset fingerprint {ds['fingerprint'][:12]}... does not match {spec.version}'s "
            f"{spec.fingerprint[:12]}..."
        )
    want = spec.config_hashes.get(b["preset"])
    if b["config_hash"] != want:
        raise ResultError(
            f"{source}: config hash {b['config_hash']} does not match {spec.version}'s {b['preset']!r} preset "
            f"({want}): the battery specs differ from the ones this version names"
        )
    if spec.configs is not None:
        try:
            rehashed = hash_config(b["config"])
        except (TypeError, ValueError, RecursionError):
            rehashed = None
        if rehashed != b["config_hash"] or b["config"] != spec.configs.get(b["preset"]):
            raise ResultError(
                f"{source}: the stored config re-hashes to {rehashed}, not its config_hash {b['config_hash']}, "
                f"or differs from {spec.version}'s {b['preset']!r} configuration: the config was edited"
            )
    if spec.eval_split is not None:
        n = len(spec.eval_split)
        n_fracture = sum(label for _, label in spec.eval_split.values())
        if ds["n"] != n or ds.get("n_fracture", n_fracture) != n_fracture or ds["split"] != "eval":
            raise ResultError(
                f"{source}: dataset split {ds['split']!r} with n={ds['n']} ({ds.get('n_fracture')} fractured); "
                f"{spec.version}'s evaluation split has n={n} ({n_fracture} fractured)"
            )
    if spec.catalogue is not None:
        check_metric_ids(result, spec, source=source)


def read_stored_result(json_path: Path, spec: VersionSpec) -> StoredResult:
    result = read_json(json_path)
    check_belongs(result, spec, source=json_path)
    sid = result["submission"]["id"]
    samples = read_samples(samples_path(json_path, result), result, json_path, spec)
    gallery = check_gallery(result, json_path.parent / sid, source=json_path)
    return StoredResult(version=spec.version, path=json_path, result=result, samples=samples, gallery=gallery)


def _copies(results: list[StoredResult]) -> list[str]:
    """Pairs of results of one version that share values only a copy shares (consistency.copied_rows): rows of
    one run under another id, or mixed into another result. Refused by name: a maintainer removes the copy."""
    out = []
    for i, a in enumerate(results):
        for b in results[i + 1:]:
            hit = copied_rows(a.samples, b.samples)
            if hit is not None:
                out.append(f"{a.path} and {b.path}: {hit[1]} images share the same {hit[0]} to the last bit, "
                           "which two different runs never do: rows were copied from one result into the other")
    return out


def markdown_text(text: str) -> str:
    """Submitted free text (names, training notes) made inert for a Markdown table cell: HTML escaped (a
    submission name cannot inject markup into the generated README), pipes escaped, line breaks flattened."""
    text = html.escape(str(text), quote=True)
    text = re.sub(r"[\x00-\x1f\x7f]+", " ", text)
    return text.replace("|", "\\|").replace("[", "\\[").replace("]", "\\]").replace("`", "\\`")


def require_folder(path: str | Path, *, what: str) -> None:
    """``path`` is a folder, or can be created as one: it and its nearest existing parent are folders, not
    files. Checked before anything is written, so a refusal leaves nothing half-written."""
    path = Path(path)
    for p in (path, *path.parents):
        if p.is_dir():
            return
        if p.exists() or p.is_symlink():
            where = "it is" if p == path else f"{p} is"
            raise FxbenchError(f"{path}: the {what} must be a folder, but {where} a file or a broken link; "
                               "nothing was written")


def load_store(results_dir: str | Path, *, spec_for: Callable[[str], VersionSpec] | None = None,
               audits_dir: str | Path | None = None) -> Store:
    """Read and check every result and its evidence records (``audits_dir``, default ``audits/`` beside the
    results folder); raise one ResultError listing every refused file."""
    root = Path(results_dir)
    audits = Path(audits_dir) if audits_dir is not None else audits_root(root)
    if not root.is_dir():
        raise ResultError(f"{root}: no results folder (expected {root}/<version>/<submission-id>.json)")
    spec_for = spec_for or version_spec
    problems: list[str] = []
    found: dict[str, list[Path]] = {}
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_symlink():
            problems.append(f"{entry}: is a symbolic link; the store holds regular files and folders only")
        elif entry.is_dir() and VERSION_RE.fullmatch(entry.name):
            found[entry.name] = sorted(p for p in entry.glob("*.json") if not p.name.startswith("."))
        elif entry.suffix == ".json":
            problems.append(f"{entry}: result files go in a version folder, e.g. {root}/v1/{entry.name}")
    if not problems and not any(found.values()):
        raise ResultError(f"{root}: no result files (expected {root}/<version>/<submission-id>.json)")
    versions: dict[str, list[StoredResult]] = {}
    specs: dict[str, VersionSpec] = {}
    for version, paths in found.items():
        if not paths:
            continue
        try:
            specs[version] = spec_for(version)
        except ResultError as e:
            problems.append(str(e))
            continue
        by_id: dict[str, list[StoredResult]] = {}
        for path in paths:
            try:
                # the records first: an entry changed after its check is refused before its samples are read
                evidence = read_evidence(audits, version, path, read_json(path))
                r = read_stored_result(path, specs[version])
                r.evidence = evidence
            except ResultError as e:
                problems.append(str(e))
                continue
            by_id.setdefault(r.id, []).append(r)
        for sid, rs in sorted(by_id.items()):
            if len(rs) > 1:
                names = ", ".join(str(r.path) for r in rs)
                problems.append(f"duplicate submission id {sid!r} in {version}: {names}")
            elif rs[0].path.stem != sid:
                problems.append(f"{rs[0].path}: holds submission {sid!r}; name the file {sid}.json")
            else:
                versions.setdefault(version, []).append(rs[0])
        if specs[version].catalogue is not None:  # real versions (synthetic test specs share made-up rows)
            problems += _copies(versions.get(version, []))
    problems += orphan_records(audits, {v: {r.id for r in rs} for v, rs in versions.items()})
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise ResultError(f"refused {len(problems)} result file(s); nothing was generated:\n{lines}")
    return Store(root=root, versions={v: sorted(rs, key=lambda r: r.id) for v, rs in versions.items()}, specs=specs)


__all__ = [
    "MAX_SAMPLES_BYTES", "PRESETS", "VERSION_RE", "Store", "StoredResult", "VersionSpec",
    "allowed_omissions", "check_against_catalogue", "check_belongs", "check_eval_split", "check_gallery",
    "check_metric_ids", "check_metric_values", "check_parquet_size", "load_store", "markdown_text",
    "read_json", "read_samples", "read_stored_result", "require_folder", "samples_path", "version_spec",
]
