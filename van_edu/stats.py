"""Summaries of repeated runs: the mean and spread over seeds, and whether two models differ.

* :func:`mean_std`: what reports and plots print for a model's seeds;
* :func:`welch_test`: Welch's t-test on two models' per-seed accuracies (unequal variances), with
  the two-sided p-value and a confidence interval for the difference of the means;
* :func:`binomial_se`: the standard error of an accuracy measured on n test images, the noise of
  the test set itself (a different source from the seeds' training randomness);
* :func:`mcnemar`: two models scored on the same test items, compared on the items where they
  disagree (a paired test); :func:`paired_bootstrap`: the same items resampled together, for an
  interval of the difference of two mean scores (accuracies, or per-item means over seeds);
* :func:`holm` and :func:`holm_adjusted`: which of several tests stay significant together;
* :func:`detectable_difference`: the smallest true difference a test of a given standard error
  would see most of the time (its power), to say what a run could not have seen.

The Student t distribution is computed here from the regularised incomplete beta function (a
continued fraction), so the package needs no SciPy.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

__all__ = ["mean_std", "binomial_se", "t_cdf", "t_quantile", "welch_test", "WelchResult", "mcnemar", "McNemarResult",
           "paired_bootstrap", "PairedBootstrapResult", "holm", "holm_adjusted", "detectable_difference",
           "format_p"]


def mean_std(values) -> tuple[float, float]:
    """The mean and the sample standard deviation (n - 1 in the denominator; 0.0 for one value)."""
    values = list(values)
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


def binomial_se(accuracy: float, n: int) -> float:
    """Standard error of an accuracy measured on ``n`` independent test images: sqrt(p (1 - p) / n)."""
    return math.sqrt(accuracy * (1.0 - accuracy) / n)


def _betacf(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz's method)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, dof: float) -> float:
    """P(T <= t) for Student's t with ``dof`` degrees of freedom."""
    tail = 0.5 * _betainc(dof / 2.0, 0.5, dof / (dof + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(q: float, dof: float) -> float:
    """The t with ``t_cdf(t, dof) = q`` (bisection)."""
    lo, hi = -1e3, 1e3
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_cdf(mid, dof) < q else (lo, mid)
    return (lo + hi) / 2


@dataclass(frozen=True)
class WelchResult:
    difference: float   # mean(a) - mean(b)
    t: float
    dof: float          # Welch-Satterthwaite degrees of freedom
    p: float            # two-sided
    low: float          # confidence interval of the difference
    high: float
    level: float
    se: float = math.nan  # standard error of the difference, sqrt(s_a^2 / n_a + s_b^2 / n_b)


def welch_test(a, b, level: float = 0.95) -> WelchResult:
    """Welch's t-test of mean(a) = mean(b) for two samples with unequal variances (each n >= 2)."""
    a, b = list(a), list(b)
    if len(a) < 2 or len(b) < 2:
        raise ValueError("Welch's test needs at least two values in each sample")
    (ma, sa), (mb, sb) = mean_std(a), mean_std(b)
    va, vb = sa * sa / len(a), sb * sb / len(b)
    se = math.sqrt(va + vb)
    diff = ma - mb
    if se == 0.0:
        return WelchResult(diff, math.inf if diff else 0.0, math.inf, 0.0 if diff else 1.0, diff, diff, level, 0.0)
    dof = (va + vb) ** 2 / (va * va / (len(a) - 1) + vb * vb / (len(b) - 1))
    t = diff / se
    p = 2.0 * (1.0 - t_cdf(abs(t), dof))
    half = t_quantile(0.5 + level / 2.0, dof) * se
    return WelchResult(diff, t, dof, p, diff - half, diff + half, level, se)


# --- Two models on the same test set: paired tests, and many tests at once ---------------------
@dataclass(frozen=True)
class McNemarResult:
    only_a: int         # test items model a got right and model b wrong
    only_b: int         # the reverse
    p: float            # two-sided exact p-value (binomial on the discordant items)


def mcnemar(correct_a, correct_b) -> McNemarResult:
    """McNemar's exact test for two classifiers scored on the same items: only the items where they
    disagree (one right, the other wrong) carry information; under "equally good" each such item
    is a fair coin. ``correct_a``/``correct_b``: per item, whether the model was right."""
    a, b = [bool(v) for v in correct_a], [bool(v) for v in correct_b]
    if len(a) != len(b):
        raise ValueError(f"the two models must be scored on the same items, got {len(a)} and {len(b)}")
    only_a = sum(x and not y for x, y in zip(a, b))
    only_b = sum(y and not x for x, y in zip(a, b))
    n, k = only_a + only_b, min(only_a, only_b)
    # P(X <= k) for X ~ Binomial(n, 1/2), in whole numbers (2.0 ** n overflows a float past n = 1023)
    count, term = 0, 1
    for i in range(k + 1):
        count, term = count + term, term * (n - i) // (i + 1)
    return McNemarResult(only_a, only_b, min(1.0, 2 * count / 2 ** n))


def holm(p_values, alpha: float = 0.05) -> list[bool]:
    """Holm's step-down correction for several tests at once: which null hypotheses are rejected
    with the family-wise error rate held at ``alpha``. The k-th smallest p-value (k from 1) is
    compared with alpha / (m - k + 1); at the first that fails, it and all larger ones are kept."""
    p = list(p_values)
    order = sorted(range(len(p)), key=lambda i: p[i])
    rejected = [False] * len(p)
    for rank, i in enumerate(order):
        if p[i] > alpha / (len(p) - rank):
            break
        rejected[i] = True
    return rejected


def holm_adjusted(p_values) -> list[float]:
    """Holm's adjusted p-values, in the order given: the k-th smallest becomes the largest of
    (m - j + 1) p_(j) over j <= k, capped at 1. A test is rejected by :func:`holm` at level alpha
    exactly when its adjusted p-value is at most alpha, so a table can print one number per test."""
    p = list(p_values)
    order = sorted(range(len(p)), key=lambda i: p[i])
    adjusted, running = [1.0] * len(p), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adjusted[i] = running
    return adjusted


@dataclass(frozen=True)
class PairedBootstrapResult:
    difference: float   # mean(a) - mean(b) over the items, as observed
    low: float          # percentile interval of the difference at ``level``
    high: float
    se: float           # standard deviation of the resampled differences
    p: float            # two-sided; at least 1 / samples
    samples: int
    level: float


def paired_bootstrap(scores_a, scores_b, samples: int = 2000, seed: int = 0,
                     level: float = 0.95) -> PairedBootstrapResult:
    """Two models scored on the SAME items, compared by a paired bootstrap over the items.

    ``scores_a``, ``scores_b``: one score per item for each model, in the same order (1/0 for
    right/wrong, so that the mean is the accuracy; or an item's share of right answers over
    several seeds). Each resample draws the n items with replacement, the same items for both
    models, and takes the mean difference; the images that both models get right (or both wrong)
    then add no noise, which is why a paired interval is narrower than one built from the two
    accuracies' separate standard errors. Returns the observed difference, the percentile interval,
    the resamples' standard deviation and a two-sided ``p`` (twice the share of resampled
    differences on the far side of zero, at least 1 / samples), as ``van_edu.metrics``'s
    ``paired_bootstrap_miou`` does for mIoU.
    """
    a, b = np.asarray(scores_a, dtype=np.float64), np.asarray(scores_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"the two models must be scored on the same items, got {a.shape} and {b.shape}")
    d, n = a - b, a.size
    rng = np.random.default_rng(seed)
    chunk = max(1, 2_000_000 // n)                     # bounded memory: chunk x n indices at a time
    means = np.concatenate([d[rng.integers(0, n, size=(min(chunk, samples - s), n))].mean(1)
                            for s in range(0, samples, chunk)])
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    far = min(float((means <= 0).mean()), float((means >= 0).mean()))
    return PairedBootstrapResult(float(d.mean()), float(low), float(high), float(means.std(ddof=1)),
                                 min(1.0, max(2 * far, 1 / samples)), samples, level)


def format_p(p: float, floor: float | None = None, digits: int = 3) -> str:
    """A p-value for print: ``"p = 0.042"``; or ``"p < 0.0005"`` where ``p`` sits at a bootstrap's
    floor (``floor``: 1 / samples, or m / samples after Holm's adjustment of m tests), which means no
    resample crossed zero, so only a bound is known, not a value."""
    if floor is not None and p <= floor * (1 + 1e-9):
        return f"p < {floor:.{digits}g}"
    return f"p = {p:.{digits}g}"


def detectable_difference(se: float, alpha: float = 0.05, power: float = 0.8, dof: float | None = None) -> float:
    """The smallest true difference that a two-sided test at level ``alpha``, whose estimate has
    standard error ``se``, rejects with probability ``power``: (q(1 - alpha/2) + q(power)) se,
    with q the normal quantile, or Student's t with ``dof`` degrees of freedom (an approximation
    there). With alpha = 0.05 and power 0.8 it is about 2.8 standard errors: an effect smaller than
    that is more likely than not to read "no difference", so such a verdict says nothing about it."""
    if dof is None:
        q = NormalDist().inv_cdf
        return (q(1 - alpha / 2) + q(power)) * se
    return (t_quantile(1 - alpha / 2, dof) + t_quantile(power, dof)) * se
