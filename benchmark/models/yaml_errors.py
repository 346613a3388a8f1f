"""Where a YAML error is in a model.yaml, as a person reads the file (issue 24).

PyYAML reports the token at which it noticed a problem. For a missing ':' or a badly indented line that is
often the *next* line (the value ran on into it), so a message naming only PyYAML's line sends the reader
one line too far; these messages name the lines involved, quote them, and say what to check.
"""

from __future__ import annotations

import yaml

MAX_QUOTED = 80  # characters of a quoted line
MAX_PROBLEM = 200


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more characters)"


def _line_text(lines: list[str], i: int) -> str:
    return repr(_short(lines[i].rstrip(), MAX_QUOTED)) if 0 <= i < len(lines) else "''"


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _previous_content_line(lines: list[str], i: int) -> int | None:
    """The nearest line above ``i`` that holds YAML (not blank, not only a comment)."""
    for j in range(min(i, len(lines)) - 1, -1, -1):
        if lines[j].strip() and not lines[j].lstrip().startswith("#"):
            return j
    return None


def yaml_error_text(text: str, e: yaml.YAMLError) -> str:
    """Where a YAML error is, as a person reads the file. PyYAML reports the token at which it noticed the
    problem: for a missing ':' or a badly indented line that is often the *next* line (the value ran on into
    it), so the message names both lines and says what to check."""
    mark = getattr(e, "problem_mark", None)
    problem = _short(getattr(e, "problem", None) or str(e), MAX_PROBLEM)
    if mark is None:
        return problem
    lines = text.splitlines()
    at = mark.line
    where = f"line {at + 1}, column {mark.column + 1}"
    before = _previous_content_line(lines, at)
    column_start = at < len(lines) and mark.column <= _indent(lines[at])  # the line's first token
    if before is None:
        return f"{where}: {problem}"
    if problem.startswith("expected ',' or") and getattr(e, "context_mark", None) is not None:
        opened = e.context_mark.line
        return (f"line {opened + 1} (PyYAML stops at {where}): {problem}; the '[' or '{{' opened on line {opened + 1} "
                f"{_line_text(lines, opened)} is not closed: close it on that line, or quote the value")
    head = lines[at][:mark.column] if at < len(lines) else ""
    if problem.startswith("mapping values are not allowed") and ": " in head:
        return f"{where}: {problem}: a value that contains ': ' must be quoted ({_line_text(lines, at)})"
    if problem.startswith("mapping values are not allowed"):
        # a value that ran on from the line above: the ':' or the indentation of either line is wrong
        return (f"lines {before + 1}-{at + 1} (PyYAML stops at {where}): {problem}; line {before + 1} "
                f"{_line_text(lines, before)} and line {at + 1} {_line_text(lines, at)} were read as one value: check "
                f"the ':' after each key and that line {at + 1} lines up with the keys of its block")
    if problem.startswith("expected <block end>") or (column_start and problem.startswith("expected <block")):
        return (f"lines {before + 1}-{at + 1} (PyYAML stops at {where}): the indentation of line {at + 1} "
                f"{_line_text(lines, at)} ({_indent(lines[at])} spaces) does not match line {before + 1} "
                f"{_line_text(lines, before)} ({_indent(lines[before])} spaces) or any block above it: keys of "
                f"one block start in the same column")
    return f"{where}: {problem}"
