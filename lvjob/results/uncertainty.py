"""How sure a comparison is: the paired difference of two forecasters' errors on the same series, with a
seeded bootstrap interval. Pure numpy, no files; Table 3's differences and summary.md's findings read it.

Paired: both forecasters scored the same series, so each series gives one difference (this one's MAE
minus the other's) and what is resampled is the series. The interval is the central LEVEL share of
the mean difference over DRAWS resamples, drawn with a fixed seed: the same runs give the same table.
A difference is a finding only when its interval excludes zero; otherwise it is within noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LEVEL = 0.90
DRAWS = 4000
SEED = 0


@dataclass(frozen=True)
class Difference:
    """Mean over the paired series of (a's MAE - b's MAE), and its bootstrap interval."""

    mean: float
    low: float
    high: float
    series: int

    @property
    def finding(self) -> bool:
        return self.low > 0 or self.high < 0

    def verdict(self) -> str:
        if not self.finding:
            return "within noise"
        return "lower" if self.high < 0 else "higher"


def paired_difference(a: list, b: list, draws: int = DRAWS, level: float = LEVEL, seed: int = SEED) -> Difference | None:
    """`a` minus `b` over the series both scored (None marks a series one did not); None below two such series."""
    d = np.array([x - y for x, y in zip(a, b) if x is not None and y is not None], dtype=float)
    if len(d) < 2:
        return None
    means = d[np.random.default_rng(seed).integers(0, len(d), size=(draws, len(d)))].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return Difference(float(d.mean()), float(low), float(high), len(d))
