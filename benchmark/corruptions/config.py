"""The corruption battery's spec (one preset of benchmark/specs/<version>/corruptions.yaml), parsed once.

Every problem becomes one FxbenchError naming the spec field, e.g. ``corruptions.pixelate.params``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import FxbenchError
from ..results.metric_ids import shift_id
from .ops import OPS

SPEC = "corruptions spec"
SEVERITIES = (1, 2, 3, 4, 5)  # MedMNIST-C's five; 0 (the image as it is) is accepted for known-answer checks


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Corruption(_Strict):
    op: str  # an operation of fxbench.corruptions.ops (MedMNIST-C's image operations)
    params: tuple[float, ...] = Field(min_length=len(SEVERITIES), max_length=len(SEVERITIES))  # severity 1..5

    def param(self, severity: int) -> float | None:
        """The parameter at ``severity`` (None at 0: no corruption)."""
        return None if severity == 0 else self.params[severity - 1]


Severity = Annotated[int, Field(ge=0, le=len(SEVERITIES))]


class Stability(_Strict):
    """Explanation stability: an explanation endpoint on corrupted fractured images, paired with the clean."""

    method: str  # an attribution method of the explanation battery
    params: dict[str, Any]  # its hyperparameters (the explanation battery's pydantic model checks them)
    endpoint: str  # fxbench.corruptions.stability.ENDPOINTS
    samples: Annotated[int, Field(ge=1)] | Literal["all"]  # the first N fractured images by id, or all
    corruptions: tuple[str, ...]
    severities: tuple[Severity, ...]
    batch_size: Annotated[int, Field(ge=1)]


class CorruptionConfig(_Strict):
    name: str
    version: int
    batch_size: Annotated[int, Field(ge=1)]
    chunk_size: Annotated[int, Field(ge=1)]
    source: str  # where the definitions come from (recorded in the result's info)
    corruptions: dict[str, Corruption]  # every definition: the same in every preset, so an id means one thing
    run: tuple[str, ...]  # the corruptions this preset evaluates
    severities: tuple[Severity, ...]
    stability: Stability | None = None

    @model_validator(mode="after")
    def _consistent(self) -> CorruptionConfig:
        for name, c in self.corruptions.items():
            shift_id(name, 1)  # a name the metric ids can carry
            if c.op not in OPS:
                OPS.get(c.op)  # raises with the known operations
        for field, names in (("run", self.run), *((("stability.corruptions", self.stability.corruptions),)
                                                  if self.stability else ())):
            unknown = [n for n in names if n not in self.corruptions]
            if unknown:
                raise ValueError(f"{field}: {unknown[0]!r} is not defined under corruptions")
            if len(set(names)) != len(names):
                raise ValueError(f"{field}: a corruption is listed twice")
        if not self.run or not self.severities or len(set(self.severities)) != len(self.severities):
            raise ValueError("run and severities: at least one each, none twice")
        if self.stability is not None:
            if not set(self.stability.corruptions) <= set(self.run):
                raise ValueError("stability.corruptions: only corruptions this preset runs")
            if not set(self.stability.severities) <= set(self.severities) or not self.stability.severities:
                raise ValueError("stability.severities: at least one, and only severities this preset runs")
        return self

    @property
    def conditions(self) -> list[tuple[str, int]]:
        """(corruption, severity) in spec order: every corruption at every severity."""
        return [(c, s) for c in self.run for s in self.severities]

    @property
    def stability_conditions(self) -> list[tuple[str, int]]:
        st = self.stability
        return [] if st is None else [(c, s) for c in st.corruptions for s in st.severities]


def parse_config(config: dict[str, Any] | CorruptionConfig) -> CorruptionConfig:
    """The typed configuration of the spec's mapping; a ``CorruptionConfig`` is returned as it is."""
    if isinstance(config, CorruptionConfig):
        return config
    try:
        return CorruptionConfig.model_validate(config)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(map(str, err["loc"])) or "(top level)"
        raise FxbenchError(f"{SPEC}: {loc}: {err['msg']}") from None
    except (ValueError, FxbenchError) as e:
        raise FxbenchError(f"{SPEC}: {e}") from None
