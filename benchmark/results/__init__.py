"""Per-sample records -> metrics with bootstrap CIs -> the versioned result file."""

from .metrics import MetricDef, MetricValue, compute_metrics, REDUCERS

__all__ = ["MetricDef", "MetricValue", "compute_metrics", "REDUCERS"]
