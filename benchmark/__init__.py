"""fxbench: robustness and explanation benchmark for fracture classifiers on radiographs.

The package lives in the repository's ``benchmark/`` folder; its sub-packages follow the pipeline:
data -> models -> robustness / explanations -> results -> leaderboard, with ``cli`` on top.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

BENCHMARK_VERSION = "v2"

# The Python API, RobustBench-style (issue 13): `import fxbench` stays light (no torch); a sub-package or
# an entry point is imported on first use, so `fxbench.data.load(...)` works without `import fxbench.data`.
SUBMODULES = ("data", "models", "robustness", "explanations", "results", "leaderboard", "training",
              "definition", "errors", "paths", "battery", "run", "api")
API = {"evaluate": "api", "load_submission": "api", "RunResult": "run", "Submission": "models.submission",
       "load_definition": "definition", "FxbenchError": "errors"}

if TYPE_CHECKING:
    from . import data, leaderboard, models  # noqa: F401
    from .api import evaluate, load_submission  # noqa: F401
    from .run import RunResult  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in API:
        value = getattr(importlib.import_module(f".{API[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fxbench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *SUBMODULES, *API])
