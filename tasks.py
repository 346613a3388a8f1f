"""Developer tasks (invoke): `invoke test`, `invoke lint`, `invoke data`, `invoke leaderboard`, `invoke baselines`."""

import os

from invoke import task

# The FracAtlas release: FXBENCH_FRACATLAS, else this repository's CI copy beside the checkout.
SHARED = os.environ.get("FXBENCH_FRACATLAS", "../shared/data/fracatlas")


@task(help={"fast": "skip the slow and full-data tests"})
def test(c, fast=False):
    """Run the test suite (the README's test command)."""
    c.run("python -m pytest -q" + (" -m 'not slow and not fulldata'" if fast else ""), pty=True)


@task
def lint(c):
    """Static checks."""
    c.run("ruff check benchmark tests tasks.py")


@task(help={"source": "a FracAtlas release in its original layout", "workers": "decoding processes"})
def data(c, source=SHARED, workers=2):
    """Prepare the benchmark dataset from a FracAtlas release and print its info."""
    c.run(f"fxbench data prepare --source {source} --workers {workers}")
    c.run("fxbench data info")


@task(help={"check": "only check that the committed leaderboard is up to date"})
def leaderboard(c, check=False):
    """Regenerate leaderboard/ from leaderboard/results/."""
    c.run("fxbench leaderboard" + (" --check" if check else ""))


@task(help={"recipe": "gpu or cpu (the documented reduced recipe)"})
def baselines(c, recipe="cpu"):
    """Train the three baselines into submissions/."""
    for name in ("erm", "pgd-at", "fgsm-rs"):
        c.run(f"fxbench train benchmark/specs/training/{name}.yaml --recipe {recipe}")
