"""The battery's preset mapping (from specs/<version>/robustness.yaml) checked and turned into typed values."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ..errors import FxbenchError
from ..registry import Registry

SPEC = "robustness spec (benchmark/specs/<version>/robustness.yaml)"
NORMS = {"linf": "Linf", "l2": "L2"}  # spec key -> pyautoattack's norm name


@dataclass(frozen=True)
class Budget:
    """One threat-model budget. ``value`` as written in the spec: 1/255 units for linf, pixels for l2."""

    norm: str  # "linf" | "l2"
    value: float

    @property
    def id(self) -> str:
        return f"linf-{self.value:g}" if self.norm == "linf" else f"l2-{float(self.value)}"

    @property
    def eps(self) -> float:
        """In canonical pixel units ([0, 1] images)."""
        return self.value / 255.0 if self.norm == "linf" else float(self.value)

    @property
    def aa_norm(self) -> str:
        return NORMS[self.norm]


@dataclass(frozen=True)
class AttackSpec:
    name: str
    options: dict[str, Any]


@dataclass(frozen=True)
class MarginChecks:
    """v3 (`checks.margin`): every consistency tolerance measured on the decision margin (fxbench.decision)."""

    resolution: float    # refuse when float32's spacing at the largest |logit| exceeds this x the typical margin
    repeat_rtol: float   # the same input evaluated twice
    batch_rtol: float    # the same input in another batch or gradient mode (other kernels)
    fd_rtol: float       # the rounding term of a finite difference, x max(|margin|, typical margin) / step


@dataclass(frozen=True)
class IndicatorChecks:
    """v3 (`checks.indicators`): Pintor et al.'s indicators of attack failure on traced runs of one attack."""

    points: int                  # headline-robust points per chunk whose attack is traced step by step
    attack: str                  # a registered APGD attack of the cascade, with its cascade options
    window: float                # incomplete optimisation: the last share of the steps ...
    min_progress: float          # ... in which the best loss still fell by more than this share of its fall
    noise_samples: int           # unstable predictions: random points of the headline ball per traced point
    max_relative_change: float   # flag when |margin change| / |margin| averages above this
    max_share: float             # flag incomplete optimisation at more than this share of the traced points


@dataclass(frozen=True)
class GamingChecks:
    """The evaluator's checks against an inflated number (v2 spec section `checks`; v1 has none). The fields
    after `model_points` are v3's: None (absent from the spec) keeps v2's behaviour exactly."""

    fd_points: int            # points per chunk whose autograd gradient is compared with finite differences
    fd_step: float            # central-difference step, canonical pixels
    fd_rtol: float            # relative disagreement that counts as a mismatch
    fd_max_share: float       # flag when more than this share of the checked points mismatch
    unbounded_points: int     # points per chunk still robust at the largest L-inf budget, attacked at eps
    unbounded_eps: float      # (L-inf, pixels; 1.0 = the whole box, every image reachable)
    unbounded_attack: str     # a registered white-box attack, with the options of its cascade entry
    transfer_surrogate: str | None  # model.yaml of the surrogate (relative to the repository), or None
    transfer_points: int      # points per chunk robust at the headline budget attacked on the surrogate
    transfer_attack: str
    model_points: int         # images AutoAttack's model checks run on (once per run)
    margin: MarginChecks | None = None
    consistency_points: int = 0        # clean images per chunk evaluated alone and compared with the chunk's pass
    vanishing_gradients: bool = False  # flag a model predicting both classes with a zero gradient where correct
    bpda_points: int = 0               # headline-robust points re-attacked through BPDA when a gradient vanished
    bpda_attack: str | None = None
    unbounded_sweep: tuple[float, ...] = ()  # L-inf budgets (pixels) attacked from the clean image before eps
    indicators: IndicatorChecks | None = None
    tie_rule: bool = False             # the attacks decide success by fxbench.decision (Square: a tie is correct)
    black_box_min_queries: int = 0     # fewer Square queries than this: flagged as a weak black-box check


@dataclass(frozen=True)
class RobustnessConfig:
    chunk_size: int
    batch_size: int
    headline: str
    keep_adversarial_label: int
    budgets: tuple[Budget, ...]  # linf ascending, then l2 ascending
    attacks: tuple[AttackSpec, ...]
    linf_atol: float
    l2_rtol: float
    logit_rtol: float
    square_flag_alpha: float
    checks: GamingChecks | None = None
    label: str = "fxbench-AA v?"  # the spec's name and version, as the result's components name the battery
    # v3 keys (absent in v1/v2 specs: the defaults are the old behaviour, so old configs compute what they did)
    shard_by: str = "chunk"  # "norm": one shard per (chunk, norm), the cascade over that norm's budgets inside
    attacks_at: tuple[tuple[str, tuple[str, ...]], ...] = ()  # budget id -> attacks run there (absent: all)
    search_dtype: tuple[tuple[str, str], ...] = ()  # device type -> dtype of the attacks' search (absent: fp32)
    search_margin_rtol: float = 0.0  # a reduced-precision search calls a point broken only below this margin
    constant_model: str = "attack"  # "analytic": a model constant on every probe is not attacked (robust = clean)
    scope: str = ""  # what this preset can and cannot catch: every result carries it as a flag (v3 quick)

    def budget(self, budget_id: str) -> Budget:
        for b in self.budgets:
            if b.id == budget_id:
                return b
        raise KeyError(budget_id)

    def by_norm(self, norm: str) -> list[Budget]:
        return [b for b in self.budgets if b.norm == norm]

    def attacks_for(self, budget: Budget) -> tuple[AttackSpec, ...]:
        """The cascade's attacks that run at ``budget``, in cascade order (all of them unless the spec's
        ``attacks_at`` names fewer)."""
        names = dict(self.attacks_at).get(budget.id)
        return self.attacks if names is None else tuple(a for a in self.attacks if a.name in names)

    def search_dtype_for(self, device_type: str) -> str:
        """The dtype the attacks search in on this kind of device ("float32" unless the spec says otherwise).
        Every verdict (is this point adversarial?) is taken in float32 whatever this is."""
        return dict(self.search_dtype).get(device_type, "float32")


def _need(cfg: dict[str, Any], key: str, where: str = "") -> Any:
    if key not in cfg:
        raise FxbenchError(f"{SPEC}: the preset is missing '{where}{key}'.")
    return cfg[key]


def _positive_int(cfg: dict[str, Any], key: str) -> int:
    v = _need(cfg, key)
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise FxbenchError(f"{SPEC}: '{key}' must be a positive integer, got {v!r}.")
    return v


def _budgets(raw: Any) -> tuple[Budget, ...]:
    if not isinstance(raw, dict) or set(raw) - set(NORMS):
        raise FxbenchError(f"{SPEC}: 'budgets' must map linf and/or l2 to lists of eps, got {raw!r}.")
    out: list[Budget] = []
    for norm in NORMS:  # linf first, then l2
        values = raw.get(norm) or []
        if not isinstance(values, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in values
        ):
            raise FxbenchError(f"{SPEC}: 'budgets.{norm}' must be a list of positive numbers, got {values!r}.")
        if any(b <= a for a, b in zip(values, values[1:])):
            raise FxbenchError(f"{SPEC}: 'budgets.{norm}' must be strictly ascending, got {values}.")
        out += [Budget(norm, float(v)) for v in values]
    if not out:
        raise FxbenchError(f"{SPEC}: 'budgets' lists no budget.")
    return tuple(out)


def _attacks(raw: Any, registry: Registry) -> tuple[AttackSpec, ...]:
    if not isinstance(raw, list) or not raw:
        raise FxbenchError(f"{SPEC}: 'attacks' must be a non-empty list.")
    out = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or "name" not in item:
            raise FxbenchError(f"{SPEC}: attacks[{i}] must be a mapping with a 'name'.")
        name = item["name"]
        entry = registry.get(name)  # unknown names: FxbenchError with close matches
        options = {k: v for k, v in item.items() if k != "name"}
        missing = sorted(set(entry.options) - set(options))
        unknown = sorted(set(options) - set(entry.options))
        if missing or unknown:
            raise FxbenchError(
                f"{SPEC}: attacks[{i}] ({name}): missing options {missing}, unknown options {unknown}; "
                f"expected exactly {list(entry.options)}."
            )
        if name in [a.name for a in out]:
            raise FxbenchError(f"{SPEC}: attacks[{i}]: {name} is listed twice.")
        out.append(AttackSpec(name, options))
    return tuple(out)


def parse_config(config: dict[str, Any], *, registry: Registry) -> RobustnessConfig:
    budgets = _budgets(_need(config, "budgets"))
    headline = _need(config, "headline")
    if headline not in [b.id for b in budgets]:
        raise FxbenchError(f"{SPEC}: 'headline' {headline!r} is not one of the budgets {[b.id for b in budgets]}.")
    verify = _need(config, "verify")
    label = _need(config, "keep_adversarial_label")
    if label not in (0, 1):
        raise FxbenchError(f"{SPEC}: 'keep_adversarial_label' must be 0 or 1, got {label!r}.")
    attacks = _attacks(_need(config, "attacks"), registry)
    return RobustnessConfig(
        checks=_checks(config.get("checks"), attacks),
        chunk_size=_positive_int(config, "chunk_size"),
        batch_size=_positive_int(config, "batch_size"),
        headline=headline,
        keep_adversarial_label=int(label),
        budgets=budgets,
        attacks=attacks,
        linf_atol=float(_need(verify, "linf_atol", "verify.")),
        l2_rtol=float(_need(verify, "l2_rtol", "verify.")),
        logit_rtol=float(_need(verify, "logit_rtol", "verify.")),
        square_flag_alpha=float(_need(config, "square_flag_alpha")),
        label=f"{config.get('name', 'fxbench-AA')} v{config.get('version', '?')}",
        **_v3_keys(config, budgets, attacks),
    )


SEARCH_DTYPES = ("float32", "bfloat16")


def _v3_keys(config: dict[str, Any], budgets: tuple[Budget, ...], attacks: tuple[AttackSpec, ...]) -> dict:
    """The keys v3 added (each optional: absent = the v1/v2 behaviour)."""
    out: dict[str, Any] = {}
    shard_by = config.get("shard_by", "chunk")
    if shard_by not in ("chunk", "norm"):
        raise FxbenchError(f"{SPEC}: 'shard_by' must be 'chunk' or 'norm', got {shard_by!r}.")
    out["shard_by"] = shard_by
    raw = config.get("attacks_at")
    if raw is not None:
        ids, names = [b.id for b in budgets], [a.name for a in attacks]
        if not isinstance(raw, dict) or set(raw) - set(ids):
            raise FxbenchError(f"{SPEC}: 'attacks_at' must map budget ids {ids} to lists of attacks, got {raw!r}.")
        pairs = []
        for bid, listed in raw.items():
            if not isinstance(listed, list) or not listed or set(listed) - set(names):
                raise FxbenchError(f"{SPEC}: 'attacks_at.{bid}' must be a non-empty list of the cascade's "
                                   f"attacks {names}, got {listed!r}.")
            pairs.append((str(bid), tuple(str(n) for n in listed)))
        out["attacks_at"] = tuple(pairs)
    raw = config.get("search_dtype")
    if raw is not None:
        if not isinstance(raw, dict) or not all(v in SEARCH_DTYPES for v in raw.values()):
            raise FxbenchError(f"{SPEC}: 'search_dtype' must map device types to one of {SEARCH_DTYPES}, got {raw!r}.")
        out["search_dtype"] = tuple((str(k), str(v)) for k, v in sorted(raw.items()))
        rtol = config.get("search_margin_rtol")
        if any(v != "float32" for v in raw.values()) and (
                isinstance(rtol, bool) or not isinstance(rtol, (int, float)) or not 0 < rtol < 1):
            raise FxbenchError(f"{SPEC}: a reduced-precision 'search_dtype' needs 'search_margin_rtol' in (0, 1), "
                               f"got {rtol!r}.")
        out["search_margin_rtol"] = float(rtol or 0.0)
    constant = config.get("constant_model", "attack")
    if constant not in ("attack", "analytic"):
        raise FxbenchError(f"{SPEC}: 'constant_model' must be 'attack' or 'analytic', got {constant!r}.")
    out["constant_model"] = constant
    scope = config.get("scope", "")
    if not isinstance(scope, str):
        raise FxbenchError(f"{SPEC}: 'scope' must be a text, got {scope!r}.")
    out["scope"] = " ".join(scope.split())
    return out


def _checks(raw: Any, attacks: tuple[AttackSpec, ...]) -> GamingChecks | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise FxbenchError(f"{SPEC}: 'checks' must be a mapping, got {raw!r}.")
    fd, unb, tr = (_need(raw, k, "checks.") for k in ("finite_differences", "unbounded", "transfer"))
    names = [a.name for a in attacks]
    sections = [("unbounded", unb), ("transfer", tr)] + [(k, raw[k]) for k in ("bpda", "indicators") if k in raw]
    for where, section in sections:
        if _need(section, "attack", f"checks.{where}.") not in names:
            raise FxbenchError(f"{SPEC}: 'checks.{where}.attack' must be one of the cascade's attacks {names}.")
    v3: dict[str, Any] = {}
    if "margin" in raw:
        m = raw["margin"]
        v3["margin"] = MarginChecks(**{k: _fraction(m, k, "checks.margin.") for k in
                                       ("resolution", "repeat_rtol", "batch_rtol", "fd_rtol")})
    if "consistency" in raw:
        v3["consistency_points"] = _count(raw["consistency"], "points", "checks.consistency.")
    if "vanishing_gradients" in raw:
        v3["vanishing_gradients"] = _flag(raw, "vanishing_gradients")
    if "bpda" in raw:
        v3["bpda_points"] = _count(raw["bpda"], "points", "checks.bpda.")
        v3["bpda_attack"] = str(raw["bpda"]["attack"])
    if "sweep" in unb:
        sweep = unb["sweep"]
        if (not isinstance(sweep, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                    and 0 < v < 255 for v in sweep)
                or any(b <= a for a, b in zip(sweep, sweep[1:]))):
            raise FxbenchError(f"{SPEC}: 'checks.unbounded.sweep' must be ascending L-inf budgets in 1/255 units "
                               f"below 255, got {sweep!r}.")
        v3["unbounded_sweep"] = tuple(float(v) / 255.0 for v in sweep)
    if "indicators" in raw:
        ind = raw["indicators"]
        w = "checks.indicators."
        v3["indicators"] = IndicatorChecks(
            points=_count(ind, "points", w), attack=str(ind["attack"]), window=_fraction(ind, "window", w),
            min_progress=_fraction(ind, "min_progress", w), noise_samples=_count(ind, "noise_samples", w),
            max_relative_change=float(_need(ind, "max_relative_change", w)), max_share=_fraction(ind, "max_share", w))
    if "tie_rule" in raw:
        v3["tie_rule"] = _flag(raw, "tie_rule")
    if "black_box" in raw:
        v3["black_box_min_queries"] = _count(raw["black_box"], "min_queries", "checks.black_box.")
    return GamingChecks(
        fd_points=int(_need(fd, "points", "checks.finite_differences.")),
        fd_step=float(_need(fd, "step", "checks.finite_differences.")),
        fd_rtol=float(_need(fd, "rtol", "checks.finite_differences.")),
        fd_max_share=float(_need(fd, "max_share", "checks.finite_differences.")),
        unbounded_points=int(_need(unb, "points", "checks.unbounded.")),
        unbounded_eps=float(_need(unb, "eps", "checks.unbounded.")),
        unbounded_attack=str(unb["attack"]),
        transfer_surrogate=tr.get("surrogate"),
        transfer_points=int(_need(tr, "points", "checks.transfer.")),
        transfer_attack=str(tr["attack"]),
        model_points=int(_need(_need(raw, "model", "checks."), "points", "checks.model.")),
        **v3,
    )


def _count(section: Any, key: str, where: str) -> int:
    v = _need(section, key, where)
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise FxbenchError(f"{SPEC}: '{where}{key}' must be a whole number >= 0, got {v!r}.")
    return v


def _fraction(section: Any, key: str, where: str) -> float:
    v = _need(section, key, where)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 1:
        raise FxbenchError(f"{SPEC}: '{where}{key}' must be a number between 0 and 1, got {v!r}.")
    return float(v)


def _flag(section: Any, key: str) -> bool:
    v = section[key]
    if not isinstance(v, bool):
        raise FxbenchError(f"{SPEC}: 'checks.{key}' must be true or false, got {v!r}.")
    return v


def checks_here(cfg: RobustnessConfig, budgets: list[Budget] | None) -> GamingChecks | None:
    """The evaluator's checks a shard running ``budgets`` runs (None: every budget, all checks): the gradient and
    transfer checks where the headline runs, the unbounded attack where the largest L-inf budget runs."""
    if cfg.checks is None or budgets is None:
        return cfg.checks
    linf = cfg.by_norm("linf")
    head = cfg.budget(cfg.headline) in budgets
    largest = bool(linf) and linf[-1] in budgets
    if not (head or largest):
        return None
    c = cfg.checks
    return replace(c, fd_points=c.fd_points if head else 0, transfer_points=c.transfer_points if head else 0,
                   unbounded_points=c.unbounded_points if largest else 0)


def strength(cfg: RobustnessConfig, budget: Budget, registry: Registry) -> str:
    """What a point of the curve is: "autoattack" (every attack of the cascade), "white-box" (gradient attacks
    only, no black-box Square) or "reduced" (some other subset)."""
    names = [a.name for a in cfg.attacks_for(budget)]
    if len(names) == len(cfg.attacks):
        return "autoattack"
    if all(registry.get(n).white_box for n in names):
        return "white-box"
    return "reduced"
