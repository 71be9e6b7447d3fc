"""The ``mllm`` feature source: a frozen multimodal LLM's features, through the fsar-features cache.

For each split the source extracts what is missing (resumable: videos already in the cache are
skipped) with the configured backend, the label-free query prompt for every video and the
label-aware support prompt of its class, then serves the cache as a ``FeatureSource``. One cache
holds every split of a run, so the meta-train, meta-val and meta-test extractions share it.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
from collections.abc import Sequence
from pathlib import Path

from torch import Tensor

from fsar_features import ExtractionConfig, FeatureCache, VideoItem, backend_for_model, extract_features
from fsar_metric.errors import InputError
from fsar_prompts import list_benchmarks, scenario_for
from fsar_train._config import ExperimentConfig, FeatureConfig
from fsar_train._features import ListedVideos, TextPrompt, check_text_prompt, missing_prompt
from fsar_train._sources import register_feature_source
from fsar_train._splits import DatasetSplit

__all__ = [
    "CachedFeatures",
    "backend_kwargs",
    "builtin_model",
    "extraction_config",
    "list_builtin_models",
    "mllm_cache_dir",
    "resolve_backend",
]

#: Models shipped as package data (``fsar_train/models/<name>``), named in configs as ``builtin:<name>``.
BUILTIN_PREFIX = "builtin:"
_MODELS = Path(__file__).parent / "models"

logger = logging.getLogger(__name__)

#: The fsar-features cache's text role (its on-disk name) of each ``TextPrompt``.
CACHE_ROLE_OF_PROMPT: dict[TextPrompt, str] = {"label_aware": "support", "label_free": "query"}

#: The source's ``support_prompt`` of each ``features.support_prompt`` config value.
SUPPORT_PROMPT_OF_CONFIG: dict[str, TextPrompt] = {"label": "label_aware", "label_free": "label_free"}


class CachedFeatures(ListedVideos):
    """A ``FeatureSource`` over the videos of one split that are in a feature cache.

    Args:
        cache: an open ``FeatureCache``.
        video_ids: ``[V]`` the split's videos (all must be in the cache).
        labels: ``[V]`` class indices into ``class_names``.
        class_names: ``[C]`` the split's class names.
        support_prompt: the prompt whose text the support videos carry in an episode:
            ``label_aware``, or ``label_free`` (the ablation where the support prompt omits the class
            name). It only sets the source's ``support_prompt``: ``text(p, prompt)`` always reads the
            text ``prompt`` made (``label_aware``: cache role ``support``; ``label_free``: cache role
            ``query``), whatever the support prompt.
    """

    def __init__(
        self,
        cache: FeatureCache,
        video_ids: Sequence[str],
        labels: Sequence[int],
        class_names: Sequence[str],
        *,
        support_prompt: TextPrompt = "label_aware",
    ) -> None:
        self._support_prompt = check_text_prompt(support_prompt, "support_prompt")
        missing = sorted(set(video_ids) - set(cache.video_ids))
        if missing:
            raise InputError(f"{len(missing)} videos are not in the feature cache {cache.root}, e.g. {missing[:3]}")
        self._cache = cache
        self._ids = list(video_ids)
        self._labels = [int(x) for x in labels]
        self._names = list(class_names)
        roles = frozenset(cache.recipe.roles)
        self._prompts = frozenset(p for p, role in CACHE_ROLE_OF_PROMPT.items() if role in roles)

    @property
    def text_prompts(self) -> frozenset[str]:
        return self._prompts

    @property
    def support_prompt(self) -> TextPrompt:
        return self._support_prompt

    def visual(self, positions: Sequence[int]) -> Tensor:
        """``[B, T, D]`` visual features (cache dtype)."""
        return self._cache.visual([self._ids[p] for p in positions])

    def text(self, positions: Sequence[int], prompt: TextPrompt) -> Tensor:
        """``[B, D]`` text features made with ``prompt`` (cache dtype)."""
        if prompt not in self._prompts:
            raise missing_prompt(prompt, self._prompts)
        return self._cache.text([self._ids[p] for p in positions], role=CACHE_ROLE_OF_PROMPT[prompt])


def _model_folder(model: str) -> str:
    """A ``builtin:<name>`` model's shipped folder; any other model as given."""
    return str(builtin_model(model)[0]) if model.startswith(BUILTIN_PREFIX) else model


def resolve_backend(config: ExperimentConfig) -> str:
    """The fsar-features backend of a run: ``features.backend``, or for ``auto`` the one that the
    checkpoint's own ``config.json`` names (its ``model_type``), never a guess from the model's name.

    Raises:
        FileNotFoundError: ``auto`` and the checkpoint (or its config.json) is not on this machine.
        ValueError: ``auto`` and the checkpoint's model type has no backend (the message lists them).
    """
    feats = config.features
    if feats.backend != "auto":
        return feats.backend
    if not feats.model:
        raise InputError("features.backend is 'auto' but features.model is empty: name a checkpoint (--model)")
    return backend_for_model(_model_folder(feats.model))


def mllm_cache_dir(config: ExperimentConfig) -> Path:
    """Where a run's MLLM features live: ``features.cache_dir``, or under ``data.root`` a folder named
    after the model and the decoding: ``mllm-<backend>[-<model folder>|-<builtin name>-<weights hash>]
    [-random<seed>][-<decoding>]``, so caches of different models or decodings never meet (a cache
    refuses features of another recipe)."""
    feats = config.features
    if feats.cache_dir:
        return Path(feats.cache_dir)
    name = f"mllm-{resolve_backend(config)}"
    if feats.model.startswith(BUILTIN_PREFIX):  # shipped weights can be re-made: their hash names the folder
        name += "-" + builtin_model(feats.model)[1].removeprefix(BUILTIN_PREFIX).replace("@", "-")
    elif feats.model:
        model = feats.model.rstrip("/\\")
        name += "-" + re.sub(r"[^A-Za-z0-9._-]+", "_", model.replace("\\", "/").rsplit("/", 1)[-1])
    if feats.random_init_seed >= 0:
        name += f"-random{feats.random_init_seed}"
    return Path(config.data.root) / (name + _decoding_suffix(config))


def _decoding_suffix(config: ExperimentConfig) -> str:
    """``-T16-layer1-centred-grid4-support_label-query_mean`` for what differs from the default decoding
    (so each decoding gets its own cache folder; the default keeps the plain name)."""
    feats, default = config.features, FeatureConfig()
    parts = []
    if feats.n_frames != default.n_frames:
        parts.append(f"T{feats.n_frames}")
    if feats.layers != default.layers:
        parts.append(f"layer{feats.layers}")
    if feats.temporal_centring:
        parts.append("centred")
    if feats.visual_pooling != default.visual_pooling:
        parts.append(feats.visual_pooling)
    if feats.support_text_pooling != default.support_text_pooling:
        parts.append(f"support_{feats.support_text_pooling}")
    if feats.query_text_pooling != default.query_text_pooling:
        parts.append(f"query_{feats.query_text_pooling}")
    return "".join(f"-{p}" for p in parts)


def _scenario(config: ExperimentConfig) -> str:
    if config.features.scenario:
        return config.features.scenario
    benchmark = config.data.benchmark
    if benchmark in list_benchmarks():
        return scenario_for(benchmark)
    logger.info("benchmark %r has no prompt scenario preset; using 'generic'", benchmark)
    return "generic"


def extraction_config(config: ExperimentConfig) -> ExtractionConfig:
    """The fsar-features extraction config of a run: one place, so the cache and later single-video
    extractions (the store's ``add`` and ``query``) share one recipe."""
    feats = config.features
    return ExtractionConfig(
        n_frames=feats.n_frames,
        layers=feats.layers,
        scenario=_scenario(config),
        batch_size=feats.batch_size,
        visual_pooling=feats.visual_pooling,
        temporal_centring=feats.temporal_centring,
        support_text_pooling=feats.support_text_pooling,
        query_text_pooling=feats.query_text_pooling,
    )


def list_builtin_models() -> list[str]:
    """Names of the models shipped with fsar-train (``builtin:<name>`` in ``features.model``)."""
    return sorted(p.name for p in _MODELS.iterdir() if (p / "config.json").is_file()) if _MODELS.is_dir() else []


def builtin_model(name: str) -> tuple[Path, str]:
    """The folder of a shipped model and a stable id for cache recipes: ``builtin:<name>@<sha256[:12]>``
    of its weights, so a cache made with other weights is never mixed in.

    Raises:
        ValueError: unknown name; the message lists the shipped ones.
    """
    name = name.removeprefix(BUILTIN_PREFIX)
    if name not in list_builtin_models():  # a name, never a path: "builtin:../../x" must not leave the package
        raise InputError(f"unknown builtin model {name!r}; shipped: {', '.join(list_builtin_models()) or 'none'}")
    folder = _MODELS / name
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise InputError(f"unknown builtin model {name!r}; shipped: {', '.join(list_builtin_models()) or 'none'}")
    stat = weights.stat()
    digest = _weights_digest(str(weights), stat.st_size, stat.st_mtime_ns)
    return folder, f"{BUILTIN_PREFIX}{name}@{digest}"


@functools.lru_cache(maxsize=16)
def _weights_digest(path: str, size: int, mtime_ns: int) -> str:
    """sha256[:12] of a weights file, computed once per (path, size, mtime): a run asks for it several
    times (backend, cache folder, recipe), and a rewritten file has a new size or mtime."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


def backend_kwargs(config: ExperimentConfig) -> dict[str, str | int]:
    """``create_backend`` arguments of a run: the model id or folder for real backends (``builtin:<name>``
    resolves to the shipped folder), the random-init seed of the random-weight ablation, and the run's
    device (``train.device`` applies to every stage; ``auto`` leaves the backend's own choice)."""
    feats = config.features
    kwargs: dict[str, str | int] = {}
    if config.train.device != "auto":
        kwargs["device"] = config.train.device
    if feats.model.startswith(BUILTIN_PREFIX):
        folder, model_id = builtin_model(feats.model)
        kwargs |= {"model": str(folder), "model_id": model_id}
    elif feats.model:
        kwargs["model"] = feats.model
    if feats.random_init_seed >= 0:
        kwargs["random_init_seed"] = feats.random_init_seed
    return kwargs


@register_feature_source("mllm")
def _mllm_source(split: DatasetSplit, config: ExperimentConfig) -> CachedFeatures:
    feats = config.features
    videos = [v for v in split.videos if v.path is not None]
    if len(videos) != len(split.videos):
        raise InputError(f"split {split.name!r} has videos without a file; the mllm source reads files")
    items = [VideoItem(v.video_id, str(v.path), split.class_names[v.label]) for v in videos]
    cache_dir = mllm_cache_dir(config)
    summary = extract_features(
        items,
        cache_dir,
        backend=resolve_backend(config),
        config=extraction_config(config),
        backend_kwargs=backend_kwargs(config),
        progress=feats.progress,
    )
    if summary.n_refreshed:
        logger.warning(
            "%s: %d cached videos had features made for another label or prompt and were extracted again",
            split.name,
            summary.n_refreshed,
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
    return CachedFeatures(
        cache,
        [v.video_id for v in kept],
        [v.label for v in kept],
        split.class_names,
        support_prompt=SUPPORT_PROMPT_OF_CONFIG[feats.support_prompt],
    )
