"""Attribution methods (Captum), each giving one non-negative channel in the canonical 224 x 224 frame.

Every method is registered with a pydantic model of its hyperparameters (values come from the spec). The
target is the fracture logit (index 1 of the canonical model) unless a caller (e.g. Quantus's RandomLogit)
asks for another one. ``rule`` reduces a signed map to a non-negative one: ``abs`` (magnitude of evidence,
either sign) or ``positive`` (evidence for the target only). ``attribute(..., signed=True)`` returns the map
before that reduction (v2 scores faithfulness on it): the signed sum over input channels, Grad-CAM and
Occlusion as they come.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import captum.attr as ca
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict

from ..errors import EvaluationBug
from ..registry import Registry

Target = int | torch.Tensor


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    rule: Literal["abs", "positive"]


class IGParams(Params):
    n_steps: int
    internal_batch_size: int
    method: Literal["gausslegendre", "riemann_trapezoid", "riemann_middle"] = "gausslegendre"


class GradCamParams(Params):
    relu_attributions: bool = True
    interpolation: Literal["bilinear"] = "bilinear"


class OcclusionParams(Params):
    window: int
    stride: int
    perturbations_per_eval: int


class SmoothGradParams(Params):
    nt_samples: int
    stdevs: float
    nt_samples_batch_size: int


@dataclass(frozen=True)
class Method:
    fn: Callable[..., torch.Tensor]  # (model, x, target, params, signed) -> N x C x H x W
    params: type[Params]
    random: bool = False  # draws random numbers (torch's generator): its map depends on the draws' order


METHODS: Registry[Method] = Registry("attribution method")


class UnsupportedMethod(Exception):
    """The method cannot explain this model; ``reason`` is shown to the user."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def method(name: str, params: type[Params] = Params, *, random: bool = False):
    def add(fn):
        METHODS.register(name, Method(fn, params, random))
        return fn

    return add


@method("saliency")
def _saliency(model, x, target, p, signed=False):
    return ca.Saliency(model).attribute(x, target=target, abs=not signed)


@method("input_x_gradient")
def _input_x_gradient(model, x, target, p, signed=False):
    return ca.InputXGradient(model).attribute(x, target=target)


@method("integrated_gradients", IGParams)
def _integrated_gradients(model, x, target, p, signed=False):
    return ca.IntegratedGradients(model).attribute(
        x,
        baselines=0.0,
        target=target,
        n_steps=p.n_steps,
        method=p.method,
        internal_batch_size=p.internal_batch_size,
    )


@method("guided_backprop")
def _guided_backprop(model, x, target, p, signed=False):
    return ca.GuidedBackprop(model).attribute(x, target=target)


@method("deeplift")
def _deeplift(model, x, target, p, signed=False):
    return ca.DeepLift(model).attribute(x, baselines=0.0, target=target)


@method("gradcam", GradCamParams)
def _gradcam(model, x, target, p, signed=False):
    layer = getattr(model, "gradcam_layer", None)
    if layer is None:
        raise UnsupportedMethod("no convolutional layer declared or found")
    a = ca.LayerGradCam(model, layer).attribute(x, target=target, relu_attributions=p.relu_attributions)
    if a.ndim != 4:
        raise UnsupportedMethod(f"the Grad-CAM layer's output has shape {tuple(a.shape)}, not N x C x H x W")
    # The layer lives in the network's own resolution; the masks live in the canonical one.
    return F.interpolate(a, size=x.shape[-2:], mode=p.interpolation, align_corners=False)


@method("occlusion", OcclusionParams)
def _occlusion(model, x, target, p, signed=False):
    return ca.Occlusion(model).attribute(
        x,
        target=target,
        baselines=0.0,
        sliding_window_shapes=(1, p.window, p.window),
        strides=(1, p.stride, p.stride),
        perturbations_per_eval=p.perturbations_per_eval,
    )


@method("smoothgrad", SmoothGradParams, random=True)
def _smoothgrad(model, x, target, p, signed=False):
    return ca.NoiseTunnel(ca.Saliency(model)).attribute(
        x,
        nt_type="smoothgrad",
        nt_samples=p.nt_samples,
        stdevs=p.stdevs,
        nt_samples_batch_size=p.nt_samples_batch_size,
        target=target,
        abs=not signed,  # v1's map: the mean of |gradient| over the noisy copies, not |mean gradient|
    )


def one_channel(a: torch.Tensor, rule: str | None) -> torch.Tensor:
    """N x C x H x W signed attributions -> N x 1 x H x W, non-negative (``rule`` None: kept signed)."""
    a = a.sum(dim=1, keepdim=True)  # canonical input has one channel; Grad-CAM already sums channels
    if rule is None:
        return a
    return a.abs() if rule == "abs" else a.clamp_min(0)


# Images per attribution call on the CPU. Memory, not a definition: an image's map does not depend on its
# batch-mates (tests/test_explanations_v2.py), but a 48-image DeepLift backward of a ResNet-10t held ~5.5 GB
# of activations on the CPU (peak 7.0 GB against 3.8 GB at 16 images, measured).
CPU_MICROBATCH = 8
# On an accelerator: model inputs per forward(+backward) pass to start from (IG's steps, Occlusion's patches
# and the images of a call together); halved on out-of-memory and kept halved for the process. Memory, not a
# definition: the maps equal the CPU micro-batches' to float precision (tests/test_explanations_fast.py).
DEVICE_INPUTS_PER_PASS = 1024
_device_budget = {"inputs": DEVICE_INPUTS_PER_PASS}


def _device_kind(x: torch.Tensor) -> str:
    return "cpu" if x.device.type == "cpu" else "device"


def batch_plan(
    name: str, params: Params, n: int, batch_size: int, *, kind: str, budget: int, hw: tuple[int, int] = (224, 224)
) -> tuple[int, Params]:
    """(images per call, the method's params for that call): the spec's batches on the CPU (capped at
    CPU_MICROBATCH); on an accelerator as many images and inner steps per pass as ``budget`` inputs allow.
    A method that draws random numbers (SmoothGrad) keeps the spec's batch everywhere: its noise stream, hence
    its map, depends on how images are grouped (on CUDA's counter-based generator)."""
    if kind == "cpu":
        return min(batch_size, CPU_MICROBATCH), params
    if METHODS.get(name).random:
        return batch_size, params
    if isinstance(params, IGParams):
        per = max(1, min(n, budget // params.n_steps))
        return per, params.model_copy(update={"internal_batch_size": max(params.internal_batch_size,
                                                                         per * params.n_steps)})
    if isinstance(params, OcclusionParams):  # forward passes only (no activations kept): 4x the inputs
        per = max(1, min(n, batch_size))
        windows = math.prod(math.ceil(max(0, d - params.window) / params.stride) + 1 for d in hw)  # as Captum
        ppe = max(params.perturbations_per_eval, min(windows, 4 * budget // per))
        return per, params.model_copy(update={"perturbations_per_eval": ppe})
    return max(1, min(n, budget)), params


def attribute(
    model: torch.nn.Module,
    x: torch.Tensor,
    *,
    name: str,
    params: Params,
    target: Target = 1,
    batch_size: int,
    signed: bool = False,
) -> torch.Tensor:
    """Attributions of ``x`` (N x 1 x H x W on the model's device) -> N x 1 x H x W float32 on the CPU.

    Raises UnsupportedMethod when Captum cannot handle the model (e.g. DeepLift on a reused module).
    """
    fn = METHODS.get(name).fn
    kind = _device_kind(x)
    out = []
    i = 0
    while i < len(x):
        step, p = batch_plan(name, params, len(x) - i, batch_size, kind=kind, budget=_device_budget["inputs"],
                             hw=tuple(x.shape[-2:]))
        xb = x[i : i + step].detach().clone().requires_grad_(True)
        tb = target[i : i + step] if isinstance(target, torch.Tensor) else target
        try:
            a = fn(model, xb, tb, p, signed=signed)
        except torch.OutOfMemoryError:
            if kind == "cpu" or _device_budget["inputs"] <= 1:
                raise
            del xb
            _device_budget["inputs"] //= 2  # retry the same images in smaller passes
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            continue
        except (UnsupportedMethod, EvaluationBug):
            raise
        except Exception as e:  # Captum signals unsupported models with assorted error types
            raise UnsupportedMethod(f"{name} failed on this model: {type(e).__name__}: {str(e)[:300]}") from e
        if a.shape[0] != xb.shape[0] or a.shape[-2:] != xb.shape[-2:]:
            raise EvaluationBug(f"{name} returned shape {tuple(a.shape)} for input {tuple(xb.shape)}")
        out.append(one_channel(a.detach().float(), None if signed else params.rule).cpu())
        i += step
    return torch.cat(out)
