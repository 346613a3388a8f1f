"""Number formatting shared by the Markdown and HTML renderings."""

from __future__ import annotations

from typing import Any

NA = "n/a"


def num(x: float | None, digits: int = 3) -> str:
    return NA if x is None else f"{x:.{digits}f}"


def with_ci(value: float | None, lo: float | None, hi: float | None, digits: int = 3) -> str:
    """``0.812 [0.771, 0.850]``; the CI is left out where it is undefined."""
    if value is None:
        return NA
    if lo is None or hi is None:
        return num(value, digits)
    return f"{value:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def metric(m: dict[str, Any] | None, digits: int = 3, *, min_n: int | None = None) -> str:
    """``min_n`` (versions from v2): below this many images no CI is printed, the value says n is too small."""
    if not m:
        return ""
    n = m.get("n")
    if min_n is not None and m["value"] is not None and n is not None and n < min_n:
        return f"{m['value']:.{digits}f} (n={n}: too small for a CI)"
    return with_ci(m["value"], m["ci_low"], m["ci_high"], digits)


def sort_value(m: dict[str, Any] | None) -> str:
    """The value a table sorts on, as text for a data attribute ('' = missing, sorted last)."""
    return "" if not m or m["value"] is None else repr(float(m["value"]))
