"""The metric catalogue: what a result of a version may report comes from the version's committed spec."""

import json

from fxbench import BENCHMARK_VERSION
from fxbench.definition import CATALOGUE, PRESETS, load_definition
from fxbench.paths import SPECS_DIR


def test_newest_catalogue_matches_the_code():
    d = load_definition(BENCHMARK_VERSION)
    committed = json.loads((SPECS_DIR / d.version / CATALOGUE).read_text())
    assert committed == json.loads(json.dumps(d.catalogue_json())), (
        f"specs/{d.version}/{CATALOGUE} is stale: python -m fxbench.definition {d.version}"
    )


def test_every_version_has_a_catalogue_per_preset():
    for folder in sorted(p for p in SPECS_DIR.iterdir() if (p / "benchmark.yaml").is_file()):
        d = load_definition(folder.name)
        for preset in PRESETS:
            cat = d.metric_catalogue(preset)
            assert "clean/balanced_accuracy" in cat
            assert cat["clean/balanced_accuracy"].reduce == "balanced_accuracy"
