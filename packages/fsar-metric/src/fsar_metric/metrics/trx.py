"""TRX: Temporal-Relational CrossTransformers (Perrett et al., "Temporal-Relational
CrossTransformers for Few-Shot Action Recognition", CVPR 2021, arXiv:2101.06184).

Reference code consulted: the authors' public TRX repository (``TemporalCrossTransformer``). For
each cardinality ω (default {2, 3}):

1. a fixed sinusoidal positional encoding, scaled by 0.1, plus dropout, is added to the frames;
2. every ordered tuple p = (p₁ < … < p_ω) of frame indices is represented by the concatenation of
   its frames (ω·D): 28 pairs and 56 triples at T = 8;
3. key Υ and value Λ maps ω·D → d_k (1152 in TRX); keys are LayerNorm-ed, values are not;
4. each query tuple attends over all tuples of all K support videos of the class:
   a = softmax_{(k, m)}(⟨Υ(q_p), Υ(s^{c,k}_m)⟩ / √d_k);
5. query-specific prototype t^c_p = Σ a · Λ(s^{c,k}_m); distance d_ω = mean_p ‖Λ(q_p) − t^c_p‖²;
6. logits = −mean_ω d_ω.

Unlike the reference code, which loops over classes, all classes are scored at once, and the
tuple-pair products are never formed at width d_k. Every tuple key and value is a sum of per-frame
projections (a linear map of a concatenation is the sum of per-slot maps), so:

- each frame is projected once per tuple slot it can occupy (slot s of an increasing ω-tuple holds
  only frames s … T − ω + s): F = ω·(T − ω + 1) rows per video instead of P = C(T, ω) tuples;
- the inner product of two tuples is the sum of the ω² inner products of their frame rows, so
  the width-d_k work is one F × F Gram block per (query, support) video pair, expanded to the
  P × P tuple pairs by a 0/1 slot-incidence matrix;
- LayerNorm of a key is (γ ⊙ u_p) / σ_p + β, where the centred key u_p is the sum of the centred
  frame rows (centring is linear) and σ_p² = ‖u_p‖² / d_k + ε comes from the video's own Gram
  block; terms of the score that are constant over the support tuples (⟨β, ·⟩ with the query)
  cancel in the softmax and are dropped;
- the distance ‖Λ(q_p) − Σ_j a_j Λ(s_j)‖² = ‖Λ(q_p)‖² − 2⟨Λ(q_p), t⟩ + ‖t‖² needs the attention
  only summed onto the support frame rows (α = a · incidence), so the prototypes t are never built.

At T = 8, Ω = {2, 3} this is 14 and 18 rows per video in place of 28 and 56 tuples (a 4× and 9.7×
smaller Gram); the per-frame projections are then most of the cost. The tuple index tables are
built per call from T, so any frame count works, and the support and query frame counts may differ.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence

import torch
from einops import einsum, rearrange
from torch import Tensor, nn

from fsar_metric._common import apply_temperature, check_temperature
from fsar_metric._registry import register_metric
from fsar_metric._shapes import check_episode, check_finite
from fsar_metric.errors import InputError

__all__ = ["TRX", "sinusoidal_positions", "slot_incidence"]


def sinusoidal_positions(n_frames: int, dim: int, *, device: torch.device, dtype: torch.dtype) -> Tensor:
    """The fixed encoding of "Attention Is All You Need": ``[T, D]``, sin on even and cos on odd channels."""
    position = torch.arange(n_frames, device=device, dtype=torch.float32)[:, None]  # [T, 1]
    half = torch.arange(0, dim, 2, device=device, dtype=torch.float32)  # [ceil(D/2)]
    angle = position * torch.exp(half * (-math.log(10000.0) / dim))  # [T, ceil(D/2)]
    encoding = torch.stack([angle.sin(), angle.cos()], dim=-1).flatten(1)[:, :dim]  # [T, D]
    return encoding.to(dtype)


@functools.lru_cache(maxsize=64)
def _slot_columns(n_frames: int, cardinality: int) -> tuple[tuple[int, ...], ...]:
    """For each increasing ω-tuple of ``range(T)``, its frame rows in slot-major order: ``s·L + p_s − s``.

    Slot s of an increasing tuple holds one of the L = T − ω + 1 frames s … s + L − 1.
    """
    span = n_frames - cardinality + 1
    return tuple(
        tuple(slot * span + frame - slot for slot, frame in enumerate(combo))
        for combo in itertools.combinations(range(n_frames), cardinality)
    )


def slot_incidence(n_frames: int, cardinality: int, *, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``[P, F]`` 0/1 matrix: row p marks the ω frame rows whose sum is tuple p's projection.

    P = C(T, ω) tuples, F = ω·(T − ω + 1) frame rows (slot-major: row s·L + i is frame s + i in slot s).
    """
    if not 1 <= cardinality <= n_frames:
        raise InputError(f"slot_incidence needs 1 <= cardinality <= n_frames, got {cardinality} and {n_frames}")
    columns = torch.tensor(_slot_columns(n_frames, cardinality), dtype=torch.long)  # [P, ω]
    incidence = torch.zeros(columns.shape[0], cardinality * (n_frames - cardinality + 1), dtype=dtype)
    return incidence.scatter_(1, columns, 1.0).to(device)


class _TemporalCrossTransformer(nn.Module):
    """One cardinality ω of TRX."""

    def __init__(self, dim: int, cardinality: int, key_dim: int, pe_scale: float, dropout: float) -> None:
        super().__init__()
        self.cardinality = cardinality
        self.pe_scale = pe_scale
        self.key = nn.Linear(dim * cardinality, key_dim)
        self.value = nn.Linear(dim * cardinality, key_dim)
        self.key_norm = nn.LayerNorm(key_dim)
        self.dropout = nn.Dropout(dropout)

    def _encode_frames(self, frames: Tensor) -> Tensor:
        """``[B, T, D]`` → the frames plus the scaled positional encoding, after dropout."""
        n_frames, dim = frames.shape[-2:]
        pe = sinusoidal_positions(n_frames, dim, device=frames.device, dtype=frames.dtype)
        return self.dropout(frames + self.pe_scale * pe)

    def _slot_rows(self, linear: nn.Linear, support: Tensor, query: Tensor) -> tuple[Tensor, Tensor]:
        """Every frame through the column block of each slot it can occupy.

        W·[x_a; x_b; …] + b = W_1·x_a + W_2·x_b + … + b, so a tuple's projection is the sum of its
        frame rows (``slot_incidence``); the bias is folded into slot 0, which every tuple has.

        Args:
            support: ``[S, U, D]`` encoded frames.
            query: ``[Q, T, D]`` encoded frames.

        Returns:
            support rows ``[S, F_U, d_k]`` and query rows ``[Q, F_T, d_k]``, F = ω·(T − ω + 1),
            row s·L + i = W_s·x_{s+i} (+ b when s = 0).
        """
        n_support, n_query, dim = support.shape[0], query.shape[0], support.shape[-1]
        w = self.cardinality
        s_span, q_span = support.shape[1] - w + 1, query.shape[1] - w + 1
        # [ω, S*L_U + Q*L_T, D]: slot s holds frames s … s + L − 1 of every video.
        frames = torch.cat(
            [
                piece.reshape(-1, dim)
                for slot in range(w)
                for piece in (support[:, slot : slot + s_span], query[:, slot : slot + q_span])
            ]
        ).view(w, -1, dim)
        # One batched product over the slots with [ω, D, d_k] views of the weight (no per-slot
        # slices, whose backward would zero-fill and add a full-size weight gradient per slot).
        weight = linear.weight.view(-1, w, dim).permute(1, 2, 0)  # [ω, D, d_k]
        rows = torch.bmm(frames, weight)  # [ω, S*L_U + Q*L_T, d_k]
        rows[0] += linear.bias  # slot 0 only; in place: the product's backward needs its inputs, not its output
        s_rows = rows[:, : n_support * s_span].unflatten(1, (n_support, s_span)).transpose(0, 1)  # [S, ω, L_U, d_k]
        q_rows = rows[:, n_support * s_span :].unflatten(1, (n_query, q_span)).transpose(0, 1)  # [Q, ω, L_T, d_k]
        return s_rows.flatten(1, 2), q_rows.flatten(1, 2)

    def _inverse_std(self, centred: Tensor, incidence: Tensor) -> Tensor:
        """``centred [B, F, d_k]`` frame rows → 1 / σ_p ``[B, P]`` of the LayerNorm of each tuple key.

        σ_p² = ‖Σ_{f ∈ p} c_f‖² / d_k + ε, the squared norm read off the video's Gram block.
        """
        gram = centred @ centred.mT  # [B, F, F]
        square = ((incidence @ gram) * incidence).sum(-1)  # [B, P]
        return (square / centred.shape[-1] + self.key_norm.eps).rsqrt()

    def forward(self, support: Tensor, query: Tensor) -> Tensor:
        """``support [N, K, U, D]``, ``query [Q, T, D]`` → ``[Q, N]`` negative distances."""
        n_way, n_shot = support.shape[:2]
        n_query = query.shape[0]
        if min(support.shape[2], query.shape[1]) < self.cardinality:
            raise InputError(
                f"TRX cardinality {self.cardinality} needs at least that many frames; got support T = "
                f"{support.shape[2]} and query T = {query.shape[1]}"
            )
        # Dropout draws in the reference order: the support frames, then the query frames.
        s_frames = self._encode_frames(rearrange(support, "n k u d -> (n k) u d"))  # [S, U, D]
        q_frames = self._encode_frames(query)  # [Q, T, D]
        s_inc = slot_incidence(s_frames.shape[1], self.cardinality, device=query.device, dtype=query.dtype)  # [R, G]
        q_inc = slot_incidence(q_frames.shape[1], self.cardinality, device=query.device, dtype=query.dtype)  # [P, F]
        n_support, (n_tuples, n_rows), (s_tuples, s_rows) = s_frames.shape[0], q_inc.shape, s_inc.shape

        # Keys: LN(k_p) = γ ⊙ u_p / σ_p + β with u_p the sum of centred frame rows, so the score
        # ⟨LN(k_q), LN(k_j)⟩ = (⟨γ² u_q, u_j⟩ / σ_q + ⟨γ β, u_j⟩) / σ_j + (terms constant in j, which
        # the softmax over j cancels).
        s_key, q_key = self._slot_rows(self.key, s_frames, q_frames)  # [S, G, d_k], [Q, F, d_k]
        s_key = s_key - s_key.mean(-1, keepdim=True)
        q_key = q_key - q_key.mean(-1, keepdim=True)
        key_dim = q_key.shape[-1]
        gamma, beta = self.key_norm.weight, self.key_norm.bias
        q_scale = self._inverse_std(q_key, q_inc) / math.sqrt(key_dim)  # [Q, P]: 1 / (σ_q √d_k)
        s_scale = self._inverse_std(s_key, s_inc)  # [S, R]: 1 / σ_j
        rows = (q_key * gamma.square()).flatten(0, 1) @ s_key.flatten(0, 1).T  # [Q*F, S*G]: frame-row pairs
        # ⟨γ β, row_g⟩ / √d_k on every support row: a support tuple sums ω rows, so adding it here
        # adds ⟨γ β, u_j⟩ / √d_k to every score.
        shift = (s_key @ (gamma * beta)).flatten() / math.sqrt(key_dim)  # [S*G]
        scores = torch.baddbmm(
            shift, q_inc * q_scale[:, :, None], rows.view(n_query, n_rows, n_support * s_rows)
        )  # [Q, P, S*G]: query tuples against support frame rows
        scores = scores.view(n_query, n_tuples, n_support, s_rows) @ s_inc.T  # [Q, P, S, R]
        # In place: the product's backward needs its inputs, not its output.
        scores = scores.mul_(s_scale)
        attention = scores.view(n_query, n_tuples, n_way, n_shot * s_tuples).softmax(-1)  # [Q, P, N, K*R]
        # The attention summed onto the support frame rows: Σ_j a_j Λ(s_j) = Σ_g α_g row_g.
        alpha = attention.view(n_query, n_tuples, n_way, n_shot, s_tuples) @ s_inc  # [Q, P, N, K, G]
        alpha = alpha.view(n_query, n_tuples, n_way, n_shot * s_rows)  # [Q, P, N, K*G]

        # Values: ‖v_q − t‖² = ‖v_q‖² − 2⟨v_q, t⟩ + ‖t‖², each from frame-row Gram blocks.
        s_value, q_value = self._slot_rows(self.value, s_frames, q_frames)  # [S, G, d_k], [Q, F, d_k]
        q_square = ((q_inc @ (q_value @ q_value.mT)) * q_inc).sum(-1)  # [Q, P]: ‖v_q‖²
        rows = q_value.flatten(0, 1) @ s_value.flatten(0, 1).T  # [Q*F, S*G]
        s_value = s_value.reshape(n_way, n_shot * s_rows, key_dim)  # [N, K*G, d_k]
        # α G_c (G_c: Gram matrix of class c's support rows), then − 2 ⟨v_q, row_g⟩ added in place.
        spread = einsum(alpha, s_value @ s_value.mT, "q p n f, n f g -> q p n g").reshape(
            n_query, n_tuples, n_support * s_rows
        )  # [Q, P, S*G]
        spread = torch.baddbmm(spread, q_inc.expand(n_query, -1, -1), rows.view(n_query, n_rows, -1), alpha=-2.0)
        quadratic = einsum(spread.view(alpha.shape), alpha, "q p n f, q p n f -> q p n")  # [Q, P, N]
        distance = q_square[..., None] + quadratic  # [Q, P, N]
        return -distance.clamp_min(0).mean(1)


@register_metric(
    "trx",
    takes_in_dim=True,
    # d_k = min(D_t, 1152): TRX's 1152 for the 7B models; the model width, not the g²-times wider
    # concatenation of a spatial grid (which made the projections 16x larger on a 4 x 4 grid).
    sizes=lambda in_dim, text_dim: {"key_dim": min(text_dim, 1152)},
    renamed_options={"dim": "in_dim"},
)
class TRX(nn.Module):
    """Temporal-relational cross-transformer metric (learnable).

    Args:
        in_dim: feature width D of the inputs (the keyword every metric uses for the input width;
            ``dim`` before).
        cardinalities: tuple sizes Ω; {2, 3} as in TRX (STRM keeps only pairs).
        key_dim: d_k of the key and value maps (1152 in TRX).
        pe_scale: scale of the sinusoidal positional encoding (0.1 in TRX).
        dropout: dropout on the encoded frames (0.1 in TRX).
        temperature: if given, logits are divided by it.
        check_finite: raise on NaN / inf inputs.

    Shapes: support ``[N, K, U, D]``, query ``[Q, T, D]`` → logits ``[Q, N]``; T, U ≥ max Ω.

    Example:
        >>> import torch
        >>> from fsar_metric import create_metric
        >>> trx = create_metric("trx", in_dim=64, key_dim=32)
        >>> trx(torch.randn(5, 2, 8, 64), torch.randn(5, 8, 64)).shape
        torch.Size([5, 5])
    """

    def __init__(
        self,
        in_dim: int,
        cardinalities: Sequence[int] = (2, 3),
        key_dim: int = 1152,
        pe_scale: float = 0.1,
        dropout: float = 0.1,
        temperature: float | None = None,
        check_finite: bool = False,
    ) -> None:
        super().__init__()
        if in_dim < 1 or key_dim < 1:
            raise InputError(f"in_dim and key_dim must be positive, got in_dim={in_dim}, key_dim={key_dim}")
        if not cardinalities or any(w < 1 for w in cardinalities) or len(set(cardinalities)) != len(cardinalities):
            raise InputError(f"cardinalities must be distinct positive integers, got {tuple(cardinalities)}")
        check_temperature(temperature)
        self.in_dim = in_dim
        self.cardinalities = tuple(cardinalities)
        self.heads = nn.ModuleList(
            _TemporalCrossTransformer(in_dim, w, key_dim, pe_scale, dropout) for w in self.cardinalities
        )
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
        if support.shape[-1] != self.in_dim:
            raise InputError(f"TRX was built for D = {self.in_dim}, got support of shape {list(support.shape)}")
        if self.check_finite:
            check_finite(support=support, query=query)
        logits = torch.stack([head(support, query) for head in self.heads]).mean(0)  # [Q, N]
        return apply_temperature(logits, self.temperature)
