"""Summaries of repeated runs: the mean and the spread over seeds that reports and plots print."""
from __future__ import annotations

import math

__all__ = ["mean_std"]


def mean_std(values) -> tuple[float, float]:
    """The mean and the sample standard deviation (n - 1 in the denominator; 0.0 for one value)."""
    values = list(values)
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std
