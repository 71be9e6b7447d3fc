"""Bi-MHM: bidirectional mean Hausdorff metric (Wang et al., "Hybrid Relation Guided Set Matching
for Few-shot Action Recognition" (HyRSM), CVPR 2022, arXiv:2204.13423).

Reference code consulted: HyRSM's public head, which sums where the paper averages (the same
ranking at equal T). With Δ = 1 − sim:

    d(q, s) = (1/T) Σ_i min_j Δ_ij + (1/U) Σ_j min_i Δ_ij

Temporal order is not used: it is a set-to-set distance, robust to misalignment, without parameters.
Class aggregation: the mean over shots (HyRSM's 1-shot head) or the nearest shot.
"""

from __future__ import annotations

from torch import Tensor, nn

from fsar_metric._common import (
    SHOT_REDUCTIONS,
    ShotReduction,
    apply_temperature,
    check_choice,
    check_temperature,
    reduce_shots,
)
from fsar_metric._registry import register_metric
from fsar_metric._shapes import check_episode, check_finite
from fsar_metric.similarity import create_similarity

__all__ = ["BiMHM", "bimhm_distance"]


def bimhm_distance(dist: Tensor) -> Tensor:
    """``dist [..., T, U]`` frame distances → ``[...]`` bidirectional mean Hausdorff distance."""
    return dist.amin(-1).mean(-1) + dist.amin(-2).mean(-1)


@register_metric("bimhm")
class BiMHM(nn.Module):
    """Bidirectional mean Hausdorff metric: logits = −d, reduced over shots.

    Args:
        frame_similarity: a name from ``list_similarities()`` or a module; Δ = 1 − similarity.
        shot_reduction: ``mean`` (default) or ``max`` (nearest shot).
        temperature: if given, logits are divided by it.
        check_finite: raise on NaN / inf inputs.

    Shapes: support ``[N, K, U, D]``, query ``[Q, T, D]`` → logits ``[Q, N]``.

    Example:
        >>> import torch
        >>> from fsar_metric import create_metric
        >>> create_metric("bimhm")(torch.randn(5, 1, 8, 64), torch.randn(5, 8, 64)).shape
        torch.Size([5, 5])
    """

    def __init__(
        self,
        frame_similarity: str | nn.Module = "cosine",
        shot_reduction: ShotReduction = "mean",
        temperature: float | None = None,
        check_finite: bool = False,
    ) -> None:
        super().__init__()
        check_choice("shot_reduction", shot_reduction, SHOT_REDUCTIONS)
        check_temperature(temperature)
        self.frame_similarity = create_similarity(frame_similarity)
        self.shot_reduction: ShotReduction = shot_reduction
        self.temperature = temperature
        self.check_finite = check_finite

    def forward(
        self,
        support: Tensor,
        query: Tensor,
        *,
        support_text: Tensor | None = None,
        query_text: Tensor | None = None,
    ) -> Tensor:
        """``support [N, K, U, D]``, ``query [Q, T, D]`` → logits ``[Q, N]`` (text is ignored)."""
        check_episode(support, query)
        if self.check_finite:
            check_finite(support=support, query=query)
        dist = 1.0 - self.frame_similarity(query, support)  # [Q, N, K, T, U]
        scores = -bimhm_distance(dist)  # [Q, N, K]
        return apply_temperature(reduce_shots(scores, self.shot_reduction), self.temperature)
