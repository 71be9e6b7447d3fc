"""OTAM: ordered temporal alignment (Cao et al., "Few-Shot Video Classification via Temporal
Alignment", CVPR 2020, arXiv:1906.11415).

Reference code consulted: the PyTorch re-implementation ``OTAM_cum_dist`` of the
few-shot-action-recognition library (the version copied into TRX-derived code and CLIP-FSAR); the
original authors released none. The recursion below is that code's, cell for cell (see PROTOCOL.md
§7.2), with three differences: the soft-min uses ``logsumexp`` (the public ``log(exp + exp)``
underflows to ``inf`` once every candidate cost exceeds about 10 at λ = 0.1), a relaxed first row
is available as an option, and each row is computed in one vectorised step instead of a Python
loop over columns.

The recursion on the padded distance matrix Δ′ = [0 | Δ | 0] of shape ``[T, U + 2]``
(rows: query frames l; columns: support frames m, 1 ≤ m ≤ U, with zero-cost pads at 0 and U+1):

- row 0: Γ(0, m) = Γ(0, m−1) + Δ′(0, m)  (a running sum; ``first_row="sum"``, the public default)
- Γ(l, 0) = 0, so a path may enter the support sequence at any query frame for free;
- Γ(l, 1) = Δ′(l, 1) + smin{Γ(l−1, 0), Γ(l−1, 1), Γ(l, 0)};
- Γ(l, m) = Δ′(l, m) + smin{Γ(l−1, m−1), Γ(l, m−1)} for 2 ≤ m ≤ U (diagonal or horizontal);
- Γ(l, U+1) = smin{Γ(l−1, U), Γ(l−1, U+1), Γ(l, U)}, so a path may leave early;
- d(q → s) = Γ(T−1, U+1), where smin_λ(a) = −λ log Σ exp(−a / λ).

Vectorised rows: inside row l, columns 2 … U form the first-order recurrence
x_m = c_m + logaddexp(b_m, x_{m−1}) with x = −Γ/λ, c = −Δ/λ and b_m = −Γ(l−1, m−1)/λ. Unrolled, it
is x_m = C_m + logcumsumexp_j(e_j) with prefix sums C of c, so one ``logcumsumexp`` call replaces
the column loop and only T−1 sequential row steps remain. Both directions of the bidirectional
distance run in the same batch when T = U.
"""

from __future__ import annotations

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
from fsar_metric.similarity import create_similarity

__all__ = ["OTAM", "otam_cumulative_distance", "otam_distance"]

Direction = Literal["q2s", "s2q", "sum", "mean"]
FirstRow = Literal["sum", "relaxed"]
DIRECTIONS: tuple[Direction, ...] = ("q2s", "s2q", "sum", "mean")
FIRST_ROWS: tuple[FirstRow, ...] = ("sum", "relaxed")


def _soft_min(*candidates: Tensor, smoothing: float) -> Tensor:
    """smin_λ over equally shaped tensors: ``-λ · logsumexp(-a / λ)``, elementwise."""
    stacked = torch.stack(candidates, dim=-1)
    return -smoothing * torch.logsumexp(stacked / -smoothing, dim=-1)


def _next_row(prev: Tensor, dist_row: Tensor, smoothing: float) -> Tensor:
    """One OTAM row.

    Args:
        prev: ``[..., U + 2]`` cumulative costs Γ(l−1, ·) of the padded previous row.
        dist_row: ``[..., U]`` frame distances Δ(l, 1..U) of this row.

    Returns:
        ``[..., U + 2]`` cumulative costs Γ(l, ·).
    """
    n_cols = dist_row.shape[-1]  # U
    zero = prev[..., :1].new_zeros(prev[..., :1].shape)  # [..., 1] Γ(l, 0)
    first = dist_row[..., 0] + _soft_min(prev[..., 0], prev[..., 1], zero[..., 0], smoothing=smoothing)  # [...]
    if n_cols > 1:
        c = dist_row[..., 1:] / -smoothing  # [..., U-1]  columns 2..U
        b = prev[..., 1:n_cols] / -smoothing  # [..., U-1]  diagonal predecessors Γ(l-1, m-1)
        prefix = torch.cat([zero, c.cumsum(-1)], dim=-1)  # [..., U]  C_1 = 0, C_m = c_2 + … + c_m
        terms = torch.cat([(first / -smoothing)[..., None], b - prefix[..., :-1]], dim=-1)  # [..., U]
        body = -smoothing * (prefix + torch.logcumsumexp(terms, dim=-1))  # [..., U]  Γ(l, 1..U)
    else:
        body = first[..., None]  # [..., 1]
    # The right pad costs nothing: Γ(l, U+1) = smin{Γ(l-1, U), Γ(l-1, U+1), Γ(l, U)}.
    last = _soft_min(prev[..., n_cols], prev[..., n_cols + 1], body[..., -1], smoothing=smoothing)
    return torch.cat([zero, body, last[..., None]], dim=-1)


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
    *batch, n_rows, n_cols = dist.shape
    if first_row == "sum":
        body = dist[..., 0, :].cumsum(-1)  # [..., U]
        zero = body.new_zeros(*batch, 1)
        prev = torch.cat([zero, body, body[..., -1:]], dim=-1)  # [..., U+2]
        rows = range(1, n_rows)
    else:
        prev = dist.new_zeros(*batch, n_cols + 2)  # virtual row -1
        rows = range(n_rows)
    for row in rows:
        prev = _next_row(prev, dist[..., row, :], smoothing)
    return prev[..., -1]


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

    uses_text = False

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
            raise ValueError(f"smoothing must be > 0, got {smoothing!r}")
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
