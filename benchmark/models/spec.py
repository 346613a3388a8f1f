"""model.yaml v1, parsed once at the boundary into frozen, typed objects.

Unknown keys are refused (a typo would otherwise be silently ignored) with a close-match suggestion; free-form
additions go under ``extra:``. Every problem becomes one SubmissionError naming the file and the field path.
"""

from __future__ import annotations

import difflib
import math
import re
from enum import StrEnum
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import SubmissionError
from .yaml_errors import yaml_error_text

SLUG = r"^[a-z0-9][a-z0-9-]*$"
SHA256 = r"^[0-9a-f]{64}$"
ENTRYPOINT = re.compile(r"^(?P<file>[^:]+\.py):(?P<function>[A-Za-z_][A-Za-z0-9_]*)$")


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Norm(StrEnum):
    linf = "linf"
    l2 = "l2"


class ModelArch(_Frozen):
    timm: str | None = None
    entrypoint: str | None = None
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("entrypoint")
    @classmethod
    def _entrypoint_form(cls, v: str | None) -> str | None:
        if v is not None and not ENTRYPOINT.match(v):
            raise ValueError(f"must look like 'file.py:function', got {v!r}")
        return v

    @model_validator(mode="after")
    def _exactly_one(self) -> ModelArch:
        if (self.timm is None) == (self.entrypoint is None):
            raise ValueError(
                "give exactly one of 'timm' (an architecture name) or 'entrypoint' (file.py:function)"
            )
        return self

    @property
    def entrypoint_file(self) -> str:
        return ENTRYPOINT.match(self.entrypoint or "").group("file")

    @property
    def entrypoint_function(self) -> str:
        return ENTRYPOINT.match(self.entrypoint or "").group("function")

    @property
    def architecture(self) -> str:
        return self.timm if self.timm is not None else f"entrypoint:{self.entrypoint}"


class Checkpoint(_Frozen):
    path: str | None = None
    url: str | None = None
    sha256: str

    @field_validator("sha256", mode="before")
    @classmethod
    def _hex(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = v.strip().lower()
            if not re.match(SHA256, v):
                raise ValueError(
                    "must be 64 hex digits (the sha256 of the weights file, e.g. from `sha256sum`)"
                )
        return v

    @field_validator("url")
    @classmethod
    def _http(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError(f"must be an http:// or https:// address, got {v!r}")
        return v

    @field_validator("path")
    @classmethod
    def _relative(cls, v: str | None) -> str | None:
        if v is not None and (not v.strip() or Path(v).is_absolute() or v.startswith("~")):
            raise ValueError(f"must be a path relative to the submission folder, got {v!r}")
        return v

    @model_validator(mode="after")
    def _exactly_one(self) -> Checkpoint:
        if (self.path is None) == (self.url is None):
            raise ValueError("give exactly one of 'path' (a file in this folder) or 'url'")
        return self


class InputSpec(_Frozen):
    size: int = Field(ge=8, le=4096)
    channels: Literal[1, 3]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @field_validator("mean", "std", mode="before")
    @classmethod
    def _list(cls, v: Any) -> Any:
        # YAML gives lists; strict mode would refuse a list for a tuple field.
        return tuple(v) if isinstance(v, list) else v

    @field_validator("mean", "std")
    @classmethod
    def _finite(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if not all(math.isfinite(x) for x in v):
            raise ValueError("values must be finite numbers")
        return v

    @model_validator(mode="after")
    def _per_channel(self) -> InputSpec:
        for name in ("mean", "std"):
            if len(getattr(self, name)) != self.channels:
                raise ValueError(
                    f"{name} needs one value per channel ({self.channels}), got {len(getattr(self, name))}"
                )
        if any(s <= 0 for s in self.std):
            raise ValueError("std values must be > 0")
        return self


class OutputSpec(_Frozen):
    num_classes: Literal[1, 2]
    # Default: 1 for two logits; a single logit is the fracture logit, its only index is 0.
    fracture_index: Literal[0, 1] | None = None

    @model_validator(mode="before")
    @classmethod
    def _default_index(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("fracture_index") is None:
            data = {**data, "fracture_index": 0 if data.get("num_classes") == 1 else 1}
        return data

    @model_validator(mode="after")
    def _single_logit(self) -> OutputSpec:
        if self.num_classes == 1 and self.fracture_index != 0:
            raise ValueError(
                "with num_classes 1 the single logit is the fracture logit: fracture_index must be 0 or left out"
            )
        return self


class Eps(_Frozen):
    """A perturbation budget as written (``"4/255"``) and as a number."""

    text: str
    value: float


def parse_eps(v: Any) -> Eps:
    if isinstance(v, bool):
        raise ValueError("must be a number or a fraction like '4/255'")  # noqa: TRY004 - pydantic wants ValueError
    if isinstance(v, (int, float)):
        value, text = float(v), repr(v) if isinstance(v, float) else str(v)
    elif isinstance(v, str):
        try:
            value, text = float(Fraction(v.replace(" ", ""))), v.strip()
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"must be a number or a fraction like '4/255', got {v!r}") from None
    else:
        raise ValueError("must be a number or a fraction like '4/255'")  # noqa: TRY004 - pydantic wants ValueError
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"must be a finite number >= 0, got {v!r}")
    return Eps(text=text, value=value)


class Training(_Frozen):
    adversarial: bool
    method: str | None = None
    eps: Eps | None = None
    norm: Norm | None = None
    # Training data beyond FracAtlas's train split (RobustBench's "extra data"): false, true, or a short text
    # such as "ImageNet-pretrained" or "MURA". Declared, not checked; shown on the leaderboard ("-" if absent).
    extra_data: bool | Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$")] | None = None

    @field_validator("eps", mode="before")
    @classmethod
    def _eps(cls, v: Any) -> Any:
        return None if v is None or isinstance(v, Eps) else parse_eps(v)

    @field_validator("norm", mode="before")
    @classmethod
    def _norm(cls, v: Any) -> Any:
        if isinstance(v, str):
            key = v.strip().lower().replace("_", "")
            key = {"inf": "linf", "linfinity": "linf"}.get(key, key)
            if key not in {n.value for n in Norm}:
                raise ValueError(f"must be one of {', '.join(n.value for n in Norm)}, got {v!r}")
            return Norm(key)
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Training:
        if not self.adversarial and (self.eps is not None or self.norm is not None):
            raise ValueError("eps/norm describe adversarial training: set adversarial: true or remove them")
        return self

    def to_json(self) -> dict[str, Any]:
        return {
            "adversarial": self.adversarial,
            "method": self.method,
            "eps": self.eps.text if self.eps else None,
            "eps_value": self.eps.value if self.eps else None,
            "norm": self.norm.value if self.norm else None,
        } | ({} if self.extra_data is None else {"extra_data": self.extra_data})  # results before it: unchanged


class Explain(_Frozen):
    gradcam_layer: str | None = None


class ModelSpec(_Frozen):
    id: str = Field(max_length=64)
    name: str = Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")  # as the result schema
    authors: tuple[str, ...] = Field(min_length=1)
    url: str | None = None
    license: str = Field(min_length=1)
    description: str | None = None
    model: ModelArch
    checkpoint: Checkpoint
    input: InputSpec
    output: OutputSpec
    training: Training
    explain: Explain = Field(default_factory=Explain)
    extra: dict[str, Any] = Field(default_factory=dict)

    @field_validator("id", mode="before")
    @classmethod
    def _slug(cls, v: Any) -> Any:
        if isinstance(v, str) and not re.match(SLUG, v):
            raise ValueError(
                f"must be a slug of lowercase letters, digits and '-', starting with a letter or digit "
                f"(e.g. fxb-resnet18-erm), got {v!r}"
            )
        return v

    @field_validator("url")
    @classmethod
    def _page(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"https?://[^\s<>\"'`]+", v):
            raise ValueError(f"must be an http:// or https:// address without spaces or quotes, got {v[:200]!r}")
        return v

    @field_validator("authors", mode="before")
    @classmethod
    def _authors(cls, v: Any) -> Any:
        if isinstance(v, list):
            v = tuple(v)
        if v == ():
            raise ValueError("list at least one author")
        if isinstance(v, tuple) and any(isinstance(a, str) and not a.strip() for a in v):
            raise ValueError("author names must not be empty")
        return v

    @classmethod
    def from_yaml(cls, path: str | Path) -> ModelSpec:
        path = Path(path)
        data = read_yaml_bytes(path)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise SubmissionError(f"{path}: cannot be read as UTF-8 text ({e})") from None
        return cls.from_text(text, source=str(path))

    @classmethod
    def from_text(cls, text: str, *, source: str = "model.yaml") -> ModelSpec:
        data = _load_yaml(text, source=source)
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise SubmissionError(f"{source}: {explain_validation_error(e)}") from None


MAX_YAML_BYTES = 64 * 1024  # a model.yaml is ~1 kB; a huge one is refused before it is parsed
MAX_YAML_DEPTH = 20  # model.yaml nests 3 levels; deeper is an attack on the parser, not a submission
MAX_SHOWN = 200  # characters of submitted values quoted back in a message


def read_yaml_bytes(path: Path) -> bytes:
    """The bytes of a model.yaml: a regular file (not a FIFO or a device), inside the folder that holds it
    (a symlink may not lead elsewhere), at most MAX_YAML_BYTES; checked before anything is read."""
    from ..io import ReadRefused, read_bounded

    if path.is_symlink() and not path.resolve().is_relative_to(path.parent.resolve()):
        raise SubmissionError(f"{path}: a symbolic link that leads outside its folder; model.yaml must be a "
                              "file inside the submission folder")
    try:
        return read_bounded(path, MAX_YAML_BYTES, what="model.yaml", follow_links=True)
    except ReadRefused as e:
        raise SubmissionError(str(e)) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (YAML would silently keep the last one), aliases (a few
    hundred bytes of nested aliases expand to gigabytes: "billion laughs") and deep nesting."""

    _depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in model.yaml; write "
                                              "the value out", event.start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nested more than {MAX_YAML_DEPTH} levels deep",
                                                  self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _mapping_without_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def _load_yaml(text: str, *, source: str) -> Any:
    if len(text) > MAX_YAML_BYTES:
        raise SubmissionError(f"{source}: {len(text)} characters, over the {MAX_YAML_BYTES} limit for a model.yaml")
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except yaml.YAMLError as e:
        raise SubmissionError(f"{source}: not valid YAML: {yaml_error_text(text, e)}") from None
    except RecursionError:
        raise SubmissionError(f"{source}: not valid YAML: nested too deeply") from None
    if not isinstance(data, dict):
        raise SubmissionError(
            f"{source}: must be a YAML mapping of fields (id, name, model, checkpoint, ...)"
        )
    return data


def _field_names(loc: tuple) -> list[str]:
    """The allowed keys at the mapping that holds ``loc[-1]`` (for did-you-mean suggestions)."""
    model: Any = ModelSpec
    for part in loc[:-1]:
        field = getattr(model, "model_fields", {}).get(part) if isinstance(part, str) else None
        if field is None:
            return []
        ann = field.annotation
        nested = [
            a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)
        ]
        if not nested:
            return []
        model = nested[0]
    return list(getattr(model, "model_fields", {}))


def explain_validation_error(error: ValidationError) -> str:
    parts = []
    for err in error.errors():
        # Drop pydantic's internal steps (e.g. "function-after[...]") from the path.
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
        where = ".".join(str(p) for p in loc) or "(top level)"
        kind, msg = err["type"], err["msg"].removeprefix("Value error, ")
        if kind == "extra_forbidden":
            close = difflib.get_close_matches(str(loc[-1]), _field_names(loc), n=1, cutoff=0.6)
            msg = "unknown key" + (f"; did you mean '{close[0]}'?" if close else "")
            if len(loc) == 1:
                msg += " (put free-form additions under 'extra:')"
        elif kind == "missing":
            msg = "required field is missing"
        elif kind not in ("value_error", "assertion_error"):
            msg = f"{shorten(msg)} (got {shorten(repr(err.get('input')))})"
        parts.append(f"{shorten(where)}: {msg}")
    return shorten("; ".join(parts), 4 * MAX_SHOWN)


def shorten(text: str, limit: int = MAX_SHOWN) -> str:
    """Submitted text quoted in an error, cut to ``limit`` characters (a message stays one paragraph)."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more characters)"
