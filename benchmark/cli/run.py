"""`fxbench run PATH`: evaluate one submission and write OUT/<id>/result.json + samples.parquet."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from ..results.summary import CEILING
from . import options as o

if TYPE_CHECKING:  # ..run imports torch: only when a run starts, so --help and argument errors stay fast
    from rich.console import Console

    from ..results.summary import RunSummary
    from ..run import RunResult


def register(app: typer.Typer) -> None:
    app.command("run")(run)


def run(
    path: Path = typer.Argument(..., help="A submission's model.yaml, or the folder holding it."),
    data: o.Data = None,
    preset: o.Preset = "auto",
    device: o.Device = "auto",
    out: o.Out = Path("runs"),
    limit: o.Limit = None,
    seed: o.Seed = None,
    trust_code: o.TrustCode = False,
    quiet: o.Quiet = False,
    overwrite: o.Overwrite = False,
    battery: o.Battery = None,
    executor: o.Executor = "local",
    ray_address: o.RayAddress = None,
    max_retries: o.MaxRetries = None,
    gpus_per_task: o.GpusPerTask = None,
) -> None:
    """Run the robustness and explanation batteries on a submission."""
    from rich.console import Console

    from ..executors import make_executor
    from ..run import run_submission

    chosen = make_executor(executor, address=ray_address, max_retries=max_retries, gpus_per_task=gpus_per_task)
    console = Console(stderr=True, quiet=quiet)
    progress, stop = progress_for(console, quiet=quiet)
    try:
        result = run_submission(
            path, data=data, preset=preset, device=device, out=out, limit=limit, seed=seed,
            trust_code=trust_code, progress=progress, batteries=battery or None,
            overwrite=overwrite, executor=None if chosen.name == "local" else chosen,
        )
    except KeyboardInterrupt:
        raise interrupted() from None
    finally:
        stop()
    if quiet:
        typer.echo(str(result.out_dir / "result.json"))
        return
    print_summary(result, Console())


def progress_for(console: Console, *, quiet: bool):
    """(run.Progress, stop): a rich bar on a terminal; plain lines (cli/progress.py) when stdout or stderr is
    not a terminal (a CI log, `> run.log 2>&1`), where a bar would print nothing until the end."""
    import sys

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..run import Progress as RunProgress
    from .progress import PlainProgress

    if quiet:
        return RunProgress(), lambda: None
    if not (console.is_terminal and sys.stdout.isatty()):
        plain = PlainProgress(lambda line: print(line, file=sys.stderr, flush=True), heartbeat=True)
        planned = cost_printer(lambda line: print(line, file=sys.stderr, flush=True), plain.plan)
        return RunProgress(start=plain.start, advance=plain.advance, note=plain.note, planned=planned), plain.stop

    from .progress import Eta

    bar = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=False,
    )
    state: dict = {}
    eta = Eta()

    def start(total: int) -> None:
        state["task"] = bar.add_task("shards", total=total)
        state["t"] = time.monotonic()
        bar.start()

    def advance(battery: str, key: str, resumed: bool) -> None:
        now = time.monotonic()
        eta.advanced(battery, resumed, now - state["t"])
        state["t"] = now
        what = f"{battery} {key}" + (" (resumed)" if resumed else "")
        bar.update(state["task"], advance=1, description=f"{what}, {eta.text()}" if eta.known else what)

    def note(message: str) -> None:
        console.print(f"[yellow]note:[/] {message}")

    planned = cost_printer(lambda line: console.print(line, markup=False, highlight=False), eta.plan)
    return RunProgress(start=start, advance=advance, note=note, planned=planned), bar.stop


def _duration(s: float) -> str:
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


def cost_printer(write, plan):
    """`Progress.planned`: before any shard, print what the run will cost on this device and hand the
    progress display each battery's shards (and the robustness battery's priced seconds per shard), so that
    its lines name the battery at work and an ETA. The robustness battery is priced by its time floor
    (robustness/floor.py: the passes the spec requires at both bounds, at this model's rates measured now on
    this device); the clean battery at one forward pass per image; the explanation battery is timed as it runs."""

    def planned(prep) -> None:
        from ..robustness.floor import measure_rates, price, probe_size

        per_shard: dict[str, float] = {}
        steps = [s for s in prep.plan]
        left = {s.name: [k for k in s.keys if not prep.store.done(s.name, k)] for s in steps}
        rob = next((s for s in steps if s.name == "robustness"), None)
        if rob is not None and left[rob.name]:
            cfg, dev = rob.config, prep.dev
            x = prep.evalset.x[: probe_size(cfg.batch_size, dev)].to(dev)
            rates = measure_rates(prep.sub.model, x)
            share = len(left[rob.name]) / len(rob.keys)
            p = {k: v * share for k, v in price(cfg, len(prep.evalset), rates).items()}
            per_shard[rob.name] = p["upper_s"] / len(left[rob.name])
            done = f", {len(rob.keys) - len(left[rob.name])} shard(s) resumed" if share < 1 else ""
            write(f"cost: {prep.sub.spec.id} on {dev.type} (rates measured now: "
                  f"{rates['fwd_s_per_image'] * 1e3:.2f} ms per image forward, "
                  f"{rates['fwd_bwd_s_per_image'] * 1e3:.2f} ms forward + backward, batch {rates['batch']}):")
            write(f"  robustness ({cfg.label}, {prep.preset}, {len(prep.evalset)} images, {len(rob.keys)} shard(s)"
                  f"{done}): {_duration(p['lower_s'])} if every image breaks at once, at most "
                  f"{_duration(p['upper_s'])} if none ever breaks (time floor; expect up to ~1.5x on the wall)")
            if "clean" in left:
                write(f"  clean: {_duration(len(prep.evalset) * rates['fwd_s_per_image'])}; explanations: "
                      "not priced, timed as it runs (the ETA in the progress lines)")
        elif rob is not None:
            write(f"cost: {prep.sub.spec.id}: every robustness shard is resumed (nothing left to price)")
        plan([(s.name, len(s.keys)) for s in steps], per_shard)

    return planned


def interrupted() -> typer.Exit:
    """Ctrl-C: typer exits 130 silently on KeyboardInterrupt, before cli.main could say what to do."""
    typer.echo("error: interrupted; rerun the same command to resume (finished shards are kept).", err=True)
    return typer.Exit(code=130)


VERDICTS = {
    "above": "above",
    "below": "below",
    "at": "exactly chance: a constant answer",
    "undecided": "cannot be told apart at this n",
    "no-ci": "n too small for a CI",
    "n/a": "n/a",
}


def _ci(lo: float | None, hi: float | None, *, signed: bool = False) -> str:
    if lo is None or hi is None:
        return ""
    f = "{:+.3f}" if signed else "{:.3f}"
    return f" [{f.format(lo)}, {f.format(hi)}]"


def _val(sc, *, signed: bool = False) -> str:
    if sc is None or sc.value is None:
        return "n/a"
    return ("{:+.3f}" if signed else "{:.3f}").format(sc.value) + _ci(sc.ci_low, sc.ci_high, signed=signed)


def summary_blocks(s: RunSummary) -> list[tuple[str, list[tuple[str, str, str, str]]]]:
    """The printed summary as (heading, rows of (metric, value [CI], n, reading)) blocks, in order: the two
    questions first, then the classifier's details and the reference maps apart from the methods."""
    blocks: list[tuple[str, list[tuple[str, str, str, str]]]] = []
    if s.robust is not None:
        r = s.robust
        blocks.append((
            "1. Does it still find the fracture under attack? (the headline; a constant classifier scores 0.500)",
            [(r.score.label, _val(r.score), str(r.score.n or ""),
              f"minus {r.reference_label} ({r.reference:.3f}): {_val(r.difference, signed=True)}, "
              f"{VERDICTS[r.verdict]}")]))
    if s.methods:
        ref = next((m.reference_value for m in s.methods if m.reference_value is not None), None)
        best = (s.best_reference or "the best trivial map") + (f" = {ref:.3f}" if ref is not None else "")
        head = (f"2. Does it look at the fracture? ({s.primary_metric.replace('_', ' ')} per method, and minus the "
                f"best trivial map on the same images; best trivial map: {best})")
        rows = []
        for m in s.methods:
            how = {"above": "beats the trivial maps", "below": "loses to the trivial maps"}.get(
                m.verdict, VERDICTS[m.verdict])
            rows.append((m.method, _val(m.score), str(m.score.n or ""),
                         f"minus trivial: {_val(m.difference, signed=True)}, {how}"))
        blocks.append((head, rows))
    if s.corruptions:
        blocks.append(("3. Does it hold up on degraded radiographs? (noise, blur, contrast: the corruption battery, "
                       "mean over its corruptions)",
                       [(c.label, _val(c, signed="drop" in c.id), str(c.n or ""), c.note) for c in s.corruptions]))
    details = []
    if s.clean is not None:
        details.append((s.clean.score.label, _val(s.clean.score), str(s.clean.score.n or ""),
                        f"minus chance: {_val(s.clean.difference, signed=True)}, {VERDICTS[s.clean.verdict]}"))
    details += [(d.label, _val(d), str(d.n or ""), d.note) for d in s.details]
    if details:
        blocks.append(("The classifier in detail", details))
    if s.references:
        rows = []
        for r in s.references:
            role = ("the ceiling: the expert mask itself" if r.label == CEILING else
                    "best trivial map" if r.label == s.best_reference else "trivial map")
            rows.append((r.label, _val(r), str(r.n or ""), role))
        blocks.append((f"Reference maps on {s.primary_metric.replace('_', ' ')} (not methods: what chance, edges, "
                       "position and anatomy alone score)", rows))
    return blocks


def print_summary(run: RunResult, console: Console) -> None:
    from rich.table import Table

    from ..results.summary import summarise

    r = run.result
    s = summarise(r, eval_counts=_eval_split_counts())
    console.print(f"[bold]{s.title}[/]")
    for heading, rows in summary_blocks(s):
        table = Table(title=heading, title_justify="left", title_style="bold", show_header=False, box=None,
                      pad_edge=False)
        table.add_column("metric")
        table.add_column("value [95% CI]", justify="right", no_wrap=True)
        table.add_column("n", justify="right")
        table.add_column("reading")
        for row in rows:
            table.add_row(*row)
        console.print(table)
    for w in s.warnings:
        console.print(f"[bold yellow]warning:[/] {w}")
    for note in s.notes:
        console.print(f"note: {note}")
    ds = r["benchmark"]["dataset"]
    console.print(
        f"data: {ds['name']} ({ds['n']} images, fingerprint {ds['fingerprint'][:12]}), preset "
        f"{r['benchmark']['preset']}, device {r['provenance']['device']}, "
        f"{r['provenance']['duration_s']:.0f} s; shards run {run.shards_run}, resumed {run.shards_resumed}"
    )
    for f in r["flags"]:
        console.print(f"[yellow]flag {f['code']}:[/] {f['message']}")
    console.print(f"result: {run.out_dir / 'result.json'} (every metric with its CI and definition)")


def _eval_split_counts() -> tuple[int, int] | None:
    """(images, fractured) of the benchmark's evaluation split, from the committed manifest."""
    from ..data.manifest import load_manifest

    m = load_manifest()
    counts = (m.raw.get("counts") or {}).get("eval") if m else None
    return (int(counts["n"]), int(counts["n_fracture"])) if counts else None
