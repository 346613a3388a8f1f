"""The corruption battery (v3): MedMNIST-C's X-ray corruptions at five severities (docs/corruptions.md)."""

from .battery import CorruptionBattery

__all__ = ["CorruptionBattery"]
