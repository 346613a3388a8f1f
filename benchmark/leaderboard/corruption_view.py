"""The corruption view (benchmark v3 on): natural corruptions beside the adversarial threat models.

Renderings of a version's corruption scores, all read from metric ids: a table per board ("Corruptions", beside
the tables per threat model), a page per version (``site/<v>/corruptions.html``: every submission's balanced
accuracy per corruption and severity, and its explanation stability), a balanced-accuracy-vs-severity plot per
submission, and a README section. Every one is empty for a version without corruption metrics (v1, v2).
"""

from __future__ import annotations

import io
from html import escape
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from tabulate import tabulate

from ..results.metric_ids import clean_id, corrupt_id, mean_shift, shift_id
from . import fmt, plots
from .corruption_columns import MEAN_BA, MEAN_DROP, conditions, reference_value, stability_ids
from .markup import Links, page, td, th
from .store import StoredResult
from .tables import BoardTable, training_text

CLEAN_BA = clean_id("balanced_accuracy")
READING = ("Balanced accuracy on corrupted copies of every evaluation image (MedMNIST-C's chest X-ray "
           "corruptions, severities 1-5); drop = clean minus corrupted, per image (paired). A constant answer "
           "scores 0.5 under every corruption with a drop of 0: a small drop means nothing without a corrupted "
           "balanced accuracy above 0.5.")


def has_corruptions(results: list[StoredResult]) -> bool:
    return any(MEAN_BA in r.metrics for r in results)


def _severity_keys(results: list[StoredResult]) -> list[tuple[str, str]]:
    """(key, header) of the pooled columns: clean, the mean at each severity (when there are several), the
    mean over everything, the drop."""
    ids = {mid for r in results for mid in r.metrics}
    _, severities = conditions(ids)
    out = [(CLEAN_BA, "clean")]
    out += [(k, f"severity {s}") for s in severities
            if (k := corrupt_id(mean_shift(s), "balanced_accuracy")) in ids]
    return out + [(MEAN_BA, "mean"), (MEAN_DROP, "drop")]


def _value(r: StoredResult | None, ref: Any, key: str) -> dict[str, Any] | None:
    if r is not None:
        return r.metrics.get(key)
    return ref.metrics.get(key) or reference_value(ref.metrics, key)


def _cell(m: dict[str, Any] | None, min_n: int | None) -> str:
    text = fmt.metric(m, min_n=min_n) if m else ""
    return td(escape(text or (fmt.NA if m else "")), fmt.sort_value(m), "num")


def _pooled_table(t: BoardTable, *, link_root: str) -> str:
    """Submissions (then the reference rows) by their mean corrupted balanced accuracy; pooled columns."""
    results = [row.result for row in t.rows]
    keys = _severity_keys(results)
    head = th("submission", "text") + th("training", "text") + "".join(th(h, "number", k) for k, h in keys)
    body = []
    for r in sorted(results, key=lambda r: (r.metrics.get(MEAN_BA, {}).get("value") is None,
                                            -(r.metrics.get(MEAN_BA, {}).get("value") or 0.0))):
        link = f"<a href=\"{link_root}{r.id}.html\">{escape(r.name)}</a> <code>{escape(r.id)}</code>"
        cells = [td(link, cls="sub"), td(escape(training_text(r.result["submission"].get("training") or {})))]
        cells += [_cell(r.metrics.get(k), t.min_n_for_ci) for k, _ in keys]
        body.append(f"<tr data-id=\"{escape(r.id)}\">{''.join(cells)}</tr>")
    for ref in t.references:
        cells = [td(f"<em>reference: {escape(ref.name)}</em>", cls="sub"), td("")]
        cells += [_cell(_value(None, ref, k), None) for k, _ in keys]
        body.append(f"<tr class=\"reference\">{''.join(cells)}</tr>")
    tid = f"corruptions-{t.version}-{t.preset}" + ("-" + t.kind if t.unranked else "")
    return (f"<table class=\"threat sortable filterable\" id=\"{escape(tid)}\">\n<thead><tr>{head}</tr></thead>\n"
            "<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table>")


def site_table(t: BoardTable) -> str:
    """The board's corruption table, beside the tables per threat model ("" without corruption scores)."""
    if not has_corruptions([row.result for row in t.rows]):
        return ""
    return (f"<details class=\"threats\"><summary>Natural corruptions</summary>\n<p class=\"note\">"
            f"{escape(READING)} Sorted by the mean, not ranked; per corruption: "
            f"<a href=\"{t.version}/corruptions.html\">corruption view</a>.</p>\n"
            + _pooled_table(t, link_root=f"{t.version}/") + "\n</details>")


def _matrix(r: StoredResult, min_n: int | None) -> str:
    """Rows: corruptions (then the mean over them); columns: severities, then the mean and drop per row."""
    corruptions, severities = conditions(r.metrics)
    head = th("corruption", "text") + "".join(th(f"severity {s}", "number") for s in severities)
    head += th("clean", "number")
    rows = []
    for c in corruptions + [None]:
        name = "mean over corruptions" if c is None else c.replace("_", " ")
        cells = [td(escape(name))]
        for s in severities:
            shift = shift_id(c, s) if c is not None else mean_shift(s) if len(severities) > 1 else mean_shift()
            cells.append(_cell(r.metrics.get(corrupt_id(shift, "balanced_accuracy")), min_n))
        cells.append(_cell(r.metrics.get(CLEAN_BA), min_n))
        cls = ' class="reference"' if c is None else ""
        rows.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return (f"<table class=\"sortable\" id=\"corruptions-{escape(r.id)}\"><thead><tr>{head}</tr></thead>\n<tbody>\n"
            + "\n".join(rows) + "\n</tbody></table>")


def _stability_rows(results: list[StoredResult], min_n: int | None) -> str:
    rows = []
    for r in results:
        ids = stability_ids(r.metrics)
        if not ids:
            continue
        what = ids.get("clean", "").split("/xai/", 1)[-1]
        cells = [td(f"<code>{escape(r.id)}</code>"), td(escape(what))]
        cells += [_cell(r.metrics.get(ids.get(k, "")), min_n) for k in ("clean", "corrupted", "drop")]
        rows.append(f"<tr>{''.join(cells)}</tr>")
    if not rows:
        return ""
    head = "".join(th(h, k) for h, k in (("submission", "text"), ("method / endpoint", "text"),
                                         ("clean", "number"), ("corrupted (mean)", "number"), ("drop", "number")))
    return ("<h2>Explanation stability under corruption</h2>\n<p>The explanation endpoint on the fractured images, "
            "clean and corrupted (mean over the stability conditions), and its per-image drop. A uniform map "
            "scores 1 on relevance-mass enrichment.</p>\n<table class=\"sortable\" id=\"stability\"><thead><tr>"
            f"{head}</tr></thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody></table>")


def corruption_page(version: str, tables: list[BoardTable], *, links: Links = Links()) -> str | None:
    """site/<version>/corruptions.html, or None for a version without corruption scores."""
    shown = [t for t in tables if t.rows and has_corruptions([row.result for row in t.rows])]
    if not shown:
        return None
    parts = [f"<h1>Natural corruptions, benchmark {escape(version)}</h1>", f"<p>{escape(READING)}</p>"]
    for t in shown:
        title = {"main": "Full preset", "quick": "Quick preset (reduced: not leaderboard-grade)",
                 "flagged": "Flagged: not ranked",
                 "unranked": "Not ranked: flagged, or no evidence that the run happened"}[t.kind]
        results = [row.result for row in t.rows]
        parts.append(f"<h2>{escape(title)}</h2>\n" + _pooled_table(t, link_root=""))
        parts.append(_stability_rows(results, t.min_n_for_ci))
        for r in results:
            parts.append(f"<h3 id=\"{escape(r.id)}\">{escape(r.name)} <code>{escape(r.id)}</code></h3>\n"
                         f"<p><img src=\"{escape(r.id)}/corruptions.png\" alt=\"balanced accuracy against "
                         "severity\" width=\"500\" height=\"340\"></p>\n" + _matrix(r, t.min_n_for_ci))
    return page(f"Natural corruptions {version} - fxbench", "\n".join(p for p in parts if p), root="../",
                links=links)


def markdown_section(version: str, tables: list[BoardTable]) -> str:
    """The README's corruption table of a version ("" without corruption scores)."""
    out = []
    for t in tables:
        results = [row.result for row in t.rows]
        if not results or t.unranked or not has_corruptions(results):
            continue
        keys = _severity_keys(results)
        rows = [[f"`{r.id}`"] + [fmt.metric(r.metrics.get(k), min_n=t.min_n_for_ci) or fmt.NA for k, _ in keys]
                for r in results]
        rows += [[f"*reference: {ref.name}*"] + [fmt.metric(_value(None, ref, k)) for k, _ in keys]
                 for ref in t.references]
        table = tabulate(rows, headers=["submission"] + [h for _, h in keys], tablefmt="github",
                         disable_numparse=True)
        out.append(f"### Natural corruptions ({t.preset} preset)\n\n{READING} Per corruption and severity: "
                   f"[site/{version}/corruptions.html](site/{version}/corruptions.html).\n\n{table}\n")
    return "\n".join(out)


def curve_png(r: StoredResult) -> bytes | None:
    """Balanced accuracy against severity (0 = clean): one thin line per corruption, the mean with its CI."""
    corruptions, severities = conditions(r.metrics)
    clean = r.metrics.get(CLEAN_BA)
    if not corruptions or clean is None or clean["value"] is None:
        return None
    with plt.rc_context({"font.size": 9}):
        fig, ax = plt.subplots(figsize=(5, 3.4))
        xs = [0, *severities]
        for c in corruptions:
            ys = [clean["value"]] + [(r.metrics.get(corrupt_id(shift_id(c, s), "balanced_accuracy")) or {})
                                     .get("value") for s in severities]
            pts = [(x, y) for x, y in zip(xs, ys) if y is not None]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], color="#9bb7cc", linewidth=0.8)
        pooled = [clean] + [r.metrics.get(corrupt_id(mean_shift(s) if len(severities) > 1 else mean_shift(),
                                                     "balanced_accuracy")) for s in severities]
        pts = [(x, m) for x, m in zip(xs, pooled) if m and m["value"] is not None]
        err = [[m["value"] - (m["ci_low"] if m["ci_low"] is not None else m["value"]) for _, m in pts],
               [(m["ci_high"] if m["ci_high"] is not None else m["value"]) - m["value"] for _, m in pts]]
        ax.errorbar([x for x, _ in pts], [m["value"] for _, m in pts], yerr=err, marker="o", capsize=3,
                    color="#1f5f8b", label="mean over corruptions")
        ax.axhline(0.5, color="#999999", linestyle="--", linewidth=0.8, label="constant answer (0.5)")
        ax.set_xticks(xs, ["clean", *map(str, severities)])
        ax.set_ylim(0, 1)
        ax.set_xlabel("corruption severity")
        ax.set_ylabel("balanced accuracy")
        ax.set_title(f"{r.name} ({r.id})"[:60])
        ax.legend(loc="lower left", fontsize=7)
        ax.grid(alpha=0.3)
        fig.subplots_adjust(left=0.13, right=0.97, top=0.9, bottom=0.15)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=plots.DPI, metadata=plots.PNG_METADATA)  # deterministic bytes
        plt.close(fig)
        return buf.getvalue()


def curve_html(r: StoredResult) -> str:
    return (f"<h2>Natural corruptions</h2>\n<a href=\"{escape(r.id)}/corruptions.png\"><img src=\"{escape(r.id)}/"
            "corruptions.png\" alt=\"balanced accuracy against corruption severity\" width=\"500\" height=\"340\">"
            f"</a>\n<p>Per corruption: <a href=\"corruptions.html#{escape(r.id)}\">corruption view</a>.</p>")
