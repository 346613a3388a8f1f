"""load_submission: model.yaml -> verified checkpoint -> CanonicalModel on a device."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import SubmissionError
from .checkpoint import load_weights, parse_state_dict, read_checkpoint
from .device import resolve_device
from .factory import channels_mismatch, create_model, find_gradcam_layer
from .spec import ModelSpec, read_yaml_bytes
from .wrapper import CanonicalModel

YAML_NAME = "model.yaml"


@dataclass(frozen=True)
class Submission:
    spec: ModelSpec
    folder: Path
    yaml_path: Path
    yaml_sha256: str
    checkpoint_sha256: str
    model: CanonicalModel  # eval mode, parameters frozen, on ``device``
    n_parameters: int
    device: torch.device

    def to_json(self) -> dict[str, Any]:
        """The ``submission`` block of result.json."""
        spec = self.spec
        return {
            "id": spec.id,
            "name": spec.name,
            "authors": list(spec.authors),
            "url": spec.url,
            "license": spec.license,
            "architecture": spec.model.architecture,
            "n_parameters": self.n_parameters,
            "yaml_sha256": self.yaml_sha256,
            "checkpoint_sha256": self.checkpoint_sha256,
            "training": spec.training.to_json(),
        }


@dataclass(frozen=True)
class SpecFile:
    spec: ModelSpec
    yaml_path: Path
    yaml_sha256: str


def find_yaml(path: str | Path) -> Path:
    """``path`` itself if it is a file, else ``path/model.yaml``."""
    path = Path(path)
    if path.is_dir():
        path = path / YAML_NAME
        if not (path.exists() or path.is_symlink()):
            raise SubmissionError(f"{path.parent}: no {YAML_NAME} in this folder")
    elif not path.exists() and not path.is_symlink():
        raise SubmissionError(f"{path}: no such file or folder")
    return path


def read_spec(path: str | Path) -> SpecFile:
    """Parse model.yaml once; the hash is of the very bytes that were parsed."""
    yaml_path = find_yaml(path)
    data = read_yaml_bytes(yaml_path)  # regular file, confined, size-capped: a FIFO or /dev/zero never hangs
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SubmissionError(f"{yaml_path}: not UTF-8 text ({e})") from None
    spec = ModelSpec.from_text(text, source=str(yaml_path))
    return SpecFile(spec=spec, yaml_path=yaml_path, yaml_sha256=hashlib.sha256(data).hexdigest())


def wrap_for_spec(net: torch.nn.Module, spec: ModelSpec) -> CanonicalModel:
    """The canonical wrapper with the declared input/output conventions and Grad-CAM layer. A declared
    channel count that the network's first convolution does not take is refused here, in words (the forward
    check would only show PyTorch's shape error)."""
    wrong = channels_mismatch(net, channels=spec.input.channels, size=spec.input.size)
    if wrong:
        raise SubmissionError(wrong)
    return CanonicalModel(
        net,
        input_size=spec.input.size,
        channels=spec.input.channels,
        mean=spec.input.mean,
        std=spec.input.std,
        num_classes=spec.output.num_classes,
        fracture_index=spec.output.fracture_index,
        gradcam_layer=find_gradcam_layer(net, spec),
    )


def load_submission(path: str | Path, *, trust_code: bool = False, device: str = "cpu") -> Submission:
    """Load a submission (``path``: a model.yaml or its folder) safely; see docs/submissions.md."""
    target = resolve_device(device)
    spec_file = read_spec(path)
    folder = spec_file.yaml_path.parent
    spec = spec_file.spec
    try:
        net = create_model(spec, folder=folder, trust_code=trust_code)
        checkpoint = read_checkpoint(spec.checkpoint, folder=folder)
        load_weights(net, parse_state_dict(checkpoint), source=f"checkpoint {checkpoint.path.name}")
        model = wrap_for_spec(net, spec)
    except SubmissionError as e:
        raise SubmissionError(f"{spec_file.yaml_path}: {e}") from None
    return Submission(
        spec=spec_file.spec,
        folder=folder,
        yaml_path=spec_file.yaml_path,
        yaml_sha256=spec_file.yaml_sha256,
        checkpoint_sha256=checkpoint.sha256,
        model=model.to(target),
        n_parameters=sum(p.numel() for p in model.net.parameters()),
        device=target,
    )
