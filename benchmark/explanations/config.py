"""The explanation battery's spec (one preset of benchmark/specs/<version>/explanations.yaml), parsed once.

Every problem becomes one FxbenchError naming the spec field, e.g. ``methods.occlusion.window``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import FxbenchError
from ..results.metric_ids import threat_parts
from . import endpoints  # noqa: F401  (registers the v3 metrics shuffled_auc and enrichment)
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
    # v1: an image without a stored adversarial example was scored on its clean image. v2 (false): only the
    # attack's stored points are scored; an image without one gets NaN with the reason.
    clean_fallback: bool = True
    # v2 (cascade): the robustness battery's stored points (early-stopped where broken). v3 (fixed_step): the
    # battery attacks every correctly classified fractured image itself, APGD-CE with exactly `steps` steps at
    # the attack's eps, no early stopping, the highest-loss point (explanations/perturbed.py).
    points: Literal["cascade", "fixed_step"] = "cascade"
    steps: int | None = Field(default=None, ge=1)
    # v3: "sign": a random +-eps sign-noise control on the same images (seeded per image), scored beside the
    # attack; the attack's effect is then attacked - noise, the noise's noise - clean.
    noise_control: Literal["none", "sign"] = "none"


class _Subgroups(_Strict):
    hardware: bool
    regions: list[str]
    metrics: list[str]
    # v2: mask-size terciles (cut points in canonical pixels, from the eval split) and detected (true
    # positive) vs missed (false negative) fractures
    mask_terciles_px: list[int] | None = None
    detection: bool = False


class _ModelMetrics(_Strict):
    samples: (
        Annotated[int, Field(ge=1)] | Literal["all"]
    )  # the first N fractured images by image id, or all of them
    metrics: dict[str, dict[str, Any]]


class _VsReference(_Strict):
    references: list[str]  # the trivial references; the best of them (by mean) is the comparison
    metrics: list[str]


class _Smoothing(_Strict):
    # v3: every map is blurred with a Gaussian of this std (canonical pixels) before the localisation metrics,
    # so that maps of different native scales are compared at one scale; `skip`: maps left as they are
    sigma_px: float = Field(ge=0)
    skip: list[str] = []


class _Completeness(_Strict):
    method: str
    bound: float = Field(gt=0)  # flag the result when the median relative completeness error exceeds it


class Gallery(_Strict):
    images: int = Field(ge=0)  # v1: the first N fractured images by image id; v2: see `choice`
    dpi: int = Field(ge=10)
    size_inches: float = Field(gt=0)
    cmap: str
    alpha: float = Field(ge=0, le=1)
    # v2: images at evenly spaced mask-size quantiles (gallery.choose_images), panels of size_px pixels with
    # a colour bar, clean and attacked side by side; `exclude`: ids never shown, with the reason in the spec
    choice: Literal["first_ids", "mask_size_quantiles"] = "first_ids"
    size_px: int | None = Field(default=None, ge=448)
    exclude: list[str] = []


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
    ties: Literal["raster", "share"] = "raster"
    constant_maps: Literal["nan", "score"] = "nan"
    per_image_seeds: bool = False
    vs_reference: _VsReference | None = None
    completeness: _Completeness | None = None
    smoothing: _Smoothing | None = None
    primary_endpoint: str | None = None  # v3: the localisation metric fixed as the primary endpoint


@dataclass(frozen=True)
class MetricChoice:
    metric: Metric
    params: MetricParams
    methods: tuple[str, ...]  # the maps it scores
    signed: bool = False  # scored on the signed map (before the method's rule), not the reduced one


@dataclass(frozen=True)
class XaiConfig:
    chunk_size: int
    batch_size: int
    methods: dict[str, Params]
    references: dict[str, RefParams]
    localisation: dict[str, MetricChoice]
    model_metrics: dict[str, MetricChoice]
    model_samples: int | None  # None: every fractured image
    under_attack: _UnderAttack | None
    subgroups: _Subgroups
    gallery: Gallery
    ties: str = "raster"
    constant_maps: str = "nan"
    per_image_seeds: bool = False
    vs_reference: _VsReference | None = None
    completeness: _Completeness | None = None
    smoothing: _Smoothing | None = None
    primary_endpoint: str | None = None

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


def parse_config(config: dict[str, Any] | XaiConfig) -> XaiConfig:
    """The typed configuration of the spec's mapping; an ``XaiConfig`` is returned as it is (parse once)."""
    if isinstance(config, XaiConfig):
        return config
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
        which = p.pop("map", "reduced")
        if which not in ("reduced", "signed"):
            raise _fail(f"{field}.map", f"{which!r} is not one of ['reduced', 'signed']")
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
        model_metrics[n] = MetricChoice(
            m, _validate(m.params, p, field), tuple(chosen), signed=which == "signed"
        )

    if raw.under_attack is not None:
        ua = raw.under_attack
        if ua.points == "fixed_step" and (ua.steps is None or ua.clean_fallback):
            raise _fail("under_attack.steps", "fixed_step points need a number of steps and clean_fallback: false")
        if (ua.points == "fixed_step" or ua.noise_control != "none") and threat_parts(ua.attack)[0] != "linf":
            raise _fail("under_attack.attack", f"{ua.attack!r}: fixed-step points and sign noise are L-inf only")
        if ua.noise_control != "none" and ua.points != "fixed_step":
            raise _fail("under_attack.noise_control", "the noise control goes with fixed_step points")
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
    if raw.vs_reference is not None:
        for c in raw.vs_reference.references:
            if c not in refs:
                raise _fail("vs_reference.references", f"{c!r} is not one of {list(refs)}")
        for c in raw.vs_reference.metrics:
            if c not in localisation:
                raise _fail("vs_reference.metrics", f"{c!r} is not a localisation metric of this spec")
    if raw.completeness is not None and raw.completeness.method not in methods:
        raise _fail("completeness.method", f"{raw.completeness.method!r} is not one of {list(methods)}")
    if raw.smoothing is not None:
        for c in raw.smoothing.skip:
            if c not in maps:
                raise _fail("smoothing.skip", f"{c!r} is not one of {maps}")
    if raw.primary_endpoint is not None and raw.primary_endpoint not in localisation:
        raise _fail("primary_endpoint", f"{raw.primary_endpoint!r} is not a localisation metric of this spec")
    cuts = raw.subgroups.mask_terciles_px
    if cuts is not None and (len(cuts) != 2 or not 0 < cuts[0] < cuts[1]):
        raise _fail("subgroups.mask_terciles_px", "give two increasing cut points in pixels")
    return XaiConfig(
        raw.chunk_size,
        raw.batch_size,
        methods,
        refs,
        localisation,
        model_metrics,
        None if raw.model_metrics.samples == "all" else raw.model_metrics.samples,
        raw.under_attack,
        raw.subgroups,
        raw.gallery,
        raw.ties,
        raw.constant_maps,
        raw.per_image_seeds,
        raw.vs_reference,
        raw.completeness,
        raw.smoothing,
        raw.primary_endpoint,
    )
