"""`fxbench --help` and argument errors: fast (no torch), plain and accurate (issue 13)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# Runs the real entry point in a fresh interpreter and reports whether torch got imported.
PROBE = """
import json, sys
sys.argv = ["fxbench", *json.loads(sys.argv[1])]
from fxbench.cli import main
code = 0
try:
    main()
except SystemExit as e:
    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
sys.stdout.flush()
sys.stderr.write("\\nPROBE " + json.dumps({"code": code, "torch": "torch" in sys.modules}) + "\\n")
"""


def probe(*args: str) -> tuple[dict, str]:
    p = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args)], capture_output=True, text=True,
                       timeout=120)
    line = [ln for ln in p.stderr.splitlines() if ln.startswith("PROBE ")][-1]
    return json.loads(line[6:]), p.stdout + p.stderr


@pytest.mark.parametrize("args", [
    ("--help",), ("--version",), ("run", "--help"), ("validate", "--help"), ("compare", "--help"), ("data", "prepare", "--help"),
    ("run",),                                # missing argument
    ("run", "x.yaml", "--limit", "many"),    # bad option value
    ("no-such-command",),
])
def test_help_and_argument_errors_do_not_import_torch(args):
    got, out = probe(*args)
    assert got["torch"] is False, out
    assert got["code"] == (0 if {"--help", "--version"} & set(args) else 2), out
    if args == ("--version",):
        from fxbench import BENCHMARK_VERSION, __version__

        assert f"fxbench {__version__} (benchmark {BENCHMARK_VERSION})" in out


def test_help_text_has_no_artefacts_and_shows_defaults(cli):
    for args in [("--help",), ("run", "--help"), ("compare", "--help"), ("data", "prepare", "--help"),
                 ("validate", "--help"), ("add", "--help"), ("data", "info", "--help")]:
        r = cli(*args)
        assert r.exit_code == 0, r
        assert "<bool>" not in r.stdout and "{" not in r.stdout, (args, r.stdout)
    def flat(*args):  # help wraps lines: compare with whitespace collapsed
        return " ".join(cli(*args).stdout.split())

    run_help = flat("run", "--help")
    assert "Usage: fxbench run [OPTIONS] PATH" in run_help
    assert "[default: auto]" in run_help and "[default: runs]" in run_help
    # Square brackets in help strings survive (rich markup used to eat them).
    assert "[default: CPUs]" in flat("data", "prepare", "--help")
    assert "([version/]id)" in flat("compare", "--help")


def test_maintainer_commands_are_hidden_but_callable(cli):
    listed = cli("data", "--help").stdout
    assert "prepare" in listed and "info" in listed
    assert "embed" not in listed and "manifest" not in listed
    for cmd in ("embed", "manifest"):
        r = cli("data", cmd, "--help")
        assert r.exit_code == 0 and "Maintainers" in r.stdout, r


def test_validate_device_defaults_to_auto_like_run(cli):
    import re

    for cmd in ("run", "validate"):
        text = " ".join(cli(cmd, "--help").stdout.split())
        assert re.search(r"--device <str> .*?\[default: auto\]", text), (cmd, text)


def test_argument_error_names_the_argument(cli):
    r = cli("compare")
    assert r.exit_code == 2 and "Missing argument 'A'" in r.stderr, r
