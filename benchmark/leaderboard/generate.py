"""`fxbench leaderboard`: results store -> README.md, leaderboard.csv/.json and site/, all in memory first.

Everything is rendered to a mapping {relative path: bytes} before anything is written, so a refused result
file leaves the previous leaderboard untouched, ``--check`` compares without writing, and two generations
are byte-identical (sorted inputs, no timestamps, PNGs without version metadata).
"""

from __future__ import annotations

import io
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from ..io import atomic_write_bytes, canonical_json, replace_dir, sha256_file
from ..results.metric_ids import ROBUST, clean_id, robust_id, try_parse, xai_id
from . import corruption_view, markdown, pages, plots, site
from .layout import ASSETS, Layout, load_layout
from .markup import Links, method_name
from .store import PRESETS, StoredResult, VersionSpec, load_store
from .tables import (
    BoardTable,
    MethodsView,
    Ranking,
    best_trivial_map,
    budget_label,
    budgets,
    methods,
    methods_view,
    ranked_layout,
    training_text,
    version_ranking,
    version_tables,
)

TOP_LEVEL = ("README.md", "leaderboard.csv", "leaderboard.json")
SITE = "site"
SITE_ASSETS = ("style.css", "table.js")


@dataclass
class Leaderboard:
    files: dict[str, bytes]  # path relative to the output folder -> content
    counts: dict[str, int] = field(default_factory=dict)  # version -> number of submissions


@dataclass
class CheckReport:
    stale: list[str]
    missing: list[str]
    extra: list[str]

    @property
    def ok(self) -> bool:
        return not (self.stale or self.missing or self.extra)


def _version_key(v: str) -> int:
    return -int(v[1:])  # newest first


def build_leaderboard(
    *,
    results_dir: str | Path,
    spec_for: Callable[[str], VersionSpec] | None = None,
    layout: Layout | None = None,
    ranking_for: Callable[[str], Ranking | None] | None = None,
    gallery_from: str | None = None,
    repo_from: str | None = None,
) -> Leaderboard:
    """``ranking_for``: a version's ranking rules (default: its benchmark.yaml ``leaderboard:`` section).
    ``gallery_from``: the results folder relative to the leaderboard's root (``results`` in this
    repository): the site then links the gallery images where the store keeps them instead of copying them
    (v2's 448 px galleries would double the repository's size); None copies them into site/. The result
    files are then linked from the submission pages too.
    ``repo_from``: the repository root relative to the leaderboard's root (``..`` in this repository): the
    site then links the submission guide, the citation, the changelog and each submission's folder (model
    card, model.yaml, weights); None leaves those links out."""
    store = load_store(results_dir, spec_for=spec_for)
    layout = layout or load_layout()
    ranking_for = ranking_for or version_ranking
    rank_by: dict[str, tuple[str, ...]] = {}
    files: dict[str, bytes] = {}
    links = Links(repo=repo_from, results=gallery_from)
    headline_xai = xai_id(layout.scatter_default_method, layout.localisation[0])
    md_versions, sections, json_versions, csv_rows = [], [], [], []
    for version in sorted(store.versions, key=_version_key):
        spec = store.specs[version]
        results = store.versions[version]
        by_preset = {p: [r for r in results if r.preset == p] for p in PRESETS}
        ranking = ranking_for(version)
        if ranking is not None:
            rank_by[version] = ranking.rank_by
        tables = version_tables(version, by_preset, layout, ranking)
        view_preset = "full" if by_preset["full"] else "quick"
        view = methods_view(version, view_preset, by_preset[view_preset], layout, spec,
                            trivial=ranking.reference_submissions if ranking is not None else frozenset())
        note = (f"Dataset fingerprint {spec.fingerprint[:16]}..., full-preset config {spec.config_hashes.get('full')}, "
                f"{len(results)} submission(s).")
        scatters = []
        for t in tables:
            if t.unranked or not t.rows:
                continue
            lay = layout if ranking is None else replace(ranked_layout(layout, ranking), scatter_y=ranking.rank_by[0])
            scatters.append((t.preset, _scatters(t, lay, files)))
        for r in results:
            # the curve plots the version's robust metric (v2: balanced accuracy), as its tables do
            curve = _curve(r, layout if ranking is None else ranked_layout(layout, ranking))
            if curve is not None:
                files[f"{SITE}/{version}/{r.id}/robustness.png"] = curve
            img_root = f"../../{gallery_from}/{version}/" if gallery_from else ""
            if not gallery_from:
                for rel, path in r.gallery.items():
                    files[f"{SITE}/{version}/{r.id}/{rel}"] = path.read_bytes()
            corrupted = corruption_view.curve_png(r)  # v3 on: balanced accuracy against corruption severity
            if corrupted is not None:
                files[f"{SITE}/{version}/{r.id}/corruptions.png"] = corrupted
            files[f"{SITE}/{version}/{r.id}.html"] = pages.submission_page(
                r, has_curve=curve is not None, img_root=img_root, links=links, corruption_curve=corrupted is not None,
                files=_submission_files(r, links, repo_root=_repo_root(results_dir, gallery_from,
                                                                                        repo_from)),
            ).encode()
        files[f"{SITE}/{version}/methods.html"] = pages.methods_page(view, links=links).encode()
        corruption_html = corruption_view.corruption_page(version, tables, links=links)
        if corruption_html is not None:
            files[f"{SITE}/{version}/corruptions.html"] = corruption_html.encode()
        has_gallery = ranking is not None and any(r.gallery for r in results)
        if has_gallery:  # v2 on: one page, same image per model
            files[f"{SITE}/{version}/gallery.html"] = pages.gallery_page(version, results, img_root=img_root,
                                                                         links=links).encode()
        md_scatters = [f"{SITE}/{images[0][1]}" for _, images in scatters if images]
        md_versions.append((version, note, tables, view, md_scatters))
        shown = layout if ranking is None else ranked_layout(layout, ranking)
        ref = best_trivial_map([row.result for t in tables for row in t.rows], shown.scatter_x)
        sections.append({"version": version, "note": note, "tables": tables, "scatters": scatters,
                         "headline_xai": xai_id(layout.scatter_default_method, shown.localisation[0]),
                         "gallery": has_gallery, "corruptions": corruption_html is not None,
                         "scatter_reference": ref[0] if ref else None,
                         "robust_metric": ranking.robust_metric if ranking is not None else layout.robust_metric})
        json_versions.append(_version_json(spec, tables, view, rank_by.get(version, layout.rank_by)))
        csv_rows += _csv_rows(tables)
    files[f"{SITE}/index.html"] = site.index(sections, links=links, headline_xai=headline_xai).encode()
    for name in SITE_ASSETS:
        files[f"{SITE}/assets/{name}"] = (ASSETS / name).read_bytes()
    files["README.md"] = markdown.render(md_versions, layout, rank_by).encode()
    # rank_by: the newest version's sort keys (its tables come first); each version lists its own
    newest = json_versions[0]["rank_by"] if json_versions else list(layout.rank_by)
    files["leaderboard.json"] = canonical_json({
        "schema": "fxbench.leaderboard/1", "rank_by": newest, "versions": json_versions,
    }).encode()
    files["leaderboard.csv"] = _csv(csv_rows)
    return Leaderboard(files=dict(sorted(files.items())), counts={v: len(rs) for v, rs in store.versions.items()})


def _repo_root(results_dir: str | Path, gallery_from: str | None, repo_from: str | None) -> Path | None:
    """The repository folder on disk (from the store's place in the leaderboard folder), or None."""
    if repo_from is None or gallery_from is None:
        return None
    board = Path(results_dir)
    for _ in Path(gallery_from).parts:
        board = board.parent
    return board / repo_from


def _submission_files(r: StoredResult, links: Links, *, repo_root: Path | None) -> pages.SubmissionFiles:
    """Links from site/<version>/<id>.html to the result files (store beside site/) and to the submission's
    folder (repository layout): its README.md, its model.yaml and the weights it names. A model.yaml whose
    sha256 differs from the one the result records is linked with a warning, and its weights are not."""
    up = "../../"  # site/<version>/ -> the leaderboard folder
    out: dict[str, Any] = {}
    if links.results is not None:
        out["result_json"] = f"{up}{links.results}/{r.version}/{r.id}.json"
        out["samples"] = f"{up}{links.results}/{r.version}/{r.id}.parquet"
    if repo_root is not None and links.repo is not None:
        folder = repo_root / "submissions" / r.id
        href = f"{up}{links.repo}/submissions/{r.id}/"
        if (folder / "README.md").is_file():
            out["model_card"] = href + "README.md"
        yaml_path = folder / "model.yaml"
        if yaml_path.is_file() and not yaml_path.is_symlink():
            out["model_yaml"] = href + "model.yaml"
            if sha256_file(yaml_path) != r.result["submission"].get("yaml_sha256"):
                out["yaml_note"] = "(changed since this result was computed)"
            else:
                out |= _weights(yaml_path, href)
    return pages.SubmissionFiles(**out)


def _weights(yaml_path: Path, href: str) -> dict[str, str]:
    from ..errors import FxbenchError
    from ..models.spec import ModelSpec

    try:
        ck = ModelSpec.from_yaml(yaml_path).checkpoint
    except FxbenchError:
        return {}
    if ck.url:
        return {"weights": ck.url, "weights_label": f"weights ({ck.url.rsplit('/', 1)[-1]}, downloaded by URL)"}
    if ck.path and (yaml_path.parent / ck.path).is_file():
        size = (yaml_path.parent / ck.path).stat().st_size
        return {"weights": href + ck.path, "weights_label": f"weights ({Path(ck.path).name}, {size / 1e6:.1f} MB)"}
    return {}


def _scatters(t: BoardTable, layout: Layout, files: dict[str, bytes]) -> list[tuple[str, str]]:
    """One scatter PNG per attribution method with the x score; returns [(method, src relative to site/)]."""
    results = [row.result for row in t.rows]
    ms = methods(results, layout, references=False)
    ms.sort(key=lambda m: (m != layout.scatter_default_method, m))
    ylabel = layout.scatter_y
    y = try_parse(layout.scatter_y)
    if y is not None and y.family == ROBUST:
        ylabel = f"robust {y.metric} at {budget_label(y.threat)}"
    out = []
    for m in ms:
        xid = xai_id(m, layout.scatter_x)
        if not any(xid in r.metrics for r in results):
            continue
        points = []
        for r in results:
            x, y = r.metrics.get(xid), r.metrics.get(layout.scatter_y)
            if x and y and x["value"] is not None and y["value"] is not None:
                points.append(plots.Point(x["value"], y["value"], x["ci_low"], x["ci_high"], y["ci_low"],
                                          y["ci_high"], label=r.id))
        src = f"{t.version}/scatter-{t.preset}-{m}.png"
        files[f"{SITE}/{src}"] = plots.scatter(
            points, xlabel=f"{m}: {layout.scatter_x.replace('_', ' ')}", ylabel=ylabel,
            title=f"benchmark {t.version}, {t.preset} preset, one point per submission (95% CIs)",
            **_scatter_references(results, layout),
        )
        out.append((m, src))
    return out


def _scatter_references(results: list[StoredResult], layout: Layout) -> dict[str, Any]:
    """The scatter's reference lines: the best trivial map on the x score (a vertical line), and the constant
    classifier (0.5) where y is a balanced accuracy (a horizontal one)."""
    out: dict[str, Any] = {}
    best = best_trivial_map(results, layout.scatter_x)
    if best is not None and best[1]["value"] is not None:
        out["x_ref"] = (float(best[1]["value"]), f"best trivial map: {method_name(best[0])}")
    y = try_parse(layout.scatter_y)
    if y is not None and y.metric == "balanced_accuracy":
        out["y_ref"] = (0.5, "constant classifier")
    return out


def _curve(r: StoredResult, layout: Layout) -> bytes | None:
    linf = [b for b in budgets([r], layout.robust_metric) if b.startswith("linf-")]
    if not linf:
        return None
    points = []
    clean = r.metrics.get(clean_id(layout.robust_metric))
    if clean and clean["value"] is not None:
        points.append(plots.Point(0.0, clean["value"], y_lo=clean["ci_low"], y_hi=clean["ci_high"], label="clean"))
    for b in linf:
        m = r.metrics[robust_id(b, layout.robust_metric)]
        if m["value"] is not None:
            eps = b.split("-", 1)[1]
            points.append(plots.Point(float(eps), m["value"], y_lo=m["ci_low"], y_hi=m["ci_high"], label=eps))
    return plots.robustness_curve(points, title=f"{r.name} ({r.id})",
                                  ylabel=layout.robust_metric.replace("_", " "))


def _version_json(spec: VersionSpec, tables: list[BoardTable], view: MethodsView,
                  rank_by: tuple[str, ...]) -> dict[str, Any]:
    return {
        "version": spec.version,
        "rank_by": list(rank_by),
        "dataset_fingerprint": spec.fingerprint,
        "config_hashes": dict(sorted(spec.config_hashes.items())),
        "tables": [{
            "preset": t.preset,
            **({"kind": t.kind, "note": t.note, "references": [{"name": ref.name, "metrics": ref.metrics}
                                                               for ref in t.references]}
               if t.min_n_for_ci is not None else {}),
            "columns": [c.key for c in t.columns],
            "submissions": [{
                "rank": row.rank,
                "id": row.result.id,
                "name": row.result.name,
                "page": f"{SITE}/{t.version}/{row.result.id}.html",
                "training": row.result.result["submission"].get("training") or {},
                "flags": row.result.flags,
                "evidence": row.result.evidence.to_json(),  # which includes provenance.ci as claimed
                **({"not_ranked_because": row.reason} if row.reason else {}),
                "metrics": row.result.metrics,
            } for row in t.rows],
        } for t in tables],
        "methods": {
            "preset": view.preset,
            "methods": view.methods,
            "references": view.references,
            "pooled": [
                {"method": m, "metric": c, "kind": _kind(view, c), "value": s.value, "ci_low": s.ci_low,
                 "ci_high": s.ci_high, "n_submissions": s.n_submissions}
                for (m, c), s in sorted(view.pooled.items())
            ],
        },
    }


def _kind(view: MethodsView, metric: str) -> str:
    return next(c.group for c in view.columns if c.key == metric)


def _csv_rows(tables: list[BoardTable]) -> list[dict[str, Any]]:
    rows = []
    for t in tables:
        for row in t.rows:
            r = row.result
            d = {"version": t.version, "preset": t.preset, "rank": row.rank, "id": r.id, "name": r.name,
                 **({"table": t.kind} if t.min_n_for_ci is not None else {}),
                 "training": training_text(r.result["submission"].get("training") or {}),
                 "flags": " ".join(f["code"] for f in r.flags), "evidence": r.evidence.label}
            for c in t.columns:
                m = r.metrics.get(c.key)
                if c.group:  # a metric column
                    d[c.key] = m and m["value"]
                    d[f"{c.key}:ci_low"] = m and m["ci_low"]
                    d[f"{c.key}:ci_high"] = m and m["ci_high"]
            rows.append(d)
    return rows


def _csv(rows: list[dict[str, Any]]) -> bytes:
    buf = io.StringIO()
    pd.DataFrame(rows).to_csv(buf, index=False, lineterminator="\n")
    return buf.getvalue().encode()


def _generated_on_disk(out: Path) -> set[str]:
    found = {name for name in TOP_LEVEL if (out / name).is_file()}
    site_dir = out / SITE
    if site_dir.is_dir():
        found |= {p.relative_to(out).as_posix() for p in site_dir.rglob("*") if p.is_file()}
    return found


def check_leaderboard(board: Leaderboard, *, out_dir: str | Path) -> CheckReport:
    """Compare the generated files with the ones in ``out_dir``; writes nothing."""
    out = Path(out_dir)
    on_disk = _generated_on_disk(out)
    stale = [p for p in board.files if p in on_disk and (out / p).read_bytes() != board.files[p]]
    missing = [p for p in board.files if p not in on_disk]
    extra = sorted(on_disk - set(board.files))
    return CheckReport(stale=stale, missing=missing, extra=extra)


def write_leaderboard(board: Leaderboard, *, out_dir: str | Path) -> None:
    """site/ is built in a temporary folder and swapped in whole; the top-level files are replaced atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{SITE}.tmp-", dir=out))
    try:
        for rel, data in board.files.items():
            if rel.startswith(f"{SITE}/"):
                p = tmp / rel[len(SITE) + 1:]
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(data)
        replace_dir(tmp, out / SITE)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for rel in TOP_LEVEL:
        atomic_write_bytes(out / rel, board.files[rel])


__all__ = ["CheckReport", "Leaderboard", "build_leaderboard", "check_leaderboard", "write_leaderboard"]
