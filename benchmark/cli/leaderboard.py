"""`fxbench leaderboard` and `fxbench compare`."""

from __future__ import annotations

from pathlib import Path

import typer

RESULTS = Path("leaderboard/results")
OUT = Path("leaderboard")


def register(app: typer.Typer) -> None:
    app.command("leaderboard")(leaderboard)
    app.command("add")(add)
    app.command("compare")(compare)


def add(
    run_dir: Path = typer.Argument(..., help="A `fxbench run` output folder (OUT/<id>) or its result.json."),
    results: Path = typer.Option(RESULTS, "--results", help="The results store: RESULTS/<version>/<id>.json."),
    replace: bool = typer.Option(False, "--replace", help="Overwrite a result already stored for this id."),
) -> None:
    """Check a run's result and copy it into the results store (then run `fxbench leaderboard`)."""
    from ..leaderboard.add import add_result

    added = add_result(run_dir, results_dir=results, replace=replace)
    verb = "replaced" if added.replaced else "added"
    typer.echo(f"{verb} {added.submission_id} ({added.version}): {added.json_path}")


def leaderboard(
    results: Path = typer.Option(RESULTS, "--results", help="The results store: RESULTS/<version>/<id>.json."),
    out: Path = typer.Option(OUT, "--out", help="Where README.md, leaderboard.csv/.json and site/ go."),
    check: bool = typer.Option(False, "--check", help="Write nothing; exit 1 if the files in OUT are stale."),
) -> None:
    """Generate the leaderboard (tables, CSV/JSON, static site) from the results store."""
    from ..leaderboard.generate import build_leaderboard, check_leaderboard, write_leaderboard

    _check_out(out, writing=not check)  # before the (slow) build: a refusal comes at once, nothing written
    linked = Path(results).resolve() == (Path(out) / "results").resolve()  # the store sits beside site/
    # the repository's own layout (leaderboard/ beside docs/ and submissions/): link those from the site
    in_repo = linked and (Path(out).resolve().parent / "docs" / "submissions.md").is_file()
    board = build_leaderboard(results_dir=results, gallery_from="results" if linked else None,
                              repo_from=".." if in_repo else None)
    what = ", ".join(f"{v}: {n} submission(s)" for v, n in sorted(board.counts.items()))
    if check:
        report = check_leaderboard(board, out_dir=out)
        if report.ok:
            typer.echo(f"{out}: up to date ({len(board.files)} files; {what})")
            return
        for kind, paths in (("stale", report.stale), ("missing", report.missing), ("extra", report.extra)):
            for p in paths:
                typer.echo(f"{kind}: {out / p}", err=True)
        typer.echo(f"{out}: out of date; run `fxbench leaderboard` and commit the result", err=True)
        raise typer.Exit(code=1)
    try:
        write_leaderboard(board, out_dir=out)
    except OSError as e:  # e.g. no permission: the environment, not a bug
        from ..errors import FxbenchError

        raise FxbenchError(f"--out {out}: cannot write the leaderboard ({e.strerror or e})") from None
    typer.echo(f"wrote {len(board.files)} files to {out} ({what})")


def _check_out(out: Path, *, writing: bool) -> None:
    """--out names a folder (created if missing) whose generated files are not folders."""
    from ..errors import FxbenchError
    from ..leaderboard.generate import TOP_LEVEL
    from ..leaderboard.store import require_folder

    if not writing:
        if out.exists() and not out.is_dir():
            raise FxbenchError(f"--out {out}: not a folder; --check compares the files in the leaderboard folder")
        return
    require_folder(out, what="leaderboard output (--out)")
    for name in TOP_LEVEL:
        if (out / name).is_dir():
            raise FxbenchError(f"--out {out}: {out / name} is a folder where the leaderboard writes a file; "
                               "move it away; nothing was written")


def compare(
    a: str = typer.Argument(..., help="Result A: a result.json, its folder, or a submission id ([version/]id)."),
    b: str = typer.Argument(..., help="Result B, likewise. Differences are B - A."),
    metric: list[str] | None = typer.Option(None, "--metric", help="Only metrics starting with this (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
    results: Path = typer.Option(RESULTS, "--results", help="Results store for submission ids."),
    resamples: int | None = typer.Option(None, "--resamples", help="Bootstrap resamples (default: the benchmark's)."),
    seed: int | None = typer.Option(None, "--seed", help="Bootstrap seed (default: the benchmark's)."),
    all_metrics: bool = typer.Option(False, "--all", help="Every shared metric, not only the headline ones."),
    correction: str = typer.Option(
        "holm", "--correction", help="Multiple-comparison adjustment of the p-values shown: holm, bh or none.",
    ),
) -> None:
    """Paired differences (B - A) of the headline metrics (--all: every shared metric), with paired bootstrap
    CIs and p-values adjusted for the number of comparisons (Holm by default)."""
    from ..errors import FxbenchError
    from ..io import canonical_json
    from ..leaderboard.compare import compare_results, format_table, resolve_pair

    if resamples is not None and resamples < 1:
        raise FxbenchError(f"--resamples {resamples}: need at least 1")
    ra, rb = resolve_pair(a, b, results_dir=results)
    c = compare_results(ra, rb, prefixes=tuple(metric or ()), n_resamples=resamples, seed=seed,
                        select="all" if all_metrics else "headline", correction=correction)
    for w in c.warnings:  # on stderr too: a script reading --json still sees it
        typer.echo(f"WARNING: {w}", err=True)
    if as_json:
        typer.echo(canonical_json(c.to_json()), nl=False)
    else:
        typer.echo(format_table(c))


__all__ = ["register"]
