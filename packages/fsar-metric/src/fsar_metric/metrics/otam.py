"""OTAM: ordered temporal alignment (Cao et al., "Few-Shot Video Classification via Temporal
Alignment", CVPR 2020, arXiv:1906.11415).

Reference code consulted: the PyTorch re-implementation ``OTAM_cum_dist`` of the
few-shot-action-recognition library (the version copied into TRX-derived code and CLIP-FSAR); the
original authors released none. The recursion below is that code's, cell for cell (see
docs/protocol.md, "`otam`: ordered temporal alignment"), with two differences: the soft-min is
computed stably, in float64 path weights where no weight can leave the float64 range and as
``logaddexp`` of log-weights otherwise (the public ``log(exp + exp)`` underflows to ``inf`` in
float32 once every candidate cost exceeds about 10 at λ = 0.1), and a relaxed first row is
available as an option.

The recursion on the padded distance matrix Δ′ = [0 | Δ | 0] of shape ``[T, U + 2]``
(rows: query frames l; columns: support frames m, 1 ≤ m ≤ U, with zero-cost pads at 0 and U+1):

- row 0: Γ(0, m) = Γ(0, m−1) + Δ′(0, m)  (a running sum; ``first_row="sum"``, the public default)
- Γ(l, 0) = 0, so a path may enter the support sequence at any query frame for free;
- Γ(l, 1) = Δ′(l, 1) + smin{Γ(l−1, 0), Γ(l−1, 1), Γ(l, 0)};
- Γ(l, m) = Δ′(l, m) + smin{Γ(l−1, m−1), Γ(l, m−1)} for 2 ≤ m ≤ U (diagonal or horizontal);
- Γ(l, U+1) = smin{Γ(l−1, U), Γ(l−1, U+1), Γ(l, U)}, so a path may leave early;
- d(q → s) = Γ(T−1, U+1), where smin_λ(a) = −λ log Σ exp(−a / λ).

Speed: the recursion runs column by column. Columns 2 … U have no down move, so a whole column of
every grid in the batch is one vectorised step on ``[T, B]`` (B = all (query, support) pairs, both
directions side by side when T = U); column 1 (its down move) is a linear recurrence, and the right
pad column is a sum over rows at the end. Where the numbers allow it
(``(T + U − 1) · max |Δ| / λ + (T + U + 1) · log 3 ≤ 700``, always so for cosine frames, Δ ≤ 2,
at λ = 0.1 and T = U ≤ 16), the steps run in path weights w = exp(−Γ/λ) in float64, where choosing
a move is a sum and chaining one a product: a column step is one add and one multiply over
``[T, B]``, column 1 is a closed form (a cumulative product and sum instead of T sequential
steps), there is a single ``exp`` per frame pair (shared by both directions; computed in float32
for float32 input when every cell weight is a normal float32), and the result is cast back to the
input dtype. Otherwise (far frames, small λ, devices without float64) the same steps run in
log-weights x = −Γ/λ with stable ``logaddexp`` in the input dtype, which stays finite for any
finite distances. ``benchmarks/bench_metrics.py`` has the numbers.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
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


# Largest |log-weight| a float64 path weight may reach: exp(±700) stays inside the normal range
# (about e^±708), so no partial path weight underflows and none overflows.
_FLOAT64_LOG_RANGE = 700.0


@dataclass(frozen=True)
class _Domain:
    """The numbers one run of the recursion computes in, and its two operations on them.

    ``encode(dist, scale)`` maps frame distances ``[B, T, U]`` to the values of the log-weights
    x = scale · Δ (scale = −1/λ), ``decode`` maps values back to log-weights; ``two``
    is the value of the two zero-cost pad moves into column 1; ``column_step(costs, prev)`` computes
    column m ``[T, B]`` from its cell costs and column m−1: each cell chains its cost onto the choice
    between the diagonal and the right move (row 0 has no row above, so it keeps only the right
    move); ``times`` chains a cell cost onto a value, ``plus`` chooses between two values, ``total`` chooses over dim 0.
    """

    encode: Callable[[Tensor, float], Tensor]
    decode: Callable[[Tensor], Tensor]
    dtype: torch.dtype | None
    two: float
    first_column: Callable[[Tensor, Tensor], Tensor]
    column_step: Callable[[Tensor, Tensor], Tensor]
    times: Callable[[Tensor, Tensor], Tensor]
    plus: Callable[[Tensor, Tensor], Tensor]
    total: Callable[[Tensor], Tensor]


def _weights_first_column(costs: Tensor, two: Tensor) -> Tensor:
    """Column 1 in weights, ``[T, B]`` → ``[T, B]``, in closed form instead of T sequential steps.

    The recursion c(0) = f(0), c(l) = f(l) · (c(l−1) + 2) is linear: with P(l) = f(0) ⋯ f(l),
    c(l) = P(l) · (1 + 2 Σ_{j<l} 1 / P(j)). Every term is positive (no cancellation), and the
    partial products are partial path weights, inside the float64 range by ``_domain_name``'s bound.
    """
    prefix = torch.cumprod(costs, 0)  # P(l)
    before = torch.cumsum(prefix[:-1].reciprocal(), 0)  # Σ_{j<l} 1/P(j) for l ≥ 1
    factor = torch.cat([torch.ones_like(prefix[:1]), torch.addcmul(torch.ones_like(before), before, two)])
    return prefix * factor


def _log_first_column(costs: Tensor, two: Tensor) -> Tensor:
    """Column 1 in log-weights, one row after the other: x(l) = f(l) + logaddexp(x(l−1), log 2)."""
    rows = costs.unbind(0)  # T × [B]
    column = [rows[0]]
    for row in rows[1:]:
        column.append(row + torch.logaddexp(column[-1], two))
    return torch.stack(column)


def _weights_column_step(costs: Tensor, prev: Tensor) -> Tensor:
    """Column m from column m−1 in weights: ``costs[l] · (prev[l] + prev[l−1])``, row 0 without
    ``prev[−1]``; ``[T, B]``, ``[T, B]`` → ``[T, B]`` in two kernels."""
    current = costs * prev
    current[1:].addcmul_(costs[1:], prev[:-1])  # in place on a fresh tensor: autograd keeps costs, prev
    return current


def _log_column_step(costs: Tensor, prev: Tensor) -> Tensor:
    """Column m from column m−1 in log-weights: ``costs[l] + logaddexp(prev[l], prev[l−1])``, row 0
    ``costs[0] + prev[0]``; ``[T, B]``, ``[T, B]`` → ``[T, B]``."""
    return costs + torch.cat([prev[:1], torch.logaddexp(prev[1:], prev[:-1])])


# Path weights w = exp(x) in float64: a move choice is a sum, chaining is a product.
_WEIGHTS = _Domain(
    encode=lambda dist, scale: torch.exp(dist.to(torch.float64) * scale),
    decode=torch.log,
    dtype=torch.float64,
    two=2.0,
    first_column=_weights_first_column,
    column_step=_weights_column_step,
    times=torch.mul,
    plus=torch.add,
    total=lambda values: values.sum(0),
)
# The same, each cell's weight computed in float32 (half the cost of a float64 exp) and cast: exact to
# float32 precision (1 ulp per cell), used when no single cell weight can leave float32's normal range.
_WEIGHTS_EXP32 = dataclasses.replace(_WEIGHTS, encode=lambda dist, scale: torch.exp(dist * scale))
# Log-weights x in the input dtype: a move choice is a logaddexp, chaining is a sum.
_LOG_WEIGHTS = _Domain(
    encode=lambda dist, scale: dist * scale,
    decode=lambda x: x,
    dtype=None,
    two=math.log(2.0),
    first_column=_log_first_column,
    column_step=_log_column_step,
    times=torch.add,
    plus=torch.logaddexp,
    total=lambda values: values.logsumexp(0),
)
_DOMAINS: dict[str, _Domain] = {"weights": _WEIGHTS, "weights-exp32": _WEIGHTS_EXP32, "log-weights": _LOG_WEIGHTS}
# Largest |x| of one cell whose float32 weight exp(x) is a normal float32 (about e^±87).
_FLOAT32_CELL_RANGE = 80.0


def _domain_name(dist: Tensor, smoothing: float) -> str:
    """``weights`` when every partial path weight of ``dist [B, T, U]`` fits a float64, else ``log-weights``;
    ``weights-exp32`` (the same, cell weights computed in float32) for float32 input whose cell weights
    fit a float32.

    A path through the grid pays at most T + U − 1 cells of |x| ≤ max |Δ| / λ, and a cell sums at
    most 3^(T+U+1) paths (one more row with the relaxed first row), so every partial log-weight has
    |x| ≤ (T + U − 1) · max |Δ| / λ + (T + U + 1) · log 3.
    """
    if dist.numel() == 0 or dist.device.type == "mps":  # nothing to bound; MPS has no float64
        return "log-weights"
    n_rows, n_cols = dist.shape[-2:]
    low, high = (float(v) for v in torch.aminmax(dist.detach()))
    if not (math.isfinite(low) and math.isfinite(high)):
        return "log-weights"  # NaN / inf: the log-weights propagate them as the public loop does
    largest = max(-low, high) / smoothing
    bound = (n_rows + n_cols - 1) * largest + (n_rows + n_cols + 1) * math.log(3.0)
    if bound > _FLOAT64_LOG_RANGE:
        return "log-weights"
    return "weights-exp32" if dist.dtype == torch.float32 and largest <= _FLOAT32_CELL_RANGE else "weights"


def _check_grid(dist: Tensor) -> None:
    if dist.dim() < 2 or dist.shape[-1] == 0 or dist.shape[-2] == 0:
        raise InputError(
            f"dist must be [..., T, U] frame distances with T >= 1 and U >= 1, got shape {tuple(dist.shape)}"
        )


def _align(dist: Tensor, smoothing: float, first_row: FirstRow, transposes: tuple[bool, ...]) -> Tensor:
    """d(rows → columns) of ``dist`` as given and / or transposed, side by side in one batch.

    Args:
        dist: ``[B, T, U]`` frame distances (any strides).
        transposes: one entry per batch part: False aligns ``dist``, True aligns its transpose
            (both need T = U).

    Returns:
        ``[len(transposes) · B]`` Γ(T−1, U+1) in the dtype of ``dist``, parts in the given order.
    """
    domain = _DOMAINS[_domain_name(dist, smoothing)]
    encoded = domain.encode(dist, -1.0 / smoothing)  # [B, T, U]: one transcendental per frame pair
    # Column-major and contiguous: values[m] ([rows, B·parts]) is column m+1 of every grid; each part
    # is one strided copy (and cast to the domain's dtype) of the encoded grids.
    n_batch = dist.shape[0]
    views = [encoded.permute(1, 2, 0) if t else encoded.permute(2, 1, 0) for t in transposes]  # [cols, rows, B]
    values = encoded.new_empty((*views[0].shape[:2], n_batch * len(views)), dtype=domain.dtype or dist.dtype)
    for i, view in enumerate(views):
        values[..., i * n_batch : (i + 1) * n_batch].copy_(view)
    if first_row == "relaxed":
        # A virtual zero-cost row above row 0 is the "sum" recursion on the grid with a zero row prepended.
        zero_cost = domain.encode(dist.new_zeros(()), 1.0).to(values.dtype)
        values = torch.cat([zero_cost.expand(values.shape[0], 1, values.shape[2]), values], 1)
    n_cols = values.shape[0]
    two = values.new_full((), domain.two)
    # Column 1: row 0 enters from the left pad; row l ≥ 1 also comes down from (l−1, 1) or in from
    # either pad cell (two zero-cost moves).
    # (unbind, not indexing: its backward stacks the gradients once instead of scattering each
    # into a zero tensor of the whole grid.)
    columns = values.unbind(0)  # U × [T, B·parts]
    current = domain.first_column(columns[0], two)  # [T, B·parts]
    # Columns 2 … U: diagonal or right moves only, so each column is one step over all rows.
    for col in range(1, n_cols):
        current = domain.column_step(columns[col], current)
    # The right pad column: Γ(l, U+1) = smin{Γ(l−1, U), Γ(l−1, U+1), Γ(l, U)} unrolls to a choice over
    # column U's rows, every row but the last counted twice (once diagonally, once from beside).
    last = domain.total(torch.cat([current, current[:-1]]))  # [B·parts]
    return (domain.decode(last) * -smoothing).to(dist.dtype)


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

    Raises:
        ValueError: ``dist`` has fewer than two dimensions or no rows or columns.
    """
    _check_grid(dist)
    return _align(dist.reshape(-1, *dist.shape[-2:]), smoothing, first_row, (False,)).view(dist.shape[:-2])


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

    Raises:
        ValueError: ``dist`` has fewer than two dimensions or no rows or columns.
    """
    _check_grid(dist)
    flat = dist.reshape(-1, *dist.shape[-2:])  # [B, T, U]
    if direction == "q2s":
        return _align(flat, smoothing, first_row, (False,)).view(dist.shape[:-2])
    if direction == "s2q":
        return _align(flat, smoothing, first_row, (True,)).view(dist.shape[:-2])
    if flat.shape[-1] == flat.shape[-2]:
        # Square grids: both directions in one batch, one pass of sequential steps.
        both = _align(flat, smoothing, first_row, (False, True))  # [2B]
        total = both[: flat.shape[0]] + both[flat.shape[0] :]
    else:
        total = _align(flat, smoothing, first_row, (False,)) + _align(flat, smoothing, first_row, (True,))
    total = total.view(dist.shape[:-2])
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
