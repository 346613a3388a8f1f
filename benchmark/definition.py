"""The versioned benchmark definition: benchmark.yaml plus one YAML spec per battery, each with presets.

A battery spec file holds ``name``, ``version`` and one mapping per preset (``full``, ``quick``). The resolved
configuration of a run is hashed (``config_hash``) so that every result names exactly what produced it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cache
from typing import Any

import yaml

from .errors import FxbenchError
from .paths import SPECS_DIR

PRESETS = ("quick", "full")


def resolve_preset(preset: str, device) -> str:
    """``auto`` is the full preset on CUDA and the quick one elsewhere; anything else must be a preset."""
    if preset == "auto":
        return "full" if getattr(device, "type", str(device)).startswith("cuda") else "quick"
    if preset not in PRESETS:
        raise FxbenchError(f"--preset {preset!r}: choose one of auto, {', '.join(PRESETS)}.")
    return preset
CATALOGUE = "metrics.json"  # per version: preset -> metric id -> definition and direction


@dataclass(frozen=True)
class BenchmarkDefinition:
    version: str
    raw: dict[str, Any]
    batteries: dict[str, dict[str, Any]]  # battery name -> whole spec file

    @property
    def seed(self) -> int:
        return int(self.raw.get("seed", 0))

    @property
    def bootstrap(self) -> dict[str, Any]:
        return dict(self.raw["bootstrap"])

    @property
    def dataset_fingerprint(self) -> str | None:
        from .data.manifest import manifest_fingerprint

        return self.raw["dataset"].get("fingerprint") or manifest_fingerprint()

    def batch_sizes(self, preset: str) -> tuple[int, ...]:
        """Every batch size the batteries use in ``preset`` (keys ending in batch_size, at any depth): an image's
        logits must not depend on which of these batches it is evaluated in."""
        sizes: set[int] = set()

        def walk(node) -> None:
            if isinstance(node, dict):
                for k, v in node.items():
                    if str(k).endswith("batch_size") and isinstance(v, int) and not isinstance(v, bool):
                        sizes.add(v)
                    walk(v)
            elif isinstance(node, list):
                for v in node:
                    walk(v)

        for battery in self.raw["batteries"]:
            walk(self.battery_config(battery, preset))
        return tuple(sorted(sizes))

    def battery_config(self, battery: str, preset: str) -> dict[str, Any]:
        if preset not in PRESETS:
            raise FxbenchError(f"Unknown preset {preset!r}: choose one of {', '.join(PRESETS)}.")
        spec = self.batteries[battery]
        return {"name": spec["name"], "version": spec["version"], **spec[preset]}

    def resolved(self, preset: str) -> dict[str, Any]:
        """Everything that determines the numbers of a run with this preset."""
        return {
            "version": self.version,
            "preset": preset,
            "dataset": {**self.raw["dataset"], "fingerprint": self.dataset_fingerprint},
            "bootstrap": self.bootstrap,
            "batteries": {b: self.battery_config(b, preset) for b in self.raw["batteries"]},
        }

    def metric_catalogue(self, preset: str) -> dict[str, Any]:
        """metric id -> MetricDef for every metric a result of this version and preset may report, read
        from the version's committed ``metrics.json`` (so an old version stays checkable after the battery
        code moves on). ``expected_metrics`` is what today's code would define; a test keeps the newest
        version's catalogue equal to it."""
        from .results.metrics import MetricDef

        path = SPECS_DIR / self.version / CATALOGUE
        if not path.is_file():
            raise FxbenchError(f"benchmark {self.version}: no metric catalogue {path.name}; "
                               f"write it with `python -m fxbench.definition {self.version}`.")
        raw = json.loads(path.read_text())
        return {
            mid: MetricDef(id=mid, higher_is_better=d["higher_is_better"], column=d["column"],
                           reduce=d["reduce"], where=d["where"])
            for mid, d in raw[preset].items()
        }

    def expected_metrics(self, preset: str) -> dict[str, Any]:
        """metric id -> MetricDef for every metric this version's batteries, as coded today, can report."""
        from .battery import BATTERIES

        out = {}
        for b in self.raw["batteries"]:
            for m in BATTERIES.get(b)().expected_metrics(self.battery_config(b, preset)):
                out[m.id] = m
        return out

    def catalogue_json(self) -> dict[str, Any]:
        return {
            p: {mid: {**m.to_json(), "higher_is_better": m.higher_is_better}
                for mid, m in sorted(self.expected_metrics(p).items())}
            for p in PRESETS
        }

    def config_hash(self, preset: str) -> str:
        return hash_config(self.resolved(preset))


def hash_config(config: dict[str, Any]) -> str:
    """The config hash of a resolved configuration: the store re-hashes a result's stored config with this same
    function, which is what ties ``config_hash`` to ``config``."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@cache
def load_definition(version: str | None = None) -> BenchmarkDefinition:
    """The definition of ``version`` (default: the newest, ``fxbench.BENCHMARK_VERSION``)."""
    from . import BENCHMARK_VERSION

    version = version or BENCHMARK_VERSION
    folder = SPECS_DIR / version
    if not folder.is_dir():
        known = sorted(p.name for p in SPECS_DIR.iterdir() if p.is_dir())
        raise FxbenchError(f"Unknown benchmark version {version!r}; known: {', '.join(known)}.")
    raw = yaml.safe_load((folder / "benchmark.yaml").read_text())
    batteries = {}
    for name in raw["batteries"]:
        batteries[name] = yaml.safe_load((folder / f"{name}.yaml").read_text())
    return BenchmarkDefinition(version=raw["version"], raw=raw, batteries=batteries)


def write_catalogue(version: str) -> None:
    """Maintainers: record the metrics that today's code defines for ``version`` (only while it is open)."""
    d = load_definition(version)
    (SPECS_DIR / d.version / CATALOGUE).write_text(json.dumps(d.catalogue_json(), indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    import sys

    write_catalogue(sys.argv[1])
