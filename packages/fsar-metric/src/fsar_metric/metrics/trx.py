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

Unlike the reference code, which loops over classes, all classes are scored in one einsum; tuple
keys and values are sums of per-frame projections instead of projections of concatenated tuples
(the same linear map, far fewer multiply-adds); and the tuple index tables are built per call from
T, so any frame count works.
"""

from __future__ import annotations

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

__all__ = ["TRX", "sinusoidal_positions"]


def sinusoidal_positions(n_frames: int, dim: int, *, device: torch.device, dtype: torch.dtype) -> Tensor:
    """The fixed encoding of "Attention Is All You Need": ``[T, D]``, sin on even and cos on odd channels."""
    position = torch.arange(n_frames, device=device, dtype=torch.float32)[:, None]  # [T, 1]
    half = torch.arange(0, dim, 2, device=device, dtype=torch.float32)  # [ceil(D/2)]
    angle = position * torch.exp(half * (-math.log(10000.0) / dim))  # [T, ceil(D/2)]
    encoding = torch.stack([angle.sin(), angle.cos()], dim=-1).flatten(1)[:, :dim]  # [T, D]
    return encoding.to(dtype)


def _tuples(n_frames: int, cardinality: int, device: torch.device) -> Tensor:
    """``[P, ω]`` all increasing index tuples of ``range(T)``; P = C(T, ω)."""
    combos = list(itertools.combinations(range(n_frames), cardinality))
    return torch.tensor(combos, device=device, dtype=torch.long).reshape(len(combos), cardinality)


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

    def _project(self, linear: nn.Linear, frames: Tensor, tuples: Tensor) -> Tensor:
        """``linear`` applied to every tuple's concatenated frames, without building the tuples.

        A linear map of a concatenation is the sum of per-slot maps, W·[x_a; x_b] = W_1·x_a + W_2·x_b,
        so each frame is projected once per slot (T·ω products) and the P tuples are gathered sums:
        7× fewer multiply-adds than projecting the 56 concatenated triples at T = 8.

        Args:
            frames: ``[B, T, D]``.
            tuples: ``[P, ω]`` frame indices.

        Returns:
            ``[B, P, d_k]``.
        """
        dim = frames.shape[-1]
        out = linear.bias
        for slot in range(self.cardinality):
            # The weight's column block of this slot, used in place (a strided view, no copy).
            per_frame = nn.functional.linear(frames, linear.weight[:, slot * dim : (slot + 1) * dim])  # [B, T, d_k]
            out = out + per_frame[:, tuples[:, slot]]  # [B, P, d_k]
        return out

    def _encode(self, frames: Tensor) -> tuple[Tensor, Tensor]:
        """``frames [B, T, D]`` → keys and values of its tuples, each ``[B, P, d_k]``."""
        n_frames, dim = frames.shape[-2:]
        pe = sinusoidal_positions(n_frames, dim, device=frames.device, dtype=frames.dtype)
        frames = self.dropout(frames + self.pe_scale * pe)  # [B, T, D]
        tuples = _tuples(n_frames, self.cardinality, frames.device)  # [P, ω]
        return self.key_norm(self._project(self.key, frames, tuples)), self._project(self.value, frames, tuples)

    def forward(self, support: Tensor, query: Tensor) -> Tensor:
        """``support [N, K, U, D]``, ``query [Q, T, D]`` → ``[Q, N]`` negative distances."""
        n_way, n_shot = support.shape[:2]
        if min(support.shape[2], query.shape[1]) < self.cardinality:
            raise InputError(
                f"TRX cardinality {self.cardinality} needs at least that many frames; got support T = "
                f"{support.shape[2]} and query T = {query.shape[1]}"
            )
        s_key, s_value = self._encode(rearrange(support, "n k u d -> (n k) u d"))  # [N*K, R, d_k]
        q_key, q_value = self._encode(query)  # [Q, P, d_k]
        s_key = rearrange(s_key, "(n k) r e -> n (k r) e", n=n_way, k=n_shot)
        s_value = rearrange(s_value, "(n k) r e -> n (k r) e", n=n_way, k=n_shot)
        scores = einsum(q_key, s_key, "q p e, n j e -> n q p j") / math.sqrt(q_key.shape[-1])  # [N, Q, P, K*R]
        attention = scores.softmax(dim=-1)
        # ‖v_q − Σ_j a_j v_j‖² expanded as ‖v_q‖² − 2 Σ_j a_j ⟨v_q, v_j⟩ + aᵀ G a (G: Gram matrix of the
        # class's support values), so the [N, Q, P, d_k] prototypes are never materialised: on CPU,
        # streaming that tensor through memory cost more than all the matrix products together.
        cross = einsum(q_value, s_value, "q p e, n j e -> n q p j")  # [N, Q, P, K*R]
        gram = einsum(s_value, s_value, "n j e, n i e -> n j i")  # [N, K*R, K*R]
        quadratic = einsum(attention, gram, "n q p j, n j i -> n q p i")  # [N, Q, P, K*R]
        # In place: einsum's backward needs its inputs, not its output.
        weighted = quadratic.sub_(cross, alpha=2.0)  # [N, Q, P, K*R]
        distance = q_value.square().sum(-1) + einsum(attention, weighted, "n q p j, n q p j -> n q p")  # [N, Q, P]
        distance = distance.clamp_min(0).mean(-1).T  # [Q, N]
        return -distance


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
