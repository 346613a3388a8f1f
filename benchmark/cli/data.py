"""`fxbench data ...`: prepare the FracAtlas benchmark dataset and report what it holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ..errors import DataError

data_app = typer.Typer(
    help="Prepare and inspect the FracAtlas benchmark dataset.", no_args_is_help=True, rich_markup_mode=None
)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")


@data_app.command("prepare")
def prepare_cmd(
    source: Annotated[
        Path | None,
        typer.Option("--source", help="A FracAtlas release in its own layout [default: env FXBENCH_FRACATLAS]."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Where to write the dataset [default: FXBENCH_HOME].")
    ] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", min=1, help="Decoding processes [default: CPUs].")
    ] = None,
    download: Annotated[
        bool, typer.Option("--download", help="Fetch the release archive first (sha256-checked).")
    ] = False,
    url: Annotated[
        str | None, typer.Option("--url", help="Archive URL (mirror) [env FXBENCH_FRACATLAS_URL].")
    ] = None,
    sha256: Annotated[
        str | None, typer.Option("--sha256", help="Expected archive digest, overrides the pin.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Validate a FracAtlas release and write the canonical 224 x 224 dataset (atomically)."""
    from ..data.download import download_release
    from ..data.prepare import prepare
    from ..paths import FRACATLAS_ENV, fracatlas_release

    if source is None and not download:
        source = fracatlas_release()
        if source is None:
            raise DataError(f"say where the FracAtlas release is: --source DIR, or set {FRACATLAS_ENV}=DIR; "
                            "or fetch it with --download.")
    if download and source is not None:
        raise DataError("give exactly one of --source DIR or --download.")
    if download:
        got = download_release(url=url, sha256=sha256)
        if not quiet:
            typer.echo(f"verified {got.url} (sha256 {got.sha256}); unpacked at {got.root}")
        source = got.root
    report = prepare(source, out=out, workers=workers)
    typer.echo(
        f"wrote {report.path}: {report.counts['all']['n']} images "
        f"({report.counts['all']['n_fracture']} fractured), {len(report.excluded)} excluded, "
        f"{report.seconds:.1f} s with {report.workers} worker(s)"
    )
    for line in exclusion_lines(report.excluded, report.path):
        typer.echo(line)
    typer.echo(f"fingerprint {report.fingerprint}")
    if report.manifest.status in ("match", "no-manifest"):
        typer.echo(f"manifest: {report.manifest.message}")
    else:
        typer.echo(f"warning: {report.manifest.message}", err=True)


MAX_LISTED = 20  # unexpected exclusions listed one per line; the rest are counted


def exclusion_lines(excluded: list, path: Path) -> list[str]:
    """What happened to the images that could not be used. Exclusions the committed manifest records (the
    release's known defects, e.g. its truncated non-fractured JPEGs) are expected: one summary line. Any other
    is listed with its reason, because it means this copy of the release differs from the benchmark's."""
    from ..data.manifest import load_manifest

    m = load_manifest()
    known = {e["image_id"] for e in (m.raw.get("excluded") or [])} if m else set()
    expected = [e for e in excluded if e.image_id in known]
    other = [e for e in excluded if e.image_id not in known]
    out = []
    if expected:
        kinds = sorted({e.reason.split(":", 1)[0] for e in expected})
        out.append(f"excluded {len(expected)} image(s) as expected ({'; '.join(kinds)}): known defects of the "
                   f"FracAtlas release, recorded in the split manifest (docs/data.md); `fxbench data info` lists them")
    for e in other[:MAX_LISTED]:
        out.append(f"excluded {e.image_id}: {e.reason} (not a known defect of the release: check this copy)")
    if len(other) > MAX_LISTED:
        out.append(f"... and {len(other) - MAX_LISTED} more unexpected exclusion(s), listed in {path}/fxbench.json")
    return out


@data_app.command("info")
def info_cmd(
    data: Annotated[
        Path | None, typer.Option("--data", help="A prepared dataset [default: FXBENCH_HOME].")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
    verify: Annotated[
        bool, typer.Option("--verify/--no-verify", help="Decode every image and check it against its digest.")
    ] = True,
) -> None:
    """Fingerprint, counts per split and class, and every exclusion with its reason. The fingerprint is
    recomputed from what the folder holds (every image decoded unless --no-verify), not read from it."""
    from ..data import resolve_data, verify_dataset

    src = resolve_data(data)
    if verify:
        verify_dataset(src.path)  # DataError (exit 2) with the reason if anything was modified
    info = src.info
    doc = {
        "name": src.name,
        "path": str(src.path),
        "embedded": src.embedded,
        "leaderboard_eligible": src.leaderboard_eligible,
        "manifest": src.manifest_status,
        "fingerprint": src.fingerprint,
        "splits": info["counts"],
        "excluded": info["excluded"],
        "flags": info.get("flags", {}),
        "verified": verify,
    }
    if src.embedded:
        typer.echo(f"note: using {src.describe()}", err=True)
    if as_json:
        typer.echo(json.dumps(doc, indent=2, sort_keys=True))
        return
    typer.echo(f"{src.name} at {src.path}")
    typer.echo(f"fingerprint  {src.fingerprint}"
               + ("  (verified: every image and mask matches it)" if verify else "  (not verified: --no-verify)"))
    typer.echo(
        f"manifest     {src.manifest_status}; leaderboard-eligible: "
        f"{'yes' if src.leaderboard_eligible else 'no'}"
    )
    typer.echo(f"{'split':<8}{'images':>8}{'fracture':>10}{'no fracture':>13}")
    for name in ("train", "valid", "test", "eval", "all"):
        c = info["counts"][name]
        typer.echo(f"{name:<8}{c['n']:>8}{c['n_fracture']:>10}{c['n'] - c['n_fracture']:>13}")
    for flag, n in doc["flags"].items():
        typer.echo(f"flag {flag}: {n} image(s)")
    typer.echo(f"excluded: {len(info['excluded'])}")
    for e in info["excluded"]:
        typer.echo(f"  {e['image_id']}: {e['reason']}")


@data_app.command("embed", hidden=True)  # maintainers only: still callable, not listed
def embed_cmd(
    data: Annotated[
        Path | None, typer.Option("--data", help="The prepared full dataset [default: FXBENCH_HOME].")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="[default: the package's data/embedded folder]")
    ] = None,
) -> None:
    """Maintainers: rebuild the embedded subset from a prepared full dataset."""
    from ..data.embedded import EMBEDDED_DIR, build_embedded
    from ..paths import default_data_dir

    info = build_embedded(data or default_data_dir(), out=out or EMBEDDED_DIR)
    typer.echo(
        f"wrote {out or EMBEDDED_DIR}: {info['counts']['all']['n']} images, fingerprint {info['fingerprint']}"
    )


@data_app.command("manifest", hidden=True)  # maintainers only
def manifest_cmd(
    variant: Annotated[str, typer.Option("--variant", help="downscaled-512 or figshare-original")] = ...,
    data: Annotated[
        Path | None, typer.Option("--data", help="The prepared full dataset [default: FXBENCH_HOME].")
    ] = None,
) -> None:
    """Maintainers: record a prepared dataset's split lists and fingerprint in manifest/splits-v1.json."""
    from ..data.manifest import MANIFEST_PATH, update_manifest
    from ..paths import default_data_dir

    raw = update_manifest(data or default_data_dir(), variant=variant)
    typer.echo(f"updated {MANIFEST_PATH}: variant {variant}, reference fingerprint {raw['fingerprint']}")
