"""FNAF hit rates: the false-negative rate of Cheng et al. over many slices, streamed."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

from reconguard.attacks.fnaf import FNAFResult


@dataclass(frozen=True)
class HitRate:
    """FNAF statistics over many slices.

    Attributes:
        rate: Fraction of evaluated slices with a hit (``nan`` when none was evaluated).
        hits, slices: Slices with a hit; slices evaluated (some candidate passed the information check).
        excluded: Slices skipped because every candidate failed the information check.
        mean_score: Mean of the hit score (the attack's criterion) of the worst features.
        mean_linear_loss, mean_feature_loss, mean_paper_loss: Means of the three criteria's scores.
        mean_region_loss: Mean raw region MSE (``/ max_value^2``) with the feature.
        mean_control_region_loss, mean_control_paper_loss: The raw scores on the clean inputs.
    """

    rate: float
    hits: int
    slices: int
    excluded: int
    mean_score: float
    mean_linear_loss: float
    mean_feature_loss: float
    mean_paper_loss: float
    mean_region_loss: float
    mean_control_region_loss: float
    mean_control_paper_loss: float


class HitCounter:
    """Streams FNAF results into a :class:`HitRate` without keeping their images."""

    _MEANS = ("score", "linear_loss", "feature_loss", "paper_loss", "region_loss", "control_region_loss",
              "control_paper_loss")

    def __init__(self) -> None:
        self.hits = self.slices = self.excluded = 0
        self.sums = dict.fromkeys(self._MEANS, 0.0)

    def add(self, result: FNAFResult) -> None:
        """Count one batch: slices where every candidate was rejected are excluded."""
        keep = result.accepted
        self.slices += int(keep.sum())
        self.excluded += int((~keep).sum())
        self.hits += int(result.hit.sum())
        for name in self._MEANS:
            self.sums[name] += float(getattr(result, name)[keep].double().sum())

    def summary(self) -> HitRate:
        """The hit rate and mean losses so far (``nan`` before any evaluated slice)."""
        mean = {f"mean_{k}": v / self.slices if self.slices else math.nan for k, v in self.sums.items()}
        rate = self.hits / self.slices if self.slices else math.nan
        return HitRate(rate=rate, hits=self.hits, slices=self.slices, excluded=self.excluded, **mean)


def summarize_hits(results: Iterable[FNAFResult]) -> HitRate:
    """The FNAF hit rate (the paper's false-negative rate) over the slices of many results.

    Slices where every candidate failed the information check are excluded (and counted).

    References:
        Cheng et al., MIDL 2020 (PMLR 121:121-135).
    """
    counter = HitCounter()
    for result in results:
        counter.add(result)
    return counter.summary()
