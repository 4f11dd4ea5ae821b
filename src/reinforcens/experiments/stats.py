"""Statistics of multi-seed experiments: mean and sample standard deviation, paired t-tests.

The paper compares RNS with each baseline by a paired t-test over 10 rounds; here a "round" is a seed,
and both methods of a pair were trained with the same seed on the same data.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from scipy import stats


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``) of the finite values.

    Parameters
    ----------
    values
        One value per seed; NaN and infinite values are left out.

    Returns
    -------
    mean, std : float
        NaN mean when no value is finite; NaN standard deviation when fewer than two are.
    """
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return math.nan, math.nan
    std = float(np.std(x, ddof=1)) if x.size >= 2 else math.nan
    return float(np.mean(x)), std


def paired_pvalue(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of the paired t-test of ``a`` against ``b`` (:func:`scipy.stats.ttest_rel`).

    Parameters
    ----------
    a, b
        Paired values (the same seeds in the same order), of equal length.

    Returns
    -------
    float
        The p-value of :func:`scipy.stats.ttest_rel` on the pairs where both values are finite.
        Edge cases, all following scipy:

        - fewer than two complete pairs: NaN (the test is undefined);
        - every difference exactly zero (identical columns): NaN, since ``t = 0 / 0``; a method against
          itself or two deterministic methods that agree has no p-value;
        - every difference equal and non-zero (no variance, e.g. two deterministic methods that
          differ): 0.0, since ``|t|`` is infinite.

    Raises
    ------
    ValueError
        If the lengths differ.
    """
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"paired samples differ in length: {x.size} and {y.size}")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size < 2:
        return math.nan
    if np.all(x == y):
        return math.nan
    with warnings.catch_warnings():
        # near-identical samples make scipy warn about precision loss; the p-value is still returned
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ttest_rel(x, y).pvalue)
