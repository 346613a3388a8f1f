"""fxbench: robustness and explanation benchmark for fracture classifiers on radiographs.

The package lives in the repository's ``benchmark/`` folder; its sub-packages follow the pipeline:
data -> models -> robustness / explanations -> results -> leaderboard, with ``cli`` on top.
"""

__version__ = "0.1.0"

BENCHMARK_VERSION = "v2"
