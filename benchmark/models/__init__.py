"""Submission loading: model.yaml -> verified checkpoint -> CanonicalModel."""

from .wrapper import CANONICAL_SIZE, CanonicalModel, wrap

__all__ = ["CANONICAL_SIZE", "CanonicalModel", "wrap"]
