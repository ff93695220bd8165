"""Statistics over seeds: mean and sample spread of an arm, and the paired difference between two arms.

Arms share seeds (the same data order, initialisation seed and decoding seed), so comparing them seed by
seed removes the variation the seed causes in both: the interval is the paired Student-t interval of the
per-seed differences.
"""

from __future__ import annotations

import math

import attrs
from scipy import stats

from magvit.errors import InputError

__all__ = ["PairedDifference", "mean_std", "paired_difference"]


@attrs.frozen
class PairedDifference:
    """The paired difference ``better - worse`` over seeds (sign-flipped when lower is better, so that a
    positive mean always favours ``better``) with its two-sided t-interval.

    ``low``/``high`` are None with fewer than 2 pairs (no spread to estimate).
    """

    mean: float
    std: float | None
    n: int
    low: float | None
    high: float | None

    @property
    def verdict(self) -> str:
        """``reproduced`` (interval above 0), ``not reproduced`` (below 0) or ``inconclusive``."""
        if self.low is not None and self.low > 0:
            return "reproduced"
        if self.high is not None and self.high < 0:
            return "not reproduced"
        return "inconclusive"


def paired_difference(better: list[float], worse: list[float], higher_is_better: bool = True,
                      confidence: float = 0.95) -> PairedDifference:
    """Mean paired difference over seeds and its Student-t interval: mean +- t_{(1+c)/2, n-1} * s / sqrt(n),
    with ``s`` the sample standard deviation (n - 1) of the differences."""
    if len(better) != len(worse) or not better:
        raise InputError(f"paired values need the same non-zero count, got {len(better)} and {len(worse)}")
    sign = 1.0 if higher_is_better else -1.0
    diffs = [sign * (b - w) for b, w in zip(better, worse)]
    n = len(diffs)
    mean = sum(diffs) / n
    if n < 2:
        return PairedDifference(mean, None, n, None, None)
    std = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * std / math.sqrt(n)
    return PairedDifference(mean, std, n, mean - half, mean + half)


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n - 1) over seeds; the std is 0 for one seed, both None for none."""
    if not values:
        return None, None
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std
