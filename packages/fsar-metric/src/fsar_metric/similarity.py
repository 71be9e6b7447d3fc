"""Frame similarities: the injectable part every frame-level metric composes with.

A frame similarity maps query frames ``[Q, T, D]`` and support frames ``[N, K, U, D]`` to the
similarity of every frame pair, ``[Q, N, K, T, U]``, larger = more similar (U is the support
frame count, usually equal to T). Alignment metrics turn it into a distance as ``1 - similarity``,
which for cosine is the usual ``1 - cos`` of OTAM and HyRSM.

They follow pytorch-metric-learning's idea of injecting ``distance=`` into losses: "OTAM with a dot
product" is ``create_metric("otam", frame_similarity="dot")``, not a new class.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from einops import einsum
from torch import Tensor, nn

from fsar_metric.errors import InputError
from fsar_metric.registry import NoDeclared, Registry

__all__ = [
    "CosineSimilarity",
    "DotProductSimilarity",
    "NegativeSquaredEuclidean",
    "create_similarity",
    "list_similarities",
    "register_similarity",
]

S = TypeVar("S", bound=type[nn.Module])


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


SIMILARITIES: Registry[type[nn.Module], NoDeclared] = Registry("frame similarity", plural="frame similarities")
SIMILARITIES.register("cosine", CosineSimilarity)
SIMILARITIES.register("dot", DotProductSimilarity)
SIMILARITIES.register("sqeuclidean", NegativeSquaredEuclidean)


def register_similarity(name: str) -> Callable[[S], S]:
    """Class decorator registering a frame similarity (an ``nn.Module`` mapping query ``[Q, T, D]``
    and support ``[N, K, U, D]`` frames to ``[Q, N, K, T, U]``) under ``name``."""
    return SIMILARITIES.register(name)


def list_similarities() -> list[str]:
    """Names accepted by ``create_similarity``."""
    return SIMILARITIES.names()


def create_similarity(name_or_module: str | nn.Module, **kwargs: Any) -> nn.Module:
    """Build a frame similarity by name (``cosine``, ``dot``, ``sqeuclidean``) or pass a module through.

    Raises:
        ValueError: unknown name; the message lists the valid ones.
    """
    if isinstance(name_or_module, nn.Module):
        return name_or_module
    return SIMILARITIES.get(name_or_module)(**kwargs)
