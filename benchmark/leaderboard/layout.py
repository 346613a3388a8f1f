"""The leaderboard's presentation rules (assets/layout.yaml): sort keys, headline columns, methods view."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

ASSETS = Path(__file__).resolve().parent / "assets"


@dataclass(frozen=True)
class Layout:
    rank_by: tuple[str, ...]
    clean: tuple[str, ...]
    robust_metric: str
    localisation: tuple[str, ...]
    reference_maps: tuple[str, ...]
    methods_view: tuple[tuple[str, tuple[str, ...]], ...]  # (kind, metric patterns), in display order
    scatter_x: str
    scatter_y: str
    scatter_default_method: str

    def kind_of(self, metric: str) -> str | None:
        """The methods-view group of a metric name (the part after xai/<method>/), or None."""
        for kind, patterns in self.methods_view:
            if any(fnmatch.fnmatchcase(metric, p) for p in patterns):
                return kind
        return None

    def rank_in_kind(self, metric: str) -> int:
        """Position of the first pattern that matches, to order columns as the layout lists them."""
        for _, patterns in self.methods_view:
            for i, p in enumerate(patterns):
                if fnmatch.fnmatchcase(metric, p):
                    return i
        return len(self.methods_view)


@cache
def load_layout(path: str | None = None) -> Layout:
    raw = yaml.safe_load(Path(path or ASSETS / "layout.yaml").read_text())
    return Layout(
        rank_by=tuple(raw["rank_by"]),
        clean=tuple(raw["clean"]),
        robust_metric=raw["robust_metric"],
        localisation=tuple(raw["localisation"]),
        reference_maps=tuple(raw["reference_maps"]),
        methods_view=tuple((k, tuple(v)) for k, v in raw["methods_view"].items()),
        scatter_x=raw["scatter"]["x"],
        scatter_y=raw["scatter"]["y"],
        scatter_default_method=raw["scatter"]["default_method"],
    )
