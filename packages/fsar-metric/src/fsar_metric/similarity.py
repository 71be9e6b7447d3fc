"""Frame similarities: the injectable part every frame-level metric composes with.

A frame similarity maps query frames ``[Q, T, D]`` and support frames ``[N, K, U, D]`` to the
similarity of every frame pair, ``[Q, N, K, T, U]``, larger = more similar (U is the support
frame count, usually equal to T). Alignment metrics turn it into a distance as ``1 - similarity``,
which for cosine is the usual ``1 - cos`` of OTAM and HyRSM.

They follow pytorch-metric-learning's idea of injecting ``distance=`` into losses: "OTAM with a dot
product" is ``create_metric("otam", frame_similarity="dot")``, not a new class.
"""

from __future__ import annotations

from typing import Any

from einops import einsum
from torch import Tensor, nn

from fsar_metric.errors import InputError

__all__ = [
    "CosineSimilarity",
    "DotProductSimilarity",
    "NegativeSquaredEuclidean",
    "create_similarity",
    "list_similarities",
]


class CosineSimilarity(nn.Module):
    """Cosine similarity of every query frame with every support frame.

    Args:
        eps: lower bound on each norm (``F.normalize`` convention), so zero vectors give 0, not NaN.
        denominator_offset: if > 0, compute ``q·s / (‖q‖·‖s‖ + offset)`` instead; 0.01 reproduces
            the public OTAM / TRX / CLIP-FSAR code (``cos_sim(..., epsilon=0.01)``) exactly. With an
            offset the similarity is no longer invariant to scaling.
    """

    def __init__(self, eps: float = 1e-8, denominator_offset: float = 0.0) -> None:
        super().__init__()
        if eps <= 0 or denominator_offset < 0:
            raise InputError(f"eps must be > 0 and denominator_offset >= 0, got {eps} and {denominator_offset}")
        self.eps = eps
        self.denominator_offset = denominator_offset

    def forward(self, query: Tensor, support: Tensor) -> Tensor:
        """``query [Q, T, D]``, ``support [N, K, U, D]`` → ``[Q, N, K, T, U]``."""
        if self.denominator_offset == 0.0:
            q = nn.functional.normalize(query, dim=-1, eps=self.eps)
            s = nn.functional.normalize(support, dim=-1, eps=self.eps)
            return einsum(q, s, "q t d, n k u d -> q n k t u")
        numerator = einsum(query, support, "q t d, n k u d -> q n k t u")
        q_norm = query.norm(dim=-1)  # [Q, T]
        s_norm = support.norm(dim=-1)  # [N, K, U]
        denominator = einsum(q_norm, s_norm, "q t, n k u -> q n k t u") + self.denominator_offset
        return numerator / denominator.clamp_min(self.eps)


class DotProductSimilarity(nn.Module):
    """Plain dot product ``q·s`` of every frame pair."""

    def forward(self, query: Tensor, support: Tensor) -> Tensor:
        """``query [Q, T, D]``, ``support [N, K, U, D]`` → ``[Q, N, K, T, U]``."""
        return einsum(query, support, "q t d, n k u d -> q n k t u")


class NegativeSquaredEuclidean(nn.Module):
    """``-‖q - s‖²`` of every frame pair (ProtoNet's distance as a similarity)."""

    def forward(self, query: Tensor, support: Tensor) -> Tensor:
        """``query [Q, T, D]``, ``support [N, K, U, D]`` → ``[Q, N, K, T, U]``."""
        # Expanded form: one matmul instead of a [Q, N, K, T, U, D] difference tensor.
        dot = einsum(query, support, "q t d, n k u d -> q n k t u")
        q_sq = query.pow(2).sum(-1)[:, None, None, :, None]  # [Q, 1, 1, T, 1]
        s_sq = support.pow(2).sum(-1)[None, :, :, None, :]  # [1, N, K, 1, U]
        return -(q_sq + s_sq - 2 * dot).clamp_min(0.0)


_SIMILARITIES: dict[str, type[nn.Module]] = {
    "cosine": CosineSimilarity,
    "dot": DotProductSimilarity,
    "sqeuclidean": NegativeSquaredEuclidean,
}


def list_similarities() -> list[str]:
    """Names accepted by ``create_similarity``."""
    return sorted(_SIMILARITIES)


def create_similarity(name_or_module: str | nn.Module, **kwargs: Any) -> nn.Module:
    """Build a frame similarity by name (``cosine``, ``dot``, ``sqeuclidean``) or pass a module through.

    Raises:
        ValueError: unknown name; the message lists the valid ones.
    """
    if isinstance(name_or_module, nn.Module):
        return name_or_module
    if name_or_module not in _SIMILARITIES:
        raise InputError(f"unknown frame similarity {name_or_module!r}; valid: {', '.join(list_similarities())}")
    return _SIMILARITIES[name_or_module](**kwargs)
