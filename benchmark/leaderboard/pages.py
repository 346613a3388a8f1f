"""The site's pages beyond the boards: one per submission (facts, files, reproduction, flags, curve, gallery,
every metric), the explanation methods view and the per-version gallery."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from html import escape
from typing import Any

from ..results.summary import summarise
from . import corruption_view, fmt, method_ranks
from .markup import (
    NONE,
    Links,
    date_text,
    extra_data,
    headline_box,
    is_reference_map,
    method_name,
    page,
    td,
    th,
)
from .store import StoredResult
from .tables import MethodsView, training_text

CENTRE = "ref_centre"  # the trivial map the methods view marks losses to (a centred Gaussian: position alone)
VERDICT_WORDS = {"above": "above", "below": "below", "at": "exactly", "undecided": "cannot be told from",
                 "no-ci": "n too small to compare with", "n/a": "no score to compare with"}


def _definition(d: dict[str, Any]) -> str:
    where = " and ".join(f"{k} = {v}" for k, v in sorted(d["where"].items()))
    return f"{d['reduce']}({d['column']})" + (f" where {where}" if where else "")


@dataclass(frozen=True)
class SubmissionFiles:
    """What the submission page links besides its numbers, as hrefs relative to the page (None: not
    available). ``yaml_note``: why the model.yaml link comes with a warning (it changed since the run)."""

    model_card: str | None = None
    model_yaml: str | None = None
    weights: str | None = None
    weights_label: str = ""
    result_json: str | None = None
    samples: str | None = None
    yaml_note: str = ""


def reproduce_command(r: StoredResult) -> str:
    """The `fxbench run` line that recomputes this result (same preset, device kind, seed, limit)."""
    b = r.result["benchmark"]
    prov = r.result.get("provenance") or {}
    device = str(prov.get("device") or "")
    kind = "cuda" if device.startswith("cuda") else "cpu"
    parts = ["fxbench", "run", f"submissions/{r.id}/model.yaml", "--preset", str(b["preset"]), "--device", kind]
    if isinstance(prov.get("seed"), int) and not isinstance(prov.get("seed"), bool):
        parts += ["--seed", str(prov["seed"])]
    if isinstance(b.get("limit"), int) and not isinstance(b.get("limit"), bool):
        parts += ["--limit", str(b["limit"])]
    return " ".join(parts)


def _a(href: str | None, text: str, *, download: bool = False) -> str:
    if not href:
        return ""
    return f"<a href=\"{escape(href)}\"{' download' if download else ''}>{escape(text)}</a>"


def _fmt_signed(sc) -> str:
    if sc is None or sc.value is None:
        return fmt.NA
    ci = f" [{sc.ci_low:+.3f}, {sc.ci_high:+.3f}]" if sc.has_ci else ""
    return f"{sc.value:+.3f}{ci}"


def headline(r: StoredResult) -> str:
    """The result's two answers at the top of its page (results.summary, as `fxbench run` prints them)."""
    s = summarise(r.result)
    lines = []
    for c in (s.robust, s.clean):
        if c is None:
            continue
        value = fmt.with_ci(c.score.value, c.score.ci_low, c.score.ci_high)
        lines.append((c.score.label, f"{escape(value)} <span class=\"verdict\">({escape(VERDICT_WORDS[c.verdict])} "
                                     f"the {escape(c.reference_label)}, {c.reference:.3f})</span>"))
    if any(m.difference is not None for m in s.methods):
        ref = next((m.reference_value for m in s.methods if m.reference_value is not None), None)
        best = method_name(s.best_reference) if s.best_reference else "the best trivial map"
        label = (f"explanations: {s.primary_metric.replace('_', ' ')} minus {best}"
                 + (f" ({ref:.3f})" if ref is not None else ""))
        items = "; ".join(f"{escape(method_name(m.method))} {escape(_fmt_signed(m.difference))} <span class=\"verdict\">"
                          f"({escape(VERDICT_WORDS[m.verdict])} it)</span>" for m in s.methods)
        lines.append((label, items))
    return headline_box(lines, s.warnings) if lines else ""


def _gallery_by_image(gallery) -> dict[str, list[str]]:
    """gallery/<image>/<method>.png and gallery/<image>/references/<map>.png, grouped by image."""
    out: dict[str, list[str]] = {}
    for rel in gallery:
        parts = rel.split("/")
        if len(parts) >= 3:
            out.setdefault(parts[1], []).append(rel)
    return dict(sorted(out.items()))


def _stem(rel: str) -> str:
    return rel.rsplit("/", 1)[-1].removesuffix(".png")


def _figures(rels: list[str], src_of, *, loading: str, prefix: str = "") -> str:
    return "".join(
        f"<figure><a href=\"{src_of(rel)}\"><img src=\"{src_of(rel)}\" alt=\"{escape(prefix + method_name(_stem(rel)))}\" "
        f"loading=\"{loading}\"></a><figcaption>{escape(prefix + method_name(_stem(rel)))}</figcaption></figure>"
        for rel in rels)


def _gallery_group(image_id: str, rels: list[str], src_of, *, loading: str, title: str | None = None,
                   prefix: str = "") -> str:
    """One image's pictures: the methods labelled by name, then the reference maps apart."""
    methods = sorted((x for x in rels if "/references/" not in x and not is_reference_map(_stem(x))), key=_stem)
    refs = sorted((x for x in rels if x not in methods), key=_stem)
    out = [f"<div class=\"gallery-group\"><h4>{escape(title or image_id)}: methods</h4>"
           f"<div class=\"gallery\">{_figures(methods, src_of, loading=loading, prefix=prefix)}</div>"]
    if refs:
        out.append(f"<h4>{escape(title or image_id)}: reference maps (no model)</h4><div class=\"gallery references\">"
                   f"{_figures(refs, src_of, loading=loading, prefix=prefix)}</div>")
    return "".join(out) + "</div>"


def submission_page(r: StoredResult, *, has_curve: bool, img_root: str = "", links: Links = Links(),
                    files: SubmissionFiles = SubmissionFiles(), corruption_curve: bool = False) -> str:
    s = r.result["submission"]
    b = r.result["benchmark"]
    url = s.get("url") or ""
    link = f"<a href=\"{escape(url)}\">{escape(url)}</a>" if url.startswith(("https://", "http://")) else ""
    n = s.get("n_parameters")
    facts = [
        ("id", f"<code>{escape(r.id)}</code>"),
        ("authors", escape(", ".join(str(a) for a in s.get("authors") or []))),
        ("paper / code", link),  # left out when the submission gives none (never a blank row)
        ("license", escape(str(s.get("license") or ""))),
        ("architecture", escape(str(s.get("architecture") or ""))),
        ("parameters", escape(f"{n:,}") if isinstance(n, int) and not isinstance(n, bool) and n > 0 else ""),
        ("training", escape(training_text(s.get("training") or {}))),
        ("extra training data", "" if extra_data(s.get("training") or {}) == NONE
         else extra_data(s.get("training") or {})),
        ("benchmark", escape(f"{b['version']}, preset {b['preset']}, config {b['config_hash']}")),
        ("dataset", escape(f"{b['dataset']['name']} ({b['dataset']['n']} images), fingerprint "
                           f"{b['dataset']['fingerprint'][:16]}...")),
        ("evaluated", "" if date_text(r.result.get("provenance") or {}) == NONE else date_text(r.result["provenance"])),
        ("device", escape(str(r.result["provenance"].get("device", "")))),
    ]
    parts = [f"<h1>{escape(r.name)}</h1>", headline(r),
             "<dl>" + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts if v) + "</dl>"]
    items = [
        _a(files.model_card, "model card (README.md)"),
        _a(files.model_yaml, "model.yaml") + (f" <em>{escape(files.yaml_note)}</em>" if files.yaml_note else ""),
        _a(files.weights, files.weights_label or "weights"),
        _a(files.result_json, "result file (result.json)", download=True),
        _a(files.samples, "per-sample table (parquet)", download=True),
    ]
    items = [i for i in items if i]
    sha = escape(str(s.get("checkpoint_sha256") or ""))
    parts.append("<h2>Files and reproduction</h2>\n"
                 + ("<ul class=\"files\">" + "".join(f"<li>{i}</li>" for i in items) + "</ul>\n" if items else "")
                 + (f"<p>Weights sha256 <code>{sha}</code>.</p>\n" if sha else "")
                 + "<p>Recompute this result (after <code>fxbench data prepare</code> of the FracAtlas release with "
                 f"fingerprint <code>{escape(b['dataset']['fingerprint'][:16])}...</code>), then compare the two "
                 "with <code>fxbench compare</code>:</p>\n"
                 f"<pre class=\"command\"><code>{escape(reproduce_command(r))}</code></pre>")
    parts.append(evidence_section(r.evidence))
    if r.flags:
        parts.append("<h2>Flags</h2><ul class=\"flags\">" + "".join(
            f"<li><span class=\"flag\">{escape(f['code'])}</span> {escape(f['message'])}</li>" for f in r.flags
        ) + "</ul>")
    if has_curve:
        parts.append(f"<h2>Robustness curve</h2>\n<a href=\"{r.id}/robustness.png\"><img src=\"{r.id}/robustness.png\" "
                     "alt=\"robust accuracy against the L-inf budget\" width=\"500\" height=\"340\"></a>")
    if corruption_curve:  # v3 on
        parts.append(corruption_view.curve_html(r))
    if r.gallery:
        parts.append("<h2>Explanation gallery</h2>\n<p>Per image: the attribution methods, then the reference maps "
                     "(no model: what position, edges and anatomy alone give). Click an image for its full size.</p>")
        for image_id, rels in _gallery_by_image(r.gallery).items():
            parts.append(_gallery_group(image_id, rels, lambda rel: f"{img_root}{r.id}/{escape(rel)}",
                                        loading="eager"))
    rows = []
    for mid, m in sorted(r.metrics.items()):
        rows.append("<tr>" + "".join([
            td(f"<code>{escape(mid)}</code>"),
            td(fmt.num(m["value"], 4), fmt.sort_value(m), "num"),
            td(escape(f"[{fmt.num(m['ci_low'], 4)}, {fmt.num(m['ci_high'], 4)}]"), cls="num"),
            td(str(m["n"]), str(m["n"]), "num"),
            td("higher" if m["higher_is_better"] else "lower"),
            td(escape(_definition(m["definition"])) + (f" <em>{escape(m['note'])}</em>" if m.get("note") else "")),
        ]) + "</tr>")
    head = "".join(th(h, k) for h, k in [("metric", "text"), ("value", "number"), ("95% CI", "text"),
                                         ("n", "number"), ("better", "text"), ("definition", "text")])
    parts.append(f"<h2>All metrics</h2>\n<p><label>Filter <input type=\"search\" id=\"filter\" "
                 f"placeholder=\"e.g. xai/saliency\"></label></p>\n<table class=\"sortable\" id=\"metrics\" data-noun=\"metric\">"
                 f"<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody></table>")
    components = r.result.get("components") or {}
    if components:
        blob = json.dumps(components, sort_keys=True, indent=2, ensure_ascii=False)
        parts.append(f"<details><summary>Battery details</summary><pre>{escape(blob)}</pre></details>")
    return page(f"{r.name} - fxbench", "\n".join(parts), root="../", links=links)


RUN_URL = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")


def _run(ci: dict[str, Any]) -> str:
    repo, run = str(ci.get("repository") or ""), str(ci.get("run_id") or "")
    text = escape(f"{repo} run {run}")
    if RUN_URL.fullmatch(repo) and run.isdigit():
        return f"<a href=\"https://github.com/{repo}/actions/runs/{run}\">{text}</a>"
    return text


def evidence_section(ev: Any) -> str:
    """What shows that this result's run happened (evidence.Evidence): its audit, its verified CI run, and
    what the result claims without proof (``provenance.ci`` without a verified record)."""
    items = []
    if ev.audit:
        a = ev.audit
        what = "passed" if a.get("verdict") == "pass" else "FAILED"
        items.append(escape(f"Audit {what}: {a.get('images')} images chosen by a review-time nonce "
                            f"({a.get('nonce')}) re-run with the submitted model on {a.get('device')}, "
                            f"{str(a.get('audited_at') or '')[:10]}") + "; the per-image outcomes "
                     + ("match the result." if what == "passed" else
                        "contradict it: " + escape("; ".join(a.get("problems") or []))))
    if ev.ci:
        items.append("CI provenance verified: the committed files are byte for byte the artifact of "
                     + _run(ev.ci) + ".")
    elif ev.claimed_ci:
        items.append("The result names CI " + _run(ev.claimed_ci) + ", <strong>not verified</strong> (no CI "
                     "provenance record): a claim, not evidence.")
    if not ev.levels:
        items.append("No evidence that this run happened: its numbers are as submitted (they pass the store's "
                     "consistency checks).")
    return (f"<h2>Evidence: {escape(ev.label)}</h2>\n<ul class=\"evidence\">"
            + "".join(f"<li>{i}</li>" for i in items) + "</ul>")


def _value(s) -> float | None:
    v = s.get("value") if isinstance(s, dict) else getattr(s, "value", None)
    return v if isinstance(v, (int, float)) else None


def _higher_is_better(view: MethodsView, metric: str) -> bool:
    for scores in view.per_submission.values():
        for (_, c), d in scores.items():
            if c == metric and isinstance(d, dict) and "higher_is_better" in d:
                return bool(d["higher_is_better"])
    return True


def _score_cell(s, centre: float | None, higher: bool) -> str:
    """value, its CI under it; a method that scores worse than the centre prior is marked."""
    if s is None:
        return td("", "", "num")
    if isinstance(s, dict):
        text, sort = fmt.metric(s) or fmt.NA, fmt.sort_value(s)
    else:
        text, sort = fmt.with_ci(s.value, s.ci_low, s.ci_high), "" if s.value is None else repr(s.value)
    value, _, rest = text.partition(" ")
    inner = escape(value) + (f" <span class=\"ci\">{escape(rest)}</span>" if rest else "")
    v = _value(s)
    if centre is not None and v is not None and (v < centre if higher else v > centre):
        attr = f" title=\"{'below' if higher else 'above'} the centre prior ({centre:.3f})\""
        return f"<td data-value=\"{escape(sort)}\" class=\"num below-centre\"{attr}>{inner}</td>"
    return td(inner, sort, "num")


def _scores_table(view: MethodsView, scores: dict, table_id: str, columns=None) -> str:
    columns = view.columns if columns is None else columns
    head = th("method", "text") + "".join(th(c.header, "number", c.key) for c in columns)
    rows = []
    for m in view.methods:
        ref = m in view.references
        cls = " class=\"reference\"" if ref else ""
        label = (f"{escape(method_name(m))} · {escape(m)} <em>(reference)</em>" if ref
                 else f"{escape(method_name(m))} <code>{escape(m)}</code>")
        cells = [td(label)]
        for c in columns:
            centre = None if ref else _value(scores.get((CENTRE, c.key)))
            cells.append(_score_cell(scores.get((m, c.key)), centre, _higher_is_better(view, c.key)))
        rows.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return (f"<table class=\"sortable methods\" id=\"{table_id}\"><thead><tr>{head}</tr></thead>\n<tbody>\n"
            + "\n".join(rows) + "\n</tbody></table>")


GROUP_TITLES = {"localisation": "Localisation (against the expert masks)", "faithfulness": "Faithfulness",
                "randomisation": "Randomisation check", "explanation_robustness": "Explanation robustness"}


def _grouped_tables(view: MethodsView, scores: dict, table_id: str) -> str:
    """One table per kind of score (localisation, faithfulness, ...): the columns of one kind fit a 1400 px
    window, where one table of every score did not."""
    groups: dict[str, list] = {}
    for c in view.columns:
        groups.setdefault(c.group, []).append(c)
    out = []
    for group, cols in groups.items():
        title = GROUP_TITLES.get(group, group.replace("_", " "))
        out.append(f"<h4>{escape(title)}</h4>\n" + _scores_table(view, scores, f"{table_id}-{group}", cols))
    return f"<div class=\"methods-group\" id=\"{escape(table_id)}\">\n" + "\n".join(out) + "\n</div>"


def methods_page(view: MethodsView, *, links: Links = Links()) -> str:
    marker = ""
    if CENTRE in view.references:
        marker = (" <span class=\"legend\">A cell marked <span class=\"below-centre\">&#9660; like this</span> is a "
                  "method that scores worse than the centre prior (a centred Gaussian: the image's middle, no model) "
                  "on that score.</span>")
    parts = [
        f"<h1>Explanation methods, benchmark {escape(view.version)}</h1>",
        ("<p>Attribution methods as rows, scores as columns, one table per kind of score. Pooled: the mean of "
         "the submissions' scores, with a 95% bootstrap CI that resamples the images shared by all of them "
         "(stratified by label). Reference maps (random, edge, centre, anatomy; the mask is the ceiling) are "
         f"the rows to beat.{marker}</p>"),
        "<h2>Pooled over submissions</h2>", _grouped_tables(view, view.pooled, "methods-pooled"),
    ]
    if view.ranks is not None:  # v3 on
        parts.append(method_ranks.html(view.ranks))
    for sid in sorted(view.per_submission):
        parts.append(f"<h2 id=\"{escape(sid)}\">{escape(sid)}</h2>")
        parts.append(_grouped_tables(view, view.per_submission[sid], f"methods-{sid}"))
    return page(f"Explanation methods {view.version} - fxbench", "\n".join(parts), root="../", links=links)


def gallery_page(version: str, results: list[StoredResult], *, img_root: str = "", links: Links = Links()) -> str:
    """One page per version: for each gallery image (the battery picks the same images for every
    submission), one row per submission, so the same radiograph can be read across models."""
    by_image: dict[str, dict[str, list[str]]] = {}
    for r in sorted(results, key=lambda r: r.id):
        for image_id, rels in _gallery_by_image(r.gallery).items():
            by_image.setdefault(image_id, {})[r.id] = rels
    out = [f"<h1>Benchmark {escape(version)}: explanation gallery, image by image</h1>",
           "<p>The same images for every submission (chosen by mask size, see docs/explanations.md); each "
           "picture shows the clean image and, where the attack stored one, the attacked image, with the "
           "expert mask in cyan. Per submission: the methods, then the reference maps (no model), the pictures "
           "to beat.</p>"]
    for image_id in sorted(by_image):
        out.append(f"<h2>{escape(image_id)}</h2>")
        for sid, rels in sorted(by_image[image_id].items()):
            out.append(f"<h3>{escape(sid)}</h3>")
            out.append(_gallery_group(image_id, rels, lambda rel, sid=sid: f"{img_root}{escape(sid)}/{escape(rel)}",
                                      loading="lazy", title=sid, prefix=""))
    return page(f"fxbench {version} gallery", "\n".join(out), root="../", links=links)
