"""ProtoNet / TSN-style matching with temporal mean pooling.

Snell et al., "Prototypical Networks for Few-shot Learning", NeurIPS 2017 (arXiv:1703.05175), with
the temporal mean pooling of TSN (Wang et al., ECCV 2016, arXiv:1608.00859) as used for FSAR
baselines in the few-shot-action-recognition library.

Frames are averaged first, then shots: q̄ = mean_t q_t, p_c = mean_k mean_t s^{c,k}_t, and
logit(q, c) = sim(q̄, p_c), with ``similarity`` cosine (default) or ``sqeuclidean``
(−‖q̄ − p_c‖², ProtoNet's original). ``prototype="per_shot"`` instead averages the similarity to
each support video of the class (the library's TSN variant).
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from fsar_metric._common import apply_temperature, check_choice, check_temperature
from fsar_metric._registry import register_metric
from fsar_metric._shapes import check_episode, check_finite
from fsar_metric.similarity import create_similarity

__all__ = ["ProtoNet"]

Prototype = Literal["mean", "per_shot"]


@register_metric("proto")
class ProtoNet(nn.Module):
    """Temporal-mean prototype matching.

    Args:
        similarity: ``cosine`` (default), ``sqeuclidean``, ``dot``, or a similarity module.
        prototype: ``mean`` compares with the class mean p_c; ``per_shot`` averages the
            similarity to each support video.
        temperature: if given, logits are divided by it.
        check_finite: raise on NaN / inf inputs.

    Shapes: support ``[N, K, U, D]``, query ``[Q, T, D]`` → logits ``[Q, N]``; frame order is
    ignored, and T and U may differ.

    Example:
        >>> import torch
        >>> from fsar_metric import create_metric
        >>> create_metric("proto", similarity="sqeuclidean")(torch.randn(5, 5, 8, 64), torch.randn(25, 8, 64)).shape
        torch.Size([25, 5])
    """

    def __init__(
        self,
        similarity: str | nn.Module = "cosine",
        prototype: Prototype = "mean",
        temperature: float | None = None,
        check_finite: bool = False,
    ) -> None:
        super().__init__()
        check_choice("prototype", prototype, ("mean", "per_shot"))
        check_temperature(temperature)
        self.similarity = create_similarity(similarity)
        self.prototype: Prototype = prototype
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
        pooled_query = query.mean(1, keepdim=True)  # [Q, 1, D]
        if self.prototype == "mean":
            proto = support.mean((1, 2))[:, None, None, :]  # [N, 1, 1, D]
        else:
            proto = support.mean(2, keepdim=True)  # [N, K, 1, D]
        scores = self.similarity(pooled_query, proto)  # [Q, N, K', 1, 1]
        return apply_temperature(scores.mean((2, 3, 4)), self.temperature)
