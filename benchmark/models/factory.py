"""The single entry point that builds a submission's raw network (before weights), and its Grad-CAM layer."""

from __future__ import annotations

import contextlib
import difflib
import importlib.util
import inspect
import os
import re
import signal
import sys
import threading
from pathlib import Path

import torch
from torch import nn

from ..errors import ModelCallTimeout, ModelFailed, SubmissionError
from .checkpoint import confined_path
from .spec import ModelSpec

# Trusted entrypoints run the submitter's Python: each call into it (import and build, every forward) gets a
# wall-clock limit, so a model that never returns cannot hang `validate` or `run`. Generous by default (a
# full-preset batch on a CPU takes seconds); FXBENCH_MODEL_CALL_TIMEOUT (seconds, 0 = no limit) changes it.
MODEL_CALL_TIMEOUT_ENV = "FXBENCH_MODEL_CALL_TIMEOUT"
DEFAULT_MODEL_CALL_TIMEOUT_S = 600.0


def model_call_timeout() -> float:
    raw = os.environ.get(MODEL_CALL_TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_MODEL_CALL_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        raise SubmissionError(f"{MODEL_CALL_TIMEOUT_ENV}={raw!r}: expected a number of seconds (0 = no limit)") from None
    if value < 0 or value != value:
        raise SubmissionError(f"{MODEL_CALL_TIMEOUT_ENV}={raw!r}: expected a number of seconds >= 0")
    return value


_active = threading.local()


@contextlib.contextmanager
def time_limit(seconds: float, what: str):
    """Raise ModelCallTimeout in the main thread when the block runs past ``seconds`` (SIGALRM; a call stuck
    inside one C/CUDA kernel is interrupted when it returns to Python). Nested limits: the outer one holds."""
    usable = (seconds > 0 and hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
              and not getattr(_active, "on", False))
    if not usable:
        yield
        return

    def _expired(signum, frame):
        raise ModelCallTimeout(
            f"{what} did not return within {seconds:g} s (the model call time limit; set "
            f"{MODEL_CALL_TIMEOUT_ENV}=SECONDS to change it, 0 for none)"
        )

    previous = signal.signal(signal.SIGALRM, _expired)
    _active.on = True
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        _active.on = False


def guard_calls(net: nn.Module, what: str, seconds: float) -> nn.Module:
    """``net.forward`` with the call time limit, and ``sys.exit`` in it reported instead of ending fxbench.
    Done by swapping in a subclass (not by patching the instance), so a deep copy of the model (Quantus
    randomises copies) keeps calling its own weights."""
    base = type(net)
    net.__class__ = type(base.__name__, (base,), {
        "forward": _guarded_forward, "_fxbench_guard": (what, seconds), "__module__": base.__module__,
        "__qualname__": base.__qualname__,
    })
    return net


def _guarded_forward(self, *args, **kwargs):
    what, seconds = type(self)._fxbench_guard
    with time_limit(seconds, f"{what}: forward"):
        try:
            return super(type(self), self).forward(*args, **kwargs)
        except SystemExit as e:
            raise ModelFailed(f"{what}: forward called sys.exit({e.code!r}); a model must return logits") from None


# timm arguments that would fetch or read weights outside the verified checkpoint.
FORBIDDEN_KWARGS = ("pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path", "cache_dir")


def create_model(spec: ModelSpec, *, folder: Path, trust_code: bool = False) -> nn.Module:
    """The raw network declared in ``spec.model``, randomly initialised, float32; never downloads weights."""
    arch = spec.model
    bad = [k for k in FORBIDDEN_KWARGS if k in arch.kwargs]
    if bad:
        raise SubmissionError(
            f"model.kwargs: {', '.join(bad)} not allowed: weights come only from the verified checkpoint"
        )
    net = (
        _from_timm(arch.timm, arch.kwargs)
        if arch.timm is not None
        else _from_entrypoint(spec, folder, trust_code)
    )
    if not isinstance(net, nn.Module):
        raise SubmissionError(
            f"model: {arch.architecture} returned a {type(net).__name__}, not a torch.nn.Module"
        )
    return net.float()


def _from_timm(name: str, kwargs: dict) -> nn.Module:
    import timm

    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = (
            f"; did you mean {', '.join(repr(c) for c in close)}?" if close else " (see timm.list_models())"
        )
        raise SubmissionError(f"model.timm: unknown timm architecture {name!r}{hint}")
    try:
        return timm.create_model(name, pretrained=False, **kwargs)
    except Exception as e:  # noqa: BLE001 - timm raises several types for bad arguments
        hint = unexpected_kwarg_hint(e, _timm_accepted(name, e))
        raise SubmissionError(
            f"model.kwargs: timm.create_model({name!r}) refused the arguments: {type(e).__name__}: {e}{hint}"
        ) from None


UNEXPECTED = re.compile(r"(?:(\w+)\.)?(\w+)\(\) got an unexpected keyword argument '(\w+)'")


def unexpected_kwarg_hint(error: BaseException, accepted: list[str]) -> str:
    """'; did you mean ...?' for a keyword argument the model's constructor does not take (a typo such as
    num_clases), from the names it does take; '' when the error is something else or nothing is close."""
    m = UNEXPECTED.search(str(error)) if isinstance(error, TypeError) else None
    if m is None or not accepted:
        return ""
    close = difflib.get_close_matches(m.group(3), accepted, n=1, cutoff=0.6)
    if not close:
        return f" (it accepts: {', '.join(accepted[:12])}{', ...' if len(accepted) > 12 else ''})"
    return f"; did you mean {', '.join(repr(c) for c in close)}?"


def _parameters(fn) -> list[str]:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in params if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def _timm_accepted(name: str, error: BaseException) -> list[str]:
    """The keyword arguments timm passes on for ``name``: those of the class whose constructor refused one
    (named in the TypeError, looked up in the module that registers the architecture; no model is built)."""
    import timm

    m = UNEXPECTED.search(str(error))
    try:
        module = sys.modules[timm.models.model_entrypoint(name).__module__]
    except (KeyError, RuntimeError, AttributeError):
        return []
    cls = getattr(module, m.group(1) or "", None) if m else None
    return _parameters(cls.__init__) if isinstance(cls, type) else []


def _from_entrypoint(spec: ModelSpec, folder: Path, trust_code: bool) -> nn.Module:
    arch = spec.model
    if not trust_code:
        raise SubmissionError(
            f"model.entrypoint: {arch.entrypoint} runs Python code from the submitter; it is only run when you "
            "pass --trust-code (read the code first)"
        )
    seconds = model_call_timeout()
    file = confined_path(folder, arch.entrypoint_file, field="model.entrypoint")
    module_name = f"fxbench_submission_{spec.id.replace('-', '_')}_{file.stem}"
    import_spec = importlib.util.spec_from_file_location(module_name, file)
    module = importlib.util.module_from_spec(import_spec)
    sys.path.insert(0, str(file.parent))  # so the entrypoint can import its sibling files
    before = set(sys.modules)
    try:
        with time_limit(seconds, f"model.entrypoint: {arch.entrypoint}"):
            import_spec.loader.exec_module(module)
            build = getattr(module, arch.entrypoint_function, None)
            if not callable(build):
                raise SubmissionError(
                    f"model.entrypoint: {file.name} has no function {arch.entrypoint_function!r}"
                )
            try:
                net = build(**arch.kwargs)
            except TypeError as e:
                hint = unexpected_kwarg_hint(e, _parameters(build))
                if not hint:
                    raise
                raise SubmissionError(f"model.kwargs: {arch.entrypoint} refused the arguments: {e}{hint}") from None
        if isinstance(net, nn.Module):
            guard_calls(net, f"model.entrypoint {arch.entrypoint}", seconds)
        return net
    except SubmissionError:
        raise
    except SystemExit as e:
        raise ModelFailed(
            f"model.entrypoint: {arch.entrypoint} called sys.exit({e.code!r}) while building the model"
        ) from None
    except Exception as e:  # noqa: BLE001 - the submitter's code failed (RecursionError included)
        raise SubmissionError(
            f"model.entrypoint: {arch.entrypoint} failed: {type(e).__name__}: {_short(e)}"
        ) from None
    finally:
        sys.path.remove(str(file.parent))
        # Forget sibling modules, so another submission's helper.py is not mistaken for this one's.
        root = folder.resolve()
        for name in set(sys.modules) - before:
            origin = getattr(sys.modules[name], "__file__", None)
            if origin and Path(origin).resolve().is_relative_to(root):
                del sys.modules[name]


def _short(e: BaseException, limit: int = 500) -> str:
    text = str(e)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text) - limit} more characters)"


def find_gradcam_layer(net: nn.Module, spec: ModelSpec) -> nn.Module | None:
    """The module Grad-CAM hooks: ``explain.gradcam_layer`` if declared; else the last timm feature stage
    that outputs a spatial map (N x C x H x W, H*W > 1); else, for models without ``feature_info``, the last
    module to produce such a map in a probe forward pass. None when nothing qualifies (e.g. a ViT)."""
    declared = spec.explain.gradcam_layer
    if declared:
        try:
            return net.get_submodule(declared)
        except AttributeError:
            names = [n for n, _ in net.named_modules() if n]
            close = difflib.get_close_matches(declared, names, n=3)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise SubmissionError(
                f"explain.gradcam_layer: the model has no module {declared!r}{hint}"
            ) from None
    feature_info = getattr(net, "feature_info", None)
    if isinstance(feature_info, list) and feature_info and all(isinstance(f, dict) for f in feature_info):
        candidates = [net.get_submodule(f["module"]) for f in feature_info if f.get("module")]
    else:
        candidates = [m for name, m in net.named_modules() if name]
    spatial = _spatial_outputs(net, candidates, size=spec.input.size, channels=spec.input.channels)
    return spatial[-1] if spatial else None


def _spatial_outputs(
    net: nn.Module, candidates: list[nn.Module], *, size: int, channels: int
) -> list[nn.Module]:
    """Candidates that output a spatial map, in the order their forward finished (outermost after inner)."""
    done: list[nn.Module] = []

    def hook(module, _inputs, output):
        if isinstance(output, torch.Tensor) and output.ndim == 4 and output.shape[-1] * output.shape[-2] > 1:
            done.append(module)

    handles = [m.register_forward_hook(hook) for m in set(candidates)]
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            net(torch.zeros(1, channels, size, size))
    except SubmissionError:
        raise  # the call time limit or sys.exit: already the submission's problem
    except Exception:  # noqa: BLE001 - a model that cannot run is reported by the forward check, not here
        return []
    finally:
        for h in handles:
            h.remove()
        net.train(was_training)
    return done


class _FirstConvReached(Exception):
    """Stops a probe forward pass at the first convolution, before it runs."""


def first_conv(net: nn.Module, *, channels: int, size: int) -> tuple[str, int, int] | None:
    """(name, in_channels, channels it receives) of the first convolution a forward pass of ``channels`` x
    ``size`` x ``size`` zeros reaches, or None (no convolution, or the model fails before one). The probe stops
    at that convolution before it runs, so it works whatever the network expects."""
    names = {m: n for n, m in net.named_modules()}
    found: list[tuple[str, int, int]] = []

    def reached(module, args):
        got = args[0].shape[1] if args and isinstance(args[0], torch.Tensor) and args[0].ndim == 4 else -1
        found.append((names[module] or "(root)", int(module.in_channels), int(got)))
        raise _FirstConvReached

    convs = [m for m in names if isinstance(m, nn.Conv2d)]
    if not convs:
        return None
    handles = [m.register_forward_pre_hook(reached) for m in convs]
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            net(torch.zeros(1, channels, size, size))
    except SubmissionError:
        raise  # the call time limit or sys.exit: already the submission's problem
    except Exception:  # noqa: BLE001 - _FirstConvReached, or a model that cannot run: the forward check says why
        pass
    finally:
        for h in handles:
            h.remove()
        net.train(was_training)
    return found[0] if found else None


def input_channels(net: nn.Module, *, size: int) -> int | None:
    """The channel count (1 or 3) whose input reaches the first convolution in the shape it takes; None when
    neither does or there is no convolution to tell."""
    for channels in (1, 3):
        conv = first_conv(net, channels=channels, size=size)
        if conv is None:
            return None
        if conv[1] == conv[2]:
            return channels
    return None


def channels_mismatch(net: nn.Module, *, channels: int, size: int) -> str | None:
    """Why the declared input channels cannot be right (the first convolution receives another number of
    channels than it takes), or None."""
    conv = first_conv(net, channels=channels, size=size)
    if conv is None or conv[2] < 0 or conv[1] == conv[2]:
        return None
    name, k, _ = conv
    if k in (1, 3):
        values = ", ".join(["0.5"] * k)
        fix = (f"declare channels: {k} with {k} mean and std value(s) (e.g. mean: [{values}]), or build the network "
               f"for {channels} channel(s) (timm: kwargs in_chans: {channels})")
    else:
        fix = "fxbench feeds 1 channel, or 3 (the grayscale image repeated): build the network for 1 or 3"
    return f"input.channels is {channels}, but the network's first convolution {name!r} takes {k} channels: {fix}"
