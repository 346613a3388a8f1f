"""The versioned leaderboard: results store, tables, static site, and paired comparisons."""

from .compare import Comparison, MetricDiff, compare_results, resolve_result
from .generate import CheckReport, Leaderboard, build_leaderboard, check_leaderboard, write_leaderboard
from .store import Store, StoredResult, VersionSpec, load_store, version_spec

__all__ = [
    "CheckReport",
    "Comparison",
    "Leaderboard",
    "MetricDiff",
    "Store",
    "StoredResult",
    "VersionSpec",
    "build_leaderboard",
    "check_leaderboard",
    "compare_results",
    "load_store",
    "resolve_result",
    "version_spec",
    "write_leaderboard",
]
