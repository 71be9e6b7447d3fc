"""OTAM: ordered temporal alignment (Cao et al., "Few-Shot Video Classification via Temporal
Alignment", CVPR 2020, arXiv:1906.11415).

Reference code consulted: the PyTorch re-implementation ``OTAM_cum_dist`` of the
few-shot-action-recognition library (the version copied into TRX-derived code and CLIP-FSAR); the
original authors released none. The recursion below is that code's, cell for cell (see
docs/protocol.md, "`otam`: ordered temporal alignment"), with two differences: the soft-min is
computed stably as ``logaddexp`` of log-weights (the public ``log(exp + exp)`` underflows to
``inf`` once every candidate cost exceeds about 10 at λ = 0.1), and a relaxed first row is
available as an option.

The recursion on the padded distance matrix Δ′ = [0 | Δ | 0] of shape ``[T, U + 2]``
(rows: query frames l; columns: support frames m, 1 ≤ m ≤ U, with zero-cost pads at 0 and U+1):

- row 0: Γ(0, m) = Γ(0, m−1) + Δ′(0, m)  (a running sum; ``first_row="sum"``, the public default)
- Γ(l, 0) = 0, so a path may enter the support sequence at any query frame for free;
- Γ(l, 1) = Δ′(l, 1) + smin{Γ(l−1, 0), Γ(l−1, 1), Γ(l, 0)};
- Γ(l, m) = Δ′(l, m) + smin{Γ(l−1, m−1), Γ(l, m−1)} for 2 ≤ m ≤ U (diagonal or horizontal);
- Γ(l, U+1) = smin{Γ(l−1, U), Γ(l−1, U+1), Γ(l, U)}, so a path may leave early;
- d(q → s) = Γ(T−1, U+1), where smin_λ(a) = −λ log Σ exp(−a / λ).

Speed: in log-weights x = −Γ/λ every soft-min becomes one ``logaddexp`` kernel over the whole batch,
so a cell costs two tensor operations (the public loop spends about ten), and both directions of the
bidirectional distance run in the same batch when T = U. On CPU, where T = 8 makes each operation
tiny, this beats the vectorised alternatives we measured (a ``logcumsumexp`` per row, and one masked
``logsumexp`` per row in the log-semiring): their transcendental work per cell is larger, and
``logcumsumexp`` has a slow CPU kernel. ``benchmarks/bench_metrics.py`` has the numbers.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
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
from fsar_metric.errors import InputError
from fsar_metric.similarity import create_similarity

__all__ = ["OTAM", "otam_cumulative_distance", "otam_distance"]

Direction = Literal["q2s", "s2q", "sum", "mean"]
FirstRow = Literal["sum", "relaxed"]
DIRECTIONS: tuple[Direction, ...] = ("q2s", "s2q", "sum", "mean")
FIRST_ROWS: tuple[FirstRow, ...] = ("sum", "relaxed")


def otam_cumulative_distance(dist: Tensor, smoothing: float = 0.1, first_row: FirstRow = "sum") -> Tensor:
    """One-directional OTAM distance d(q → s) for a batch of frame-distance matrices.

    Args:
        dist: ``[..., T, U]`` frame distances, rows = frames of the sequence being aligned (the
            query for q → s), columns = frames of the sequence aligned to.
        smoothing: λ of the soft-min (0.1 in the public code; CLIP-FSAR uses 0.5).
        first_row: ``"sum"`` makes row 0 a running sum (the public re-implementation);
            ``"relaxed"`` treats row 0 like the others, with a virtual zero-cost row above it, so
            the path may also skip leading support frames (fsar's reading of the paper's relaxed
            first row; the public code's commented-out alternative is a single-candidate soft-min,
            which is the identity).

    Returns:
        ``[...]`` cumulative alignment cost Γ(T−1, U+1).
    """
    n_cols = dist.shape[-1]
    # Log-weights x = −Γ/λ turn smin into logaddexp: one stable kernel per move instead of the
    # public code's three exp, a log and the bookkeeping around them.
    weights = dist / -smoothing  # [..., T, U]
    rows = weights.unbind(-2)  # T × [..., U]
    zero = rows[0][..., 0].new_zeros(())  # x of a pad cell, Γ = 0
    log2 = zero + math.log(2.0)
    if first_row == "sum":
        running = rows[0].cumsum(-1).unbind(-1)  # U × [...]
        prev = [zero, *running, running[-1]]  # the right pad costs nothing
        rows = rows[1:]
    else:
        prev = [zero] * (n_cols + 2)  # virtual row above row 0
    for row in rows:
        cells = row.unbind(-1)  # U × [...]
        # Column 1: diagonal from the left pad, down from (l−1, 1), or right from the left pad;
        # both pad moves have x = 0, hence log 2.
        current = [zero, cells[0] + torch.logaddexp(prev[1], log2)]
        for m in range(2, n_cols + 1):
            current.append(cells[m - 1] + torch.logaddexp(prev[m - 1], current[m - 1]))  # diagonal or right
        # The right pad: diagonal from (l−1, U), down from (l−1, U+1), or right from (l, U).
        current.append(torch.logaddexp(torch.logaddexp(prev[n_cols], prev[n_cols + 1]), current[n_cols]))
        prev = current
    return -smoothing * prev[-1]


def otam_distance(
    dist: Tensor, smoothing: float = 0.1, direction: Direction = "sum", first_row: FirstRow = "sum"
) -> Tensor:
    """OTAM distance between query and support sequences from their frame-distance matrices.

    Args:
        dist: ``[..., T, U]`` frame distances Δ (query frames × support frames).
        smoothing: λ of the soft-min.
        direction: ``q2s``, ``s2q`` (the recursion on Δᵀ), ``sum`` of both (the convention of the
            TRX, HyRSM, MoLo and CLIP-FSAR tables) or ``mean`` of both (TA2N).
        first_row: see ``otam_cumulative_distance``.

    Returns:
        ``[...]`` distances, smaller = better aligned.
    """
    if direction == "q2s":
        return otam_cumulative_distance(dist, smoothing, first_row)
    transposed = dist.transpose(-1, -2)  # [..., U, T]
    if direction == "s2q":
        return otam_cumulative_distance(transposed, smoothing, first_row)
    if dist.shape[-1] == dist.shape[-2]:
        # Square grids: both directions in one batch, half the sequential steps.
        both = otam_cumulative_distance(torch.stack([dist, transposed]), smoothing, first_row)  # [2, ...]
        total = both[0] + both[1]
    else:
        total = otam_cumulative_distance(dist, smoothing, first_row) + otam_cumulative_distance(
            transposed, smoothing, first_row
        )
    return total / 2 if direction == "mean" else total


@register_metric("otam")
class OTAM(nn.Module):
    """Ordered temporal alignment metric: logits = −(OTAM distance), reduced over shots.

    Args:
        smoothing: λ of the soft-min; 0.1 by default (0.5 reproduces CLIP-FSAR).
        direction: ``sum`` (default), ``mean``, ``q2s`` or ``s2q``; see ``otam_distance``.
        first_row: ``sum`` (default) or ``relaxed``; see ``otam_cumulative_distance``.
        frame_similarity: a name from ``list_similarities()`` or a module; the frame distance is
            ``1 − similarity``.
        shot_reduction: ``mean`` (the class distance is the mean over the K shots, the public
            convention) or ``max`` (the nearest shot).
        temperature: if given, logits are divided by it.
        check_finite: raise on NaN / inf inputs (costs a device sync).

    Shapes: support ``[N, K, U, D]``, query ``[Q, T, D]`` → logits ``[Q, N]``. T and U may differ.

    Example:
        >>> import torch
        >>> from fsar_metric import create_metric
        >>> create_metric("otam")(torch.randn(5, 1, 8, 64), torch.randn(5, 8, 64)).shape
        torch.Size([5, 5])
    """

    def __init__(
        self,
        smoothing: float = 0.1,
        direction: Direction = "sum",
        first_row: FirstRow = "sum",
        frame_similarity: str | nn.Module = "cosine",
        shot_reduction: ShotReduction = "mean",
        temperature: float | None = None,
        check_finite: bool = False,
    ) -> None:
        super().__init__()
        if not smoothing > 0:
            raise InputError(f"smoothing must be > 0, got {smoothing!r}")
        check_choice("direction", direction, DIRECTIONS)
        check_choice("first_row", first_row, FIRST_ROWS)
        check_choice("shot_reduction", shot_reduction, SHOT_REDUCTIONS)
        check_temperature(temperature)
        self.smoothing = smoothing
        self.direction: Direction = direction
        self.first_row: FirstRow = first_row
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
        scores = -otam_distance(dist, self.smoothing, self.direction, self.first_row)  # [Q, N, K]
        return apply_temperature(reduce_shots(scores, self.shot_reduction), self.temperature)

    def extra_repr(self) -> str:
        return f"smoothing={self.smoothing}, direction={self.direction!r}, first_row={self.first_row!r}"
