"""`fxbench validate`: every step of loading, then the model's behaviour on a fixed canonical batch.

The output checks (``check_model_outputs``) are also what the runner calls before evaluating: a model must
give N x 2 finite float32 logits, the same on a second pass, the same whatever the batch it is in (a model
that still uses batch statistics is not in eval mode), and a gradient path to the input (attacks need it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ModelMisbehaviour, SubmissionError
from .checkpoint import load_weights, parse_state_dict, read_checkpoint
from .device import forward_batch_size, resolve_device, strict_fp32
from .factory import create_model
from .margin_checks import (
    MarginRules,
    check_batches,
    check_repeat,
    check_resolution,
    margin_rules,
    radiographs,
)
from .submission import read_spec, wrap_for_spec
from .wrapper import CANONICAL_SIZE, CanonicalModel

BATCH_SIZE = 4
BATCH_SEED = 0
# Allowed differences, times max(1, largest |logit|). Two passes over the same batch must agree to float
# rounding. An image alone vs in its batch may take other kernels (float32 rounding; with TF32, which the
# checks switch off, we measured 1e-3 on an H200), while batch statistics change logits by much more.
REPEAT_TOL = 1e-5
BATCH_TOL = 1e-3


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class ValidationReport:
    ok: bool
    submission_id: str | None
    yaml_path: Path | None
    checks: tuple[Check, ...]

    @property
    def error(self) -> str | None:
        """The failing check's message (None when valid)."""
        failed = [c for c in self.checks if not c.ok]
        return failed[0].detail if failed else None


def canonical_batch(n: int = BATCH_SIZE, *, seed: int = BATCH_SEED) -> torch.Tensor:
    """N x 1 x 224 x 224 in [0, 1]: noise at different brightness and contrast (the first image dark and flat),
    so that a model using batch statistics sees a batch unlike the first image alone."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(n, 1, CANONICAL_SIZE, CANONICAL_SIZE, generator=g)
    low = torch.linspace(0.05, 0.5, n).view(n, 1, 1, 1)
    span = torch.linspace(0.2, 0.5, n).view(n, 1, 1, 1)
    return low + span * noise


def check_batch_sizes(preset: str = "auto", *, device: torch.device | str, version: str | None = None
                      ) -> tuple[int, ...]:
    """The one rule for the batch sizes at which `validate` and `run` check that an image's logits do not
    depend on its batch: every batch size of ``preset``'s battery specs, plus the batched model metrics'
    forward batch on ``device`` (perturbed copies of one image share such batches). ``auto``: the preset a run
    on ``device`` uses by default."""
    from ..definition import load_definition, resolve_preset

    device = torch.device(device)
    spec_sizes = load_definition(version).batch_sizes(resolve_preset(preset, device))
    return tuple(sorted({*spec_sizes, forward_batch_size(device)}))


def _close(a: torch.Tensor, b: torch.Tensor, tol: float) -> bool:
    return bool(((a - b).abs() <= tol * max(1.0, a.abs().max().item())).all())


def _call(model: CanonicalModel, x: torch.Tensor) -> torch.Tensor:
    try:
        return model(x)
    except Exception as e:  # noqa: BLE001 - the submitter's model failed: say how, without a traceback
        raise SubmissionError(
            f"forward pass on a canonical batch {tuple(x.shape)} failed: {type(e).__name__}: {e} "
            "(check input.size, input.channels and output.num_classes)"
        ) from None


def _output_checks(model: CanonicalModel, device: torch.device, batch_sizes: tuple[int, ...] = (),
                   rules: MarginRules | None = None) -> list[tuple[str, Callable[[], str]]]:
    """``rules`` (v3, margin_checks.py): tolerances on the margin, a resolution check, odd batch sizes and real
    radiographs besides the noise batch; None: v2's checks exactly."""
    x = canonical_batch().to(device)
    seen: dict[str, torch.Tensor] = {}
    radio = radiographs(rules.radiographs).to(device) if rules is not None else None

    def eval_mode() -> str:
        training = [name or "(root)" for name, m in model.named_modules() if m.training]
        if training:
            raise SubmissionError(f"modules still in training mode after eval(): {', '.join(training[:5])}")
        trainable = [name for name, p in model.named_parameters() if p.requires_grad]
        if trainable:
            raise SubmissionError(f"parameters not frozen: {', '.join(trainable[:5])}")
        return "all modules in eval mode, parameters frozen"

    def forward() -> str:
        with torch.no_grad():
            out = _call(model, x)
        if out.shape != (x.shape[0], 2):
            raise SubmissionError(f"output shape {tuple(out.shape)}, expected ({x.shape[0]}, 2)")
        if out.dtype != torch.float32:
            raise SubmissionError(f"output dtype {out.dtype}, expected torch.float32")
        seen["out"] = out
        if radio is not None and len(radio):
            with torch.no_grad():
                seen["radio"] = _call(model, radio)
        return f"{tuple(x.shape)} -> {tuple(out.shape)} logits"

    def finite() -> str:
        for key, what in (("out", ""), ("radio", " (radiographs)")):
            if key in seen:
                bad = (~torch.isfinite(seen[key])).sum().item()
                if bad:
                    raise ModelMisbehaviour(f"{bad} of {seen[key].numel()} output logits{what} are NaN or infinite")
        return "all logits finite"

    def resolution() -> str:
        for key, where in (("out", "on the canonical batch"), ("radio", "on real radiographs")):
            if key in seen:
                check_resolution(seen[key], rules, where=where)
        return "float32 resolves the margin z_fracture - z_other"

    def deterministic() -> str:
        with torch.no_grad():
            again = _call(model, x)
        if rules is not None:
            check_repeat(seen["out"], again, rules, where="noise")
            if "radio" in seen:
                with torch.no_grad():
                    check_repeat(seen["radio"], _call(model, radio), rules, where="radiographs")
            return "two passes identical"
        if not _close(seen["out"], again, REPEAT_TOL):
            diff = (seen["out"] - again).abs().max().item()
            raise ModelMisbehaviour(
                f"not deterministic in eval mode: two passes over the same batch differ by up to {diff:.3g} "
                "(dropout left active, or randomness in forward)"
            )
        return "two passes identical"

    def batch_independent() -> str:
        if rules is not None:
            sizes = (x.shape[0], *batch_sizes, *rules.odd_batch_sizes)
            checked = check_batches(lambda b: _call(model, b), lambda n: canonical_batch(n).to(device), 1, sizes,
                                    rules, where="noise")
            if radio is not None and len(radio):  # the odd sizes: the batteries audit their own sizes on real images
                check_batches(lambda b: _call(model, b), lambda n: radio[torch.arange(n) % len(radio)],
                              len(radio), rules.odd_batch_sizes, rules, where="radiographs")
            return (f"each image's logits independent of its batch (batch sizes 1, {', '.join(map(str, checked))}; "
                    f"noise{' and radiographs' if radio is not None and len(radio) else ''})")
        with torch.no_grad():
            alone = _call(model, x[:1])  # the first image on its own, then first in each batch size in use
        sizes = sorted({x.shape[0], *(b for b in batch_sizes if b > 1)})
        for n in sizes:
            with torch.no_grad():
                # canonical_batch(n) starts with the same first image whatever n is
                first = seen["out"][:1] if n == x.shape[0] else _call(model, canonical_batch(n).to(device))[:1]
            if not _close(first, alone, BATCH_TOL):
                diff = (first - alone).abs().max().item()
                raise ModelMisbehaviour(
                    f"not deterministic in eval mode: an image's logits depend on the rest of its batch (alone vs "
                    f"in a batch of {n}: differ by up to {diff:.3g}); batch statistics are in use (e.g. batch "
                    "norm kept in training mode)"
                )
        return f"each image's logits independent of its batch (batch sizes 1, {', '.join(map(str, sizes))})"

    def gradient() -> str:
        xg = x.clone().requires_grad_(True)
        with torch.enable_grad():
            out = _call(model, xg)
            if not out.requires_grad:
                raise SubmissionError(
                    "the output has no gradient with respect to the input (attacks need it)"
                )
            try:
                (grad,) = torch.autograd.grad(out[:, 1].sum(), xg, allow_unused=True)
            except Exception as e:  # noqa: BLE001 - the submitter's backward failed
                raise SubmissionError(f"backward pass failed: {type(e).__name__}: {e}") from None
        if grad is None:
            raise SubmissionError("the output has no gradient with respect to the input (attacks need it)")
        if not torch.isfinite(grad).all():
            raise ModelMisbehaviour(
                "the gradient of the fracture logit with respect to the input is not finite"
            )
        return "gradient reaches the input"

    return [
        ("eval mode", eval_mode),
        ("forward", forward),
        ("finite", finite),
        *([("margin resolution", resolution)] if rules is not None else []),
        ("deterministic", deterministic),
        ("batch independent", batch_independent),
        ("gradient", gradient),
    ]


def check_model_outputs(model: CanonicalModel, *, device: torch.device | str,
                        batch_sizes: tuple[int, ...] | None = None, preset: str = "auto",
                        version: str | None = None) -> None:
    """Raise SubmissionError unless ``model`` (already on ``device``) behaves as an evaluable classifier.
    ``batch_sizes``: those the batteries will use (default: ``check_batch_sizes`` of the default preset);
    ``version`` / ``preset``: whose margin rules apply (margin_checks.py; default: the current version's)."""
    device = torch.device(device)
    sizes = check_batch_sizes(device=device) if batch_sizes is None else tuple(batch_sizes)
    rules = margin_rules(preset, device=device, version=version)
    with strict_fp32():
        for name, run in _output_checks(model, device, sizes, rules):
            try:
                run()
            except SubmissionError as e:  # keeps the kind (ModelMisbehaviour: what the model did)
                raise type(e)(f"model check '{name}' failed: {e}") from None


def validate_submission(
    path: str | Path, *, trust_code: bool = False, device: str = "cpu", preset: str = "auto",
    version: str | None = None,
) -> ValidationReport:
    """Run every loading step and output check, stopping at the first failure. Writes nothing (a ``url:``
    checkpoint is downloaded to the cache). An unknown device raises DeviceError before any check."""
    target = resolve_device(device)
    checks: list[Check] = []
    state: dict = {}

    def schema() -> str:
        state["file"] = spec_file = read_spec(path)
        spec = spec_file.spec
        return (
            f"{spec_file.yaml_path}: id {spec.id}, {spec.model.architecture}, input {spec.input.channels}x"
            f"{spec.input.size}x{spec.input.size}, {spec.output.num_classes} logit(s)"
        )

    def model() -> str:
        spec, folder = state["file"].spec, state["file"].yaml_path.parent
        state["net"] = net = create_model(spec, folder=folder, trust_code=trust_code)
        return f"{spec.model.architecture}: {sum(p.numel() for p in net.parameters()):,} parameters"

    def checkpoint() -> str:
        spec, folder = state["file"].spec, state["file"].yaml_path.parent
        state["ckpt"] = ckpt = read_checkpoint(spec.checkpoint, folder=folder)
        return f"{ckpt.path.name}: sha256 matches ({ckpt.sha256[:12]}...)"

    def weights() -> str:
        tensors = parse_state_dict(state["ckpt"])
        load_weights(state["net"], tensors, source=f"checkpoint {state['ckpt'].path.name}")
        dtypes = sorted({str(t.dtype).removeprefix("torch.") for t in tensors.values()})
        return f"{len(tensors)} tensors ({', '.join(dtypes)}) loaded into float32"

    def wrap() -> str:
        state["model"] = m = wrap_for_spec(state["net"], state["file"].spec).to(target)
        layer = m.gradcam_layer
        name = next((n for n, mod in state["net"].named_modules() if mod is layer), None) if layer else None
        return f"on {target}; Grad-CAM layer: {name or 'none (Grad-CAM will be reported unsupported)'}"

    steps: list[tuple[str, Callable[[], str]]] = [
        ("schema", schema),
        ("model", model),
        ("checkpoint", checkpoint),
        ("weights", weights),
        ("wrapper", wrap),
    ]
    ok = _run(steps[:1], checks) and _run(steps[1:], checks, prefix=f"{state['file'].yaml_path}: ")
    if ok:
        with strict_fp32():
            prefix = f"{state['file'].yaml_path}: model check "
            sizes = check_batch_sizes(preset, device=target, version=version)  # the sizes `run` checks too
            rules = margin_rules(preset, device=target, version=version)
            ok = _run(_output_checks(state["model"], target, sizes, rules), checks, prefix=prefix)
    file = state.get("file")
    return ValidationReport(
        ok=ok,
        submission_id=file.spec.id if file else None,
        yaml_path=file.yaml_path if file else None,
        checks=tuple(checks),
    )


def _run(steps: list[tuple[str, Callable[[], str]]], checks: list[Check], *, prefix: str = "") -> bool:
    for name, step in steps:
        try:
            checks.append(Check(name, True, step()))
        except SubmissionError as e:
            label = f"'{name}' failed: " if prefix.endswith("model check ") else ""
            checks.append(Check(name, False, f"{prefix}{label}{e}"))
            return False
    return True
