"""The explanation battery's spec (one preset of benchmark/specs/<version>/explanations.yaml), parsed once.

Every problem becomes one FxbenchError naming the spec field, e.g. ``methods.occlusion.window``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import FxbenchError
from .methods import METHODS, Params
from .metrics import METRICS, Metric, MetricParams
from .references import REFERENCES, RefParams

SPEC = "explanations spec"
REGIONS = ("hand", "leg", "hip", "shoulder", "mixed")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _UnderAttack(_Strict):
    attack: str = Field(pattern=r"^[a-z0-9]+-[a-z0-9.]+$")  # e.g. linf-4, as robustness names it
    methods: list[str]
    metrics: list[str]


class _Subgroups(_Strict):
    hardware: bool
    regions: list[str]
    metrics: list[str]


class _ModelMetrics(_Strict):
    samples: int = Field(ge=1)  # the first N fractured images by image id
    metrics: dict[str, dict[str, Any]]


class Gallery(_Strict):
    images: int = Field(ge=0)  # the first N fractured images by image id
    dpi: int = Field(ge=10)
    size_inches: float = Field(gt=0)
    cmap: str
    alpha: float = Field(ge=0, le=1)


class _Raw(_Strict):
    name: str
    version: int
    chunk_size: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    methods: dict[str, dict[str, Any]]
    references: dict[str, dict[str, Any]]
    localisation: dict[str, dict[str, Any]]
    model_metrics: _ModelMetrics
    under_attack: _UnderAttack | None = None
    subgroups: _Subgroups
    gallery: Gallery


@dataclass(frozen=True)
class MetricChoice:
    metric: Metric
    params: MetricParams
    methods: tuple[str, ...]  # the maps it scores


@dataclass(frozen=True)
class XaiConfig:
    chunk_size: int
    batch_size: int
    methods: dict[str, Params]
    references: dict[str, RefParams]
    localisation: dict[str, MetricChoice]
    model_metrics: dict[str, MetricChoice]
    model_samples: int
    under_attack: _UnderAttack | None
    subgroups: _Subgroups
    gallery: Gallery

    @property
    def maps(self) -> list[str]:
        """Attribution methods then reference maps, in spec order."""
        return [*self.methods, *self.references]


def _fail(field: str, problem: str) -> FxbenchError:
    return FxbenchError(f"{SPEC}: {field}: {problem}")


def _validate(model: type[BaseModel], data: Any, field: str) -> Any:
    try:
        return model.model_validate(data if data is not None else {})
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join([field, *map(str, err["loc"])]).strip(".")
        raise _fail(loc or "(top level)", err["msg"]) from None


def _known(registry, name: str, field: str) -> Any:
    try:
        return registry.get(name)
    except FxbenchError as e:
        raise _fail(field, str(e)) from None


def parse_config(config: dict[str, Any]) -> XaiConfig:
    raw = _validate(_Raw, config, "")
    methods = {
        n: _validate(_known(METHODS, n, f"methods.{n}").params, p, f"methods.{n}")
        for n, p in raw.methods.items()
    }
    refs = {
        n: _validate(_known(REFERENCES, n, f"references.{n}").params, p, f"references.{n}")
        for n, p in raw.references.items()
    }
    maps = [*methods, *refs]

    localisation = {}
    for n, p in raw.localisation.items():
        m = _known(METRICS, n, f"localisation.{n}")
        if m.needs_model:
            raise _fail(f"localisation.{n}", "calls the model: list it under model_metrics")
        localisation[n] = MetricChoice(m, _validate(m.params, p, f"localisation.{n}"), tuple(maps))

    model_metrics = {}
    for n, p in raw.model_metrics.metrics.items():
        field = f"model_metrics.metrics.{n}"
        m = _known(METRICS, n, field)
        if not m.needs_model:
            raise _fail(field, "does not call the model: list it under localisation")
        p = dict(p or {})
        chosen = p.pop("methods", None)
        if not isinstance(chosen, list) or not chosen:
            raise _fail(f"{field}.methods", "give a non-empty list of methods")
        allowed = list(methods) if m.needs_explain else maps
        for c in chosen:
            if c not in allowed:
                why = (
                    " (it re-explains perturbed inputs, so reference maps cannot take part)"
                    if c in refs
                    else ""
                )
                raise _fail(f"{field}.methods", f"{c!r} is not one of {allowed}{why}")
        model_metrics[n] = MetricChoice(m, _validate(m.params, p, field), tuple(chosen))

    if raw.under_attack is not None:
        for c in raw.under_attack.methods:
            if c not in maps:
                raise _fail("under_attack.methods", f"{c!r} is not one of {maps}")
        for c in raw.under_attack.metrics:
            if c not in localisation:
                raise _fail(
                    "under_attack.metrics",
                    f"{c!r} is not one of the localisation metrics {list(localisation)}",
                )
    for c in raw.subgroups.metrics:
        if c not in localisation and c not in model_metrics:
            raise _fail("subgroups.metrics", f"{c!r} is not a metric of this spec")
    for r in raw.subgroups.regions:
        if r not in REGIONS:
            raise _fail("subgroups.regions", f"{r!r} is not one of {list(REGIONS)}")
    return XaiConfig(
        raw.chunk_size,
        raw.batch_size,
        methods,
        refs,
        localisation,
        model_metrics,
        raw.model_metrics.samples,
        raw.under_attack,
        raw.subgroups,
        raw.gallery,
    )
