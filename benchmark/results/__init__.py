"""Per-sample records -> metrics with bootstrap CIs -> the versioned result file."""

from .metrics import REDUCERS, MetricDef, MetricValue, compute_metrics

__all__ = ["MetricDef", "MetricValue", "compute_metrics", "REDUCERS"]
