"""The static site: plain HTML + one small script for sorting and filtering; no network, works from file://.

This module: the index with its boards, column chooser and threat-model tables; ``pages``: the other pages;
``markup``: the shared building blocks."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from typing import Any

from ..results.metric_ids import robust_id, try_parse
from . import corruption_columns, corruption_view, fmt
from .markdown import TITLES
from .markup import NONE, Links, date_text, evidence_html, extra_data, flags_html, method_name, page, td, th
from .store import StoredResult
from .tables import BoardTable, best_trivial_map, budget_label, budgets, training_text

# Columns about the submission rather than its scores (site only: the README keeps its narrow table).
INFO = (("architecture", "architecture", "text"), ("parameters", "params", "number"),
        ("extra_data", "extra data", "text"), ("paper", "paper / code", "text"), ("evaluated", "evaluated", "text"))
# Shown by default: RobustBench shows paper and extra data by default too (issue 24).
ALWAYS_ON = {"rank", "submission", "architecture", "training", "extra_data", "paper", "flags", "reason", "evidence"}
# The size filter's bands (parameters): small CNNs, ResNet-18/50-sized, larger.
SIZE_BANDS = ((0, 5_000_000, "under 5M parameters"), (5_000_000, 30_000_000, "5M to 30M"),
              (30_000_000, 10**13, "30M or more"))


def _info_cell(key: str, r: StoredResult) -> str:
    s = r.result["submission"]
    if key == "architecture":
        return td(escape(str(s.get("architecture") or NONE)))
    if key == "parameters":
        n = s.get("n_parameters")
        ok = isinstance(n, int) and not isinstance(n, bool) and n > 0
        return td(_params(n) if ok else NONE, str(n) if ok else "", "num")
    if key == "extra_data":
        return td(extra_data(s.get("training") or {}))
    if key == "paper":
        url = s.get("url") or ""
        if url.startswith(("https://", "http://")):
            return td(f"<a href=\"{escape(url)}\" title=\"{escape(url)}\">{escape(_host(url))}</a>")
        return td(NONE)
    if key == "evaluated":
        return td(escape(date_text(r.result.get("provenance") or {})))
    raise KeyError(key)


def _params(n: int) -> str:
    return f"{n / 1e9:.1f}B" if n >= 10**9 else f"{n / 1e6:.1f}M" if n >= 10**6 else f"{n / 1e3:.0f}k"


def _host(url: str) -> str:
    return url.split("://", 1)[1].split("/", 1)[0] or url


def _num_cell(m: dict[str, Any] | None, min_n: int | None = None) -> str:
    """The value, then its CI (or its small-n note) in a span that may move under it when space is short;
    sorting reads data-value, never this text."""
    text = fmt.metric(m, min_n=min_n) if m else ""
    if m and not text:
        text = fmt.NA
    value, _, rest = text.partition(" ")
    inner = escape(value) + (f" <span class=\"ci\">{escape(rest)}</span>" if rest else "")
    return td(inner, fmt.sort_value(m), "num")


@dataclass(frozen=True)
class _Col:
    key: str
    header: str
    kind: str  # text | number
    on: bool  # shown by default


def _site_columns(t: BoardTable, *, headline_xai: str) -> list[_Col]:
    """The board's columns with the submission facts after the name; a compact set shown by default (rank,
    submission, architecture, training, the first clean score, the headline robust score, the default
    method's headline localisation score, the mean corrupted score from v3 on, flags, and in full-preset
    tables the evidence); the column chooser shows the rest."""
    first_clean = next((c.key for c in t.columns if c.group == "clean"), None)
    headline = t.rank_by[0] if t.rank_by else None
    out = []
    for c in t.columns:
        if c.group:
            on = c.key in (first_clean, headline, headline_xai, corruption_columns.MEAN_BA)
            out.append(_Col(c.key, c.header, "number", on))
        else:
            # evidence (of a full-preset run) says nothing in a quick table: every row there is "none"
            on = c.key in ALWAYS_ON and not (c.key == "evidence" and t.preset != "full")
            out.append(_Col(c.key, c.header, "text" if c.key != "rank" else "number", on))
        if c.key == "submission":
            out += [_Col(k, h, kind, k in ALWAYS_ON) for k, h, kind in INFO]
    return out


LONG_NAME = 80  # characters: shorter names never wrap in the tables


def training_kind(training: dict[str, Any]) -> str:
    """adversarial | standard | undeclared: what the training filter selects on."""
    if not training:
        return "undeclared"
    return "adversarial" if training.get("adversarial") else "standard"


def _row_attrs(r: StoredResult) -> str:
    """A result row's id and what the filters select on (training kind, parameters, architecture)."""
    s = r.result["submission"]
    n = s.get("n_parameters")
    params = str(n) if isinstance(n, int) and not isinstance(n, bool) and n > 0 else ""
    return (f" data-id=\"{escape(r.id)}\" data-training=\"{training_kind(s.get('training') or {})}\""
            f" data-params=\"{params}\" data-arch=\"{escape(str(s.get('architecture') or ''))}\"")


def _sub_link(r: StoredResult, link_root: str) -> str:
    long = " class=\"long\"" if len(r.name) > LONG_NAME else ""
    return (f"<a href=\"{link_root}{r.version}/{r.id}.html\"{long}>{escape(r.name)}</a> "
            f"<code>{escape(r.id)}</code>")


def board_table(t: BoardTable, *, link_root: str, headline_xai: str = "") -> str:
    cols = _site_columns(t, headline_xai=headline_xai)
    head = "".join(th(c.header, c.kind, c.key, on=c.on) for c in cols)
    info_keys = {k for k, _, _ in INFO}
    body = []
    for row in t.rows:
        r = row.result
        cells = []
        for c in cols:
            if c.key == "rank":
                cells.append(td("–", "") if row.rank is None else td(str(row.rank), str(row.rank)))
            elif c.key == "reason":
                cells.append(td(escape(row.reason)))
            elif c.key == "submission":
                cells.append(td(_sub_link(r, link_root), cls="sub"))
            elif c.key in info_keys:
                cells.append(_info_cell(c.key, r))
            elif c.key == "training":
                cells.append(td(escape(training_text(r.result["submission"].get("training") or {}))))
            elif c.key == "flags":
                cells.append(td(flags_html(r.flags)))
            elif c.key == "evidence":
                cells.append(td(evidence_html(r.evidence)))
            else:
                cells.append(_num_cell(r.metrics.get(c.key), t.min_n_for_ci))
        body.append(_row(cells, cols, _row_attrs(r)))
    for ref in t.references:  # trivial classifiers: visible, marked, never ranked
        body.append(_reference_row(ref, cols, t))
    trivial = _trivial_map_row(t, cols)
    if trivial:
        body.append(trivial)
    tid = f"board-{t.version}-{t.preset}" + (f"-{t.kind}" if t.unranked else "")
    return _table(tid, head, body, classes="board sortable filterable")


def _reference_row(ref: Any, cols: list[_Col], t: BoardTable) -> str:
    groups = {c.key for c in t.columns if c.group}
    cells = []
    for c in cols:
        if c.key == "submission":
            cells.append(td(f"<em>reference: {escape(ref.name)}</em>", cls="sub"))
        elif c.key in groups:
            m = ref.metrics.get(c.key)
            cells.append(_num_cell(m) if m else td("", "", "num"))
        else:
            cells.append(td(""))
    return _row(cells, cols, " class=\"reference\"")


def _trivial_map_row(t: BoardTable, cols: list[_Col]) -> str:
    """The reference row for the explanation columns: the best trivial map's score on each column's metric
    (the one `.../vs-best-ref` subtracts), so a method's score can be read against what position, edges or
    anatomy alone achieve. Empty when the table has no explanation column."""
    results = [row.result for row in t.rows]
    cells, found = [], False
    for c in cols:
        p = try_parse(c.key)
        best = best_trivial_map(results, p.metric) if p is not None and p.headline else None
        if c.key == "submission":
            cells.append(td("<em>reference: best trivial map (no model: position, edges or anatomy)</em>", cls="sub"))
        elif best is not None:
            found = True
            name, m = best
            text = fmt.metric(m, min_n=t.min_n_for_ci) or fmt.NA
            value, _, rest = text.partition(" ")
            cells.append(td(f"{escape(value)} <span class=\"map\">{escape(method_name(name))}</span>"
                            + (f" <span class=\"ci\">{escape(rest)}</span>" if rest else ""), fmt.sort_value(m), "num"))
        else:
            cells.append(td("", "", "num") if c.kind == "number" else td(""))
    return _row(cells, cols, " class=\"reference trivial-map\"") if found else ""


def _row(cells: list[str], cols: list[_Col], attrs: str) -> str:
    out = []
    for cell, c in zip(cells, cols):  # a hidden column's cells carry the class too: no flash before the script
        if not c.on:
            cell = cell.replace(" class=\"", " class=\"off ", 1) if " class=\"" in cell.split(">", 1)[0] \
                else cell.replace("<td", "<td class=\"off\"", 1)
        out.append(cell)
    return f"<tr{attrs}>{''.join(out)}</tr>"


def _table(tid: str, head: str, body: list[str], *, classes: str) -> str:
    return (f"<table class=\"{classes}\" id=\"{escape(tid)}\">\n<thead><tr>{head}</tr></thead>\n"
            f"<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table>")


def column_chooser(t: BoardTable, *, headline_xai: str = "") -> str:
    """Show/hide columns; the choice applies to every board on the page and is remembered (localStorage)."""
    tid = f"board-{t.version}-{t.preset}" + (f"-{t.kind}" if t.unranked else "")
    boxes = "".join(
        f"<label><input type=\"checkbox\" data-col=\"{escape(c.key)}\"{' checked' if c.on else ''}> "
        f"{escape(c.header)}</label>"
        for c in _site_columns(t, headline_xai=headline_xai) if c.key not in ("submission", "rank")
    )
    return (f"<details class=\"columns\" data-table=\"{escape(tid)}\"><summary>Columns</summary>"
            f"<div class=\"choices\">{boxes}<button type=\"button\" class=\"reset\">default columns</button>"
            "</div></details>")


def threat_tables(t: BoardTable, robust_metric: str) -> str:
    """One table per threat model, as RobustBench has: L-inf with every budget (the robustness curve) and
    L2; rows ordered by the threat model's first budget (descending), not ranked."""
    results = [row.result for row in t.rows]
    found = budgets(results, robust_metric)
    first_clean = next((c for c in t.columns if c.group == "clean"), None)
    parts = []
    for norm, title in (("linf", "L∞ threat model (robustness curve)"), ("l2", "L2 threat model")):
        mine = [b for b in found if b.startswith(f"{norm}-")]
        tid = f"threat-{t.version}-{t.preset}-{norm}"
        if not mine:
            parts.append(f"<h4>{escape(title)}</h4>\n<p class=\"note\" id=\"{tid}-none\">No {norm.upper()} scores "
                         f"in these results (this preset does not attack with {norm.upper()}).</p>")
            continue
        keys = [robust_id(b, robust_metric) for b in mine]
        cols = [_Col("submission", "submission", "text", True), _Col("training", "training", "text", True)]
        if first_clean is not None:
            cols.append(_Col(first_clean.key, first_clean.header, "number", True))
        cols += [_Col(k, budget_label(b), "number", True) for k, b in zip(keys, mine)]
        head = "".join(th(c.header, c.kind, c.key) for c in cols)

        def key(r, k=keys[0]):
            v = r.metrics.get(k, {}).get("value")
            return (v is None, -(v or 0.0))

        body = []
        for r in sorted(results, key=key):  # stable: the board's order breaks ties
            cells = [td(_sub_link(r, ""), cls="sub"),
                     td(escape(training_text(r.result["submission"].get("training") or {})))]
            cells += [_num_cell(r.metrics.get(c.key), t.min_n_for_ci) for c in cols[2:]]
            body.append(_row(cells, cols, _row_attrs(r)))
        for ref in t.references:
            body.append(_reference_row(ref, cols, t))
        what = robust_metric.replace("_", " ")
        parts.append(f"<h4>{escape(title)}</h4>\n<p class=\"note\">Robust {escape(what)} at each budget; sorted "
                     f"by {escape(budget_label(mine[0]))}, not ranked.</p>\n"
                     + _table(tid, head, body, classes="threat sortable filterable"))
    return "<details class=\"threats\"><summary>Tables per threat model</summary>\n" + "\n".join(parts) \
        + "\n</details>"


def filters(sections: list[dict[str, Any]]) -> str:
    """The text filter and the selects by training kind, size and architecture (assets/table.js applies them
    together; reference rows always stay)."""
    results = [row.result for sec in sections for t in sec["tables"] for row in t.rows]
    archs = sorted({str(r.result["submission"].get("architecture") or "") for r in results} - {""})
    kinds = [k for k in ("adversarial", "standard", "undeclared")
             if any(training_kind(r.result["submission"].get("training") or {}) == k for r in results)]

    def select(sid: str, label: str, options: list[tuple[str, str]]) -> str:
        opts = "".join(f"<option value=\"{escape(v)}\">{escape(t)}</option>" for v, t in [("", "any"), *options])
        return f"<label>{escape(label)} <select id=\"{sid}\" class=\"row-filter\">{opts}</select></label>"

    return ("<p class=\"filters\"><label>Filter <input type=\"search\" id=\"filter\" "
            "placeholder=\"submission, training, flag...\"></label>"
            + select("filter-training", "Training", [(k, k) for k in kinds])
            + select("filter-size", "Size", [(f"{lo}-{hi}", t) for lo, hi, t in SIZE_BANDS])
            + select("filter-arch", "Architecture", [(a, a) for a in archs]) + "</p>")


def _ordered(tables: list[BoardTable]) -> list[BoardTable]:
    """Tables with results first: while no full-preset result exists, the page opens on the results there
    are (quick preset, marked unranked) and the empty ranked table follows them."""
    return sorted(tables, key=lambda t: not t.rows)


EMPTY_FULL_AFTER = ("No full-preset results yet: this table fills as submissions are run with the full batteries "
                    "(GPU), and only those are ranked. The results so far are above, unranked.")


def index(sections: list[dict[str, Any]], *, links: Links = Links(), headline_xai: str = "") -> str:
    """sections: one per version with keys version, note, tables, scatters [(preset, [(method, src)])],
    robust_metric, scatter_reference (the best trivial map's name on the scatter's x score, or None) and
    optionally headline_xai (the version's headline localisation column, shown by default)."""
    parts = [
        "<h1>fxbench leaderboard</h1>",
        ("<p>Fracture classifiers on FracAtlas radiographs: does a model still find the fracture under attack "
         "(robust balanced accuracy; a constant classifier scores 0.500), and do its explanations point at the "
         "expert-outlined fracture (against the best trivial map)? Values are <code>value [95% CI]</code>; "
         "shaded rows are references, never ranked. Sort by a column header, choose columns under "
         "<em>Columns</em>, filter rows below.</p>"),
        filters(sections),
    ]
    for s in sections:
        v = s["version"]
        parts.append(f"<section id=\"{v}\">\n<h2>Benchmark {v}</h2>\n<p>{escape(s['note'])}</p>")
        extra = f" · <a href=\"{v}/gallery.html\">Explanation gallery</a>" if s.get("gallery") else ""
        extra += f" · <a href=\"{v}/corruptions.html\">Corruption view</a>" if s.get("corruptions") else ""
        parts.append(f"<p><a href=\"{v}/methods.html\">Explanation methods view</a>{extra}</p>")
        tables = _ordered(s["tables"])
        moved = [id(t) for t in tables] != [id(t) for t in s["tables"]]
        for t in tables:
            if t.min_n_for_ci is None:  # v1: its own titles
                title = "Models (full preset)" if t.preset == "full" else \
                    "Quick preset (reduced batteries: not leaderboard-grade, not ranked)"
            else:
                title = TITLES[t.kind]
            text = EMPTY_FULL_AFTER if moved and t.preset == "full" and not t.rows and t.kind == "main" else t.note
            note = f"<p class=\"note empty-state\">{escape(text)}</p>\n" if text else ""
            hx = s.get("headline_xai") or headline_xai  # v3: the version's primary endpoint
            parts.append(f"<h3>{escape(title)}</h3>\n{note}{column_chooser(t, headline_xai=hx)}\n"
                         f"{board_table(t, link_root='', headline_xai=hx)}")
            if t.rows and not t.unranked:
                parts.append(threat_tables(t, s.get("robust_metric") or "accuracy"))
                parts += [c for c in [corruption_view.site_table(t)] if c]  # v3 on: natural corruptions
        what = (s.get("robust_metric") or "accuracy").replace("_", " ")
        for preset, images in s["scatters"]:
            if not images:
                continue
            target = f"scatter-{v}-{preset}"
            options = "".join(f"<option value=\"{escape(src)}\">{escape(method_name(m))}</option>" for m, src in images)
            ref = s.get("scatter_reference")
            line = (f" The dashed vertical line is the best trivial map ({escape(method_name(ref))}); the dotted "
                    "horizontal one, where robust balanced accuracy is plotted, the constant classifier (0.5)."
                    if ref else "")
            parts.append(
                f"<h3>Robust {escape(what)} against relevance-mass accuracy ({escape(preset)} preset)</h3>\n"
                f"<p class=\"note\">One point per submission with 95% CIs.{line}</p>\n"
                f"<p><label>Attribution method <select class=\"image-switch\" data-target=\"{target}\">"
                f"{options}</select></label></p>\n"
                f"<img id=\"{target}\" src=\"{escape(images[0][1])}\" alt=\"scatter plot\" width=\"600\" height=\"450\">"
            )
        parts.append("</section>")
    return page("fxbench leaderboard", "\n".join(parts), root="", links=links)
