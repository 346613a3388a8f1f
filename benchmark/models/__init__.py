"""Submission loading: model.yaml -> verified checkpoint -> CanonicalModel."""

from .device import forward_batch_size, model_device, resolve_device, strict_fp32
from .factory import create_model, find_gradcam_layer
from .spec import ModelSpec
from .submission import Submission, load_submission
from .validate import Check, ValidationReport, check_model_outputs, validate_submission
from .wrapper import CANONICAL_SIZE, CanonicalModel, wrap

__all__ = [
    "CANONICAL_SIZE",
    "CanonicalModel",
    "Check",
    "ModelSpec",
    "Submission",
    "ValidationReport",
    "check_model_outputs",
    "create_model",
    "find_gradcam_layer",
    "forward_batch_size",
    "load_submission",
    "model_device",
    "resolve_device",
    "strict_fp32",
    "validate_submission",
    "wrap",
]
