"""fxbench.explanations: Captum attributions of the fracture logit, scored by Quantus against expert masks."""

from .battery import ExplanationBattery
from .config import XaiConfig, parse_config
from .methods import METHODS, UnsupportedMethod, attribute
from .metrics import METRICS, MetricInputs, Scores, coverage
from .references import REFERENCES, reference_maps

__all__ = [
    "METHODS",
    "METRICS",
    "REFERENCES",
    "ExplanationBattery",
    "MetricInputs",
    "Scores",
    "UnsupportedMethod",
    "XaiConfig",
    "attribute",
    "coverage",
    "parse_config",
    "reference_maps",
]
