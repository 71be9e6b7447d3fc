"""The ``mllm`` feature source: a frozen multimodal LLM's features, through the fsar-features cache.

For each split the source extracts what is missing (resumable: videos already in the cache are
skipped) with the configured backend, the label-free query prompt for every video and the
label-aware support prompt of its class, then serves the cache as a ``FeatureSource``. One cache
holds every split of a run, so the meta-train, meta-val and meta-test extractions share it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from torch import Tensor

from fsar_features import ExtractionConfig, FeatureCache, VideoItem, extract_features
from fsar_prompts import list_benchmarks, scenario_for
from fsar_train._config import ExperimentConfig
from fsar_train._features import TextRole
from fsar_train._sources import register_feature_source
from fsar_train._splits import DatasetSplit

__all__ = ["CachedFeatures", "backend_kwargs", "extraction_config", "mllm_cache_dir"]

logger = logging.getLogger(__name__)


class CachedFeatures:
    """A ``FeatureSource`` over the videos of one split that are in a feature cache.

    Args:
        cache: an open ``FeatureCache``.
        video_ids: ``[V]`` the split's videos (all must be in the cache).
        labels: ``[V]`` class indices into ``class_names``.
        class_names: ``[C]`` the split's class names.
    """

    def __init__(
        self, cache: FeatureCache, video_ids: Sequence[str], labels: Sequence[int], class_names: Sequence[str]
    ) -> None:
        missing = sorted(set(video_ids) - set(cache.video_ids))
        if missing:
            raise ValueError(f"{len(missing)} videos are not in the feature cache {cache.root}, e.g. {missing[:3]}")
        self._cache = cache
        self._ids = list(video_ids)
        self._labels = [int(x) for x in labels]
        self._names = list(class_names)
        self._roles = frozenset(cache.recipe.roles)

    @property
    def video_ids(self) -> list[str]:
        return self._ids

    @property
    def labels(self) -> list[int]:
        return self._labels

    @property
    def class_names(self) -> list[str]:
        return self._names

    @property
    def text_roles(self) -> frozenset[str]:
        return self._roles

    def visual(self, positions: Sequence[int]) -> Tensor:
        """``[B, T, D]`` visual features (cache dtype)."""
        return self._cache.visual([self._ids[p] for p in positions])

    def text(self, positions: Sequence[int], role: TextRole) -> Tensor:
        """``[B, D]`` text features under the prompt ``role``."""
        if role not in self._roles:
            raise KeyError(f"the cache has no {role!r} text; roles: {sorted(self._roles)}")
        return self._cache.text([self._ids[p] for p in positions], role=role)


def mllm_cache_dir(config: ExperimentConfig) -> Path:
    """Where a run's MLLM features live: ``features.cache_dir`` or ``<data.root>/mllm-<backend>``."""
    feats = config.features
    return Path(feats.cache_dir) if feats.cache_dir else Path(config.data.root) / f"mllm-{feats.backend}"


def _scenario(config: ExperimentConfig) -> str:
    if config.features.scenario:
        return config.features.scenario
    benchmark = config.data.benchmark
    return scenario_for(benchmark) if benchmark in list_benchmarks() else "generic"


def extraction_config(config: ExperimentConfig) -> ExtractionConfig:
    """The fsar-features extraction config of a run: one place, so the cache and later single-video
    extractions (the store's ``add`` and ``query``) share one recipe."""
    feats = config.features
    return ExtractionConfig(
        n_frames=feats.n_frames, layers=feats.layers, scenario=_scenario(config), batch_size=feats.batch_size
    )


def backend_kwargs(config: ExperimentConfig) -> dict[str, str]:
    """``create_backend`` arguments of a run: the model id or folder for real backends."""
    return {"model": config.features.model} if config.features.model else {}


@register_feature_source("mllm")
def _mllm_source(split: DatasetSplit, config: ExperimentConfig) -> CachedFeatures:
    feats = config.features
    videos = [v for v in split.videos if v.path is not None]
    if len(videos) != len(split.videos):
        raise ValueError(f"split {split.name!r} has videos without a file; the mllm source reads files")
    items = [VideoItem(v.video_id, str(v.path), split.class_names[v.label]) for v in videos]
    cache_dir = mllm_cache_dir(config)
    summary = extract_features(
        items,
        cache_dir,
        backend=feats.backend,
        config=extraction_config(config),
        backend_kwargs=backend_kwargs(config),
        progress=feats.progress,
    )
    failed = {f.video_id for f in summary.failures}
    if failed:
        logger.warning(
            "%d of %d %s videos could not be read and are left out: %s",
            len(failed),
            len(items),
            split.name,
            ", ".join(sorted(failed)[:5]),
        )
    kept = [v for v in videos if v.video_id not in failed]
    cache = FeatureCache.open(cache_dir)
    return CachedFeatures(cache, [v.video_id for v in kept], [v.label for v in kept], split.class_names)
