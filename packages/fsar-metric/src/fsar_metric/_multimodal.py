"""The typed episode container and the two functions every trainer calls.

``Episode`` carries every tensor of one few-shot episode of features (visual and, for multimodal
methods, textual). ``score_episode`` and ``episode_losses`` run any registered metric on it, passing
what its declared capabilities (``metric_capabilities``) say it reads, so a trainer or an evaluator
never needs to know whether a metric reads text or owns extra losses.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor, nn

from fsar_metric._registry import metric_capabilities
from fsar_metric._shapes import check_episode, check_text, fmt_shape
from fsar_metric.errors import InputError

__all__ = ["Episode", "episode_losses", "score_episode"]


@dataclass(frozen=True)
class Episode:
    """One few-shot episode of features, way-major (shapes are checked on construction).

    Attributes:
        support: ``[N, K, T, D_in]`` per-frame visual features of the support videos.
        query: ``[Q, T, D_in]`` per-frame visual features of the queries.
        support_text: ``[N, K, D_in]`` text features of the support videos under the support
            prompt (label-aware: it names the class; label-free only in the ablation that withholds
            the class name), or None for visual-only episodes.
        query_text: ``[Q, D_in]`` text features of the queries under the label-free (query) prompt.
        support_text_free: ``[N, K, D_in]`` text features of the support videos under the
            label-free (query) prompt, or None.
        query_labels: ``[Q]`` episode labels in ``0..N-1`` (training and evaluation), or None.
        class_ids: ``[N]`` global class index of each way in its split, or None.
        query_class_ids: ``[Q]`` global class index of each query (base-class losses), or None.
        class_anchors: ``[C, D_in]`` one text anchor per class of the split (base-class losses), or
            None.
    """

    support: Tensor
    query: Tensor
    support_text: Tensor | None = None
    query_text: Tensor | None = None
    support_text_free: Tensor | None = None
    query_labels: Tensor | None = None
    class_ids: Tensor | None = None
    query_class_ids: Tensor | None = None
    class_anchors: Tensor | None = None

    def __post_init__(self) -> None:
        check_episode(self.support, self.query)
        check_text(self.support, self.query, self.support_text, self.query_text, required=False)
        if self.support_text_free is not None:
            check_text(self.support, self.query, self.support_text_free, self.query_text, required=False)
        n_way, n_query = self.support.shape[0], self.query.shape[0]
        for name, tensor, size in (
            ("query_labels", self.query_labels, n_query),
            ("class_ids", self.class_ids, n_way),
            ("query_class_ids", self.query_class_ids, n_query),
        ):
            if tensor is not None and (tensor.dim() != 1 or tensor.shape[0] != size):
                raise InputError(f"{name} must have shape [{size}], got {fmt_shape(tensor)}")
        if (
            self.query_labels is not None
            and self.query_labels.numel()
            and (int(self.query_labels.min()) < 0 or int(self.query_labels.max()) >= n_way)
        ):
            raise InputError(f"query_labels must lie in 0..{n_way - 1}, got {self.query_labels.tolist()}")
        if self.class_anchors is not None and self.class_anchors.dim() != 2:
            raise InputError(f"class_anchors must be [C, D_in], got {fmt_shape(self.class_anchors)}")

    @property
    def n_way(self) -> int:
        return self.support.shape[0]

    @property
    def n_shot(self) -> int:
        return self.support.shape[1]

    @property
    def n_queries_total(self) -> int:
        """Q, the queries of the whole episode (an ``EpisodeSampler``'s ``n_query`` is per class)."""
        return self.query.shape[0]

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Episode:
        """A copy on ``device``; floating tensors are also cast to ``dtype`` (labels keep theirs)."""
        moved = {}
        for field in fields(self):
            tensor = getattr(self, field.name)
            if tensor is not None:
                cast = dtype if (dtype is not None and tensor.is_floating_point()) else None
                tensor = tensor.to(device=device, dtype=cast)
            moved[field.name] = tensor
        return replace(self, **moved)


def score_episode(metric: nn.Module, episode: Episode) -> Tensor:
    """Run any metric on an episode, passing only what it reads.

    What the metric is given follows its declared ``MetricCapabilities``: visual-only metrics get
    ``(support, query)``; metrics declared ``uses_text`` also get the support and query text; those
    declared ``uses_label_free_support`` also get ``support_text_free``.

    Returns:
        ``[Q, N]`` logits.
    """
    capabilities = metric_capabilities(metric)
    if not capabilities.uses_text:
        return metric(episode.support, episode.query)
    kwargs = {"support_text": episode.support_text, "query_text": episode.query_text}
    if capabilities.uses_label_free_support:
        kwargs["support_text_free"] = episode.support_text_free
    return metric(episode.support, episode.query, **kwargs)


def episode_losses(metric: nn.Module, episode: Episode) -> dict[str, Tensor]:
    """Named loss terms of one episode; the trainer weights, sums and logs them.

    A metric declared ``owns_losses`` supplies its own terms with ``losses(episode) -> dict[str,
    Tensor]`` (the FSAR-LLaVA head does); any other metric gets ``{"episode_ce": cross-entropy of its
    logits}``.

    Raises:
        ValueError: the episode has no ``query_labels``.
    """
    if episode.query_labels is None:
        raise InputError("episode_losses needs an episode with query_labels")
    if metric_capabilities(metric).owns_losses:
        return metric.losses(episode)  # type: ignore[operator]
    return {"episode_ce": nn.functional.cross_entropy(score_episode(metric, episode), episode.query_labels)}
