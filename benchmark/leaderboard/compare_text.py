"""`fxbench compare`'s table: one line per metric, the p-value format, and what the numbers mean."""

from __future__ import annotations

from typing import Any

from .stats import CORRECTIONS


def fmt_p(p: float | None) -> str:
    """One format for every p-value: three decimals, "<0.001" below that."""
    if p is None:
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def format_table(c: Any) -> str:
    """The text report of a ``compare.Comparison``."""
    from tabulate import tabulate

    def f(x: float | None, spec: str = ".4f") -> str:
        return "n/a" if x is None else format(x, spec)

    level = round(100 * (1 - c.alpha))
    small = f"n<{c.min_n_for_ci}"
    rows = []
    for d in c.metrics:
        ci = "n/a" if d.ci_low is None else f"[{d.ci_low:+.4f}, {d.ci_high:+.4f}]"
        row = [
            ("(primary) " if d.primary else "") + d.id, f(d.a), f(d.b), f(d.diff, "+.4f"), small if d.too_small else ci,
            "-" if d.too_small else fmt_p(d.p_value), "-" if d.too_small else fmt_p(d.p_adjusted),
            d.n if d.n == d.n_a == d.n_b else f"{d.n} (A {d.n_a}, B {d.n_b})",
        ]
        if c.statistics:
            equiv = "-" if d.margin is None or d.too_small else (
                f"±{d.margin:g}: {fmt_p(d.p_equivalence)}" + (" equivalent" if (d.p_equivalence or 1) < c.alpha
                                                               else ""))
            row += [f(d.median_diff, "+.4f"), "-" if d.too_small else fmt_p(d.p_wilcoxon), equiv]
        rows.append(row)
    short = {"holm": "Holm", "bh": "BH", "none": "unadj."}[c.correction]
    headers = ["metric", "A", "B", "B - A", f"{level}% CI", "p", f"p ({short})", "n paired"]
    if c.statistics:
        headers += ["median per-image diff", "p (Wilcoxon)", "equivalence: p (TOST)"]
    shown = {"headline": "headline metrics (--all for every shared metric)", "all": "shared metrics (--all)",
             "prefix": "metrics chosen with --metric"}[c.selection]
    family = sum(d.p_adjusted is not None and not d.primary for d in c.metrics)
    lines = [f"WARNING: {w}" for w in c.warnings] + [
        f"A = {c.a}", f"B = {c.b}",
        (f"benchmark {c.version}; {c.n_shared} shared images; paired bootstrap, {c.n_resamples} resamples "
         f"stratified by label, seed {c.seed}; each metric on the images finite in both results (n paired)"),
        f"showing {len(c.metrics)} {shown}",
        (f"p: two-sided paired bootstrap; p ({short}): adjusted for the {family} comparisons shown, "
         f"{CORRECTIONS[c.correction]}; no CI or p below {c.min_n_for_ci} paired images ({small})"),
    ]
    if len(c.seeds_a) > 1 or len(c.seeds_b) > 1:
        lines.append(f"seeds: A {len(c.seeds_a)}, B {len(c.seeds_b)} results; each draw resamples the seeds of "
                     "each side as well as the images; a side's value is the mean over its seeds")
    if c.statistics:
        lines.append(
            f"v3 rules: a claim's (primary) comparison is tested alone at {c.alpha:g} and left out of the "
            "adjusted family; p (Wilcoxon): signed-rank test of the per-image differences; equivalence: TOST "
            f"inside ±margin (the spec's), \"equivalent\" only below {c.alpha:g}; no margin, no equivalence claim")
    lines += ["", tabulate(rows, headers=headers, disable_numparse=True)]
    lines += [f"skipped {s['id']}: {s['reason']}" for s in c.skipped]
    lines += [f"note: {n}" for n in c.notes]
    lines += [f"WARNING: {w}" for w in c.warnings]  # again at the end, where a long table leaves the reader
    return "\n".join(lines)
