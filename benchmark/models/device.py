"""--device names -> torch.device, refusing what this machine cannot give."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from ..errors import DeviceError


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    text = str(name).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if match is None:
        raise DeviceError(f"--device {name}: unknown device; use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise DeviceError(
            f"--device {name}: no CUDA device is available here (torch.cuda.is_available() is False); "
            "use --device cpu or auto"
        )
    index = int(match.group(1) or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise DeviceError(f"--device {name}: only {count} CUDA device(s) here (cuda:0 to cuda:{count - 1})")
    return torch.device("cuda", index)


@contextmanager
def strict_fp32() -> Iterator[None]:
    """Full float32 on CUDA inside the block: no TF32 in convolutions or matrix products.

    With TF32 (PyTorch's default for cuDNN convolutions) an image's logits change by ~1e-3 with the batch it
    is in (measured on an H200 with resnet18), so results would depend on batch composition.
    """
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


# Perturbed copies per forward pass of the batched model metrics (explanations/fast.py): an image's logits
# must not depend on sharing a batch of this size either, so `validate` and `run` check it. CPU: bounded
# memory (a no-grad ResNet-18 pass at 224 px holds ~3 MB of activations per image); CUDA: start large and
# halve on out-of-memory (numbers do not depend on it).
CPU_FORWARD_BATCH = 32
CUDA_FORWARD_BATCH = 1024


def forward_batch_size(device: torch.device | str) -> int:
    return CUDA_FORWARD_BATCH if torch.device(device).type == "cuda" else CPU_FORWARD_BATCH


def model_device(model: torch.nn.Module, fallback: torch.device | str = "cpu") -> torch.device:
    """Where ``model`` computes: the device of its first parameter or buffer (``fallback`` for a model with
    neither, e.g. a constant function)."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device(fallback)
