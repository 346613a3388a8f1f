"""fxbench.robustness: the fxbench-AA v1 battery (pyautoattack's APGD, FAB and Square for binary models)."""

from .attacks import ATTACKS, APGDMargin, AttackEntry
from .battery import RobustnessBattery, metric_defs
from .config import Budget, RobustnessConfig, parse_config
from .images import adversarial_images, has_adversarial

__all__ = [
    "ATTACKS", "APGDMargin", "AttackEntry", "Budget", "RobustnessBattery", "RobustnessConfig",
    "adversarial_images", "has_adversarial", "metric_defs", "parse_config",
]
