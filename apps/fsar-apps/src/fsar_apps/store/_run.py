"""A prototype store from a trained run: build it, calibrate its open-set threshold, evaluate it,
and turn new video files into prototypes and queries with the run's own feature recipe and head.

The command line (``fsar store …``) and the main job call these; they raise ``ValueError`` (or
``FileNotFoundError``) with one clear sentence for anything a user can fix.

A store holds prototypes of ``STORE_SHOTS`` (5) examples per action. Its head is the run's head
trained at that shot count when the run trained one per shot (``train.per_shot``: ``<run>/shot5/``
for a run trained at 1 shot), else the run's main head; every function here that loads the run
(``load_trained_run``) picks the same one, so prototypes added later match the store's recipe.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from fsar_apps.store._head import action_prototype, encode_query, head_fingerprint
from fsar_apps.store._schema import StoreRecipe
from fsar_apps.store._store import PrototypeStore, calibrate_threshold
from fsar_features import FeatureCache, FeatureExtractor, VideoFeatures, VideoReadError, create_backend
from fsar_metric import FSARLLaVA
from fsar_metric.errors import InputError, MissingFileError
from fsar_train import (
    ExperimentConfig,
    FeatureSource,
    RunLayout,
    backend_kwargs,
    build_metric,
    extraction_config,
    load_checkpoint_weights,
    load_config,
    load_sources,
    mllm_cache_dir,
    resolve_backend,
)

__all__ = [
    "STORE_SHOTS",
    "StoreEvaluation",
    "TrainedRun",
    "build_store_from_run",
    "calibrate_unknown_threshold",
    "evaluate_store",
    "extract_videos",
    "load_trained_run",
    "open_run_store",
    "store_checkpoint",
]


#: Examples per action behind a store's prototypes (``fsar store build``), and the shot count whose
#: per-shot head (``train.per_shot``) the store uses.
STORE_SHOTS = 5


@dataclass
class TrainedRun:
    """What a store needs from a run folder: its config, the trained head and the store recipe.

    Attributes:
        config: the run's config (its ``config.toml``).
        head: the trained head, in eval mode.
        recipe: the recipe of the run's store (features + this head).
        folder: the run folder (the store is ``<folder>/store``).
        checkpoint: the checkpoint the head was loaded from (``<folder>/shot<K>/best.pt`` for a
            per-shot head); None for a head built elsewhere.
    """

    config: ExperimentConfig
    head: FSARLLaVA
    recipe: StoreRecipe
    folder: Path
    checkpoint: Path | None = None

    @property
    def layout(self) -> RunLayout:
        return RunLayout(self.folder)


def store_checkpoint(layout: RunLayout, config: ExperimentConfig, shots: int = STORE_SHOTS) -> Path:
    """The checkpoint of the head a store of ``shots``-example prototypes uses: the head trained at
    ``shots`` (``<run>/shot<K>/``) when the run trains per shot and has that folder, else the run's
    main head (trained at ``episodes.n_shot``). Whether the file exists is the caller's check.
    """
    n_shot = config.episodes.n_shot
    own = layout.for_shot(shots, trained_shots=n_shot)
    if config.train.per_shot and own.config.is_file():
        return own.checkpoint(config.eval.checkpoint)
    return layout.checkpoint(config.eval.checkpoint)


def load_trained_run(run_dir: str | Path, *, shots: int = STORE_SHOTS) -> TrainedRun:
    """The trained FSAR-LLaVA head of a run folder, in eval mode, and the recipe of its store.

    The head is the one trained at ``shots`` shots when the run trained per shot
    (``store_checkpoint``), else the main head.

    Raises:
        ValueError: not a run folder, or a run of another metric or feature source.
        FileNotFoundError: the run has no checkpoint or feature cache yet.
    """
    layout = RunLayout(Path(run_dir))
    if not layout.config.is_file():
        raise InputError(f"{layout.root} is not a run folder (no {layout.config.name}); run `uv run apps/train` first")
    config = load_config(layout.config)
    if config.features.source != "mllm" or config.metric.name != "fsar_llava":
        raise InputError(
            f"the store needs a run of the fsar_llava head on mllm features; {layout.root} trained "
            f"{config.metric.name!r} on {config.features.source!r}"
        )
    cache = FeatureCache.open(mllm_cache_dir(config))
    checkpoint = store_checkpoint(layout, config, shots)
    if not checkpoint.is_file():
        raise MissingFileError(f"{checkpoint} does not exist: train the run first")
    head = build_metric(config, cache.visual_dim, cache.text_dim)
    if not isinstance(head, FSARLLaVA):  # the config check above makes this a bug, not a user error
        raise TypeError(f"build_metric gave {type(head).__name__} for metric 'fsar_llava'")
    load_checkpoint_weights(head, checkpoint)
    head.eval()
    recipe = StoreRecipe(
        feature_recipe=cache.recipe,
        head_hash=head_fingerprint(head),
        dim=head.config.dim,
        n_frames=config.features.n_frames,
        mpmm=head.config.mpmm,
    )
    return TrainedRun(config, head, recipe, layout.root, checkpoint)


def open_run_store(run: TrainedRun, uri: str | Path | None = None) -> PrototypeStore:
    """The run's store (``<run>/store`` unless ``uri``), created with the run's recipe if missing."""
    return PrototypeStore.open(uri or run.layout.store, run.recipe)


def _prototypes_of(run: TrainedRun, source: FeatureSource, positions: list[int]) -> tuple[Tensor, Tensor]:
    return action_prototype(
        run.head,
        source.visual(positions).float(),
        source.text(positions, source.support_prompt).float(),
        source.text(positions, "label_free").float(),
    )


def _query_of(run: TrainedRun, source: FeatureSource, position: int) -> tuple[Tensor, Tensor | None]:
    """A cached video as a store query: its frames and label-free text through the head's query side."""
    text = source.text([position], "label_free")[0].float()
    return encode_query(run.head, source.visual([position])[0].float(), text)


def build_store_from_run(
    run_dir: str | Path, *, sources: dict[str, FeatureSource] | None = None, shots: int = STORE_SHOTS
) -> PrototypeStore:
    """A store of every meta-test action of a run, each from its first ``shots`` test videos, with the
    open-set threshold calibrated on meta-val (``calibrate_unknown_threshold``). The head is the one
    trained at ``shots`` when the run trained per shot (``load_trained_run``)."""
    run = load_trained_run(run_dir, shots=shots)
    if not sources:
        sources, _ = load_sources(run.config, run.folder, progress=False)
    test = sources["test"]
    store = open_run_store(run)
    items = []
    for c, name in enumerate(test.class_names):
        positions = [p for p, label in enumerate(test.labels) if label == c][:shots]
        if positions:
            items.append((name, *_prototypes_of(run, test, positions), [test.video_ids[p] for p in positions]))
    store.add_many(items, tag=run.config.data.benchmark)
    store.optimize()
    if "val" in sources:
        threshold = calibrate_unknown_threshold(run, sources["val"], shots=shots)
        if threshold is not None:
            store.set_unknown_threshold(threshold)
    return store


def calibrate_unknown_threshold(run: TrainedRun, val: FeatureSource, *, shots: int = STORE_SHOTS) -> float | None:
    """The open-set threshold from meta-val: the first half of the val classes are stored (``shots``
    videos each), the other half play unknown actions; every other val video is a query.

    Returns:
        The threshold maximising TPR − FPR, or None when meta-val has fewer than 2 classes.
    """
    n_classes = len(val.class_names)
    if n_classes < 2:
        return None
    known = set(range((n_classes + 1) // 2))
    store = PrototypeStore.open("memory://", run.recipe)
    support: set[int] = set()
    items = []
    for c in sorted(known):
        positions = [p for p, label in enumerate(val.labels) if label == c][:shots]
        support.update(positions)
        items.append((val.class_names[c], *_prototypes_of(run, val, positions), [val.video_ids[p] for p in positions]))
    store.add_many(items)
    accepted, rejected = [], []
    for p, label in enumerate(val.labels):
        if p in support:
            continue
        frames, text = _query_of(run, val, p)
        best = store.query(frames, text, k=1, candidates=None, threshold=float("-inf"))  # the run's MPMM
        score = torch.tensor(best.confidence)
        if label in known and best.matches[0].action == val.class_names[label]:
            accepted.append(score)
        elif label not in known:
            rejected.append(score)
    if not accepted or not rejected:
        return None
    return calibrate_threshold(torch.stack(accepted), torch.stack(rejected))


def extract_videos(run: TrainedRun, videos: list[Path], label: str | None) -> list[VideoFeatures]:
    """MLLM features of video files with the run's backend and extraction config (its cache's recipe).

    Every file is checked before the model is loaded.

    Raises:
        FileNotFoundError: a path that is not a file.
        ValueError: a video that cannot be read, or a recipe that differs from the run's cache.
    """
    for path in videos:
        if not Path(path).is_file():
            raise MissingFileError(f"no video file at {path}")
    backend = create_backend(resolve_backend(run.config), **backend_kwargs(run.config))
    extractor = FeatureExtractor(backend, extraction_config(run.config))
    if extractor.recipe != run.recipe.feature_recipe:
        differences = "; ".join(
            f"{key}: {cache!r} (cache) vs {now!r} (now)"
            for key, (cache, now) in run.recipe.feature_recipe.diff(extractor.recipe).items()
        )
        raise InputError(
            "the videos would be extracted with another feature recipe than the run's cache; "
            f"differences: {differences}"
        )
    out = []
    for path in videos:
        try:
            out.append(extractor.extract(path, label=label, video_id=Path(path).stem))
        except VideoReadError as err:
            raise InputError(f"cannot read {path}: {err}") from None
    return out


@dataclass(frozen=True)
class StoreEvaluation:
    """Store classification of a split's videos (the store's own support videos left out)."""

    n_queries: int
    n_actions: int
    top1: float  # % of queries whose best match (before the open-set threshold) is their action
    topk: float  # % with their action among the k matches
    k: int
    unknown: float  # % the open-set threshold marks unknown
    top1_ci95: float


def evaluate_store(
    run: TrainedRun, store: PrototypeStore, source: Any, *, k: int = 5, tag: str | None = None
) -> StoreEvaluation:
    """Query every video of ``source`` (cached features) whose action is stored, except the videos the
    prototypes were built from; the ``k`` matches come from the same search + MPMM re-rank as ``query``.

    Raises:
        ValueError: no video of the split belongs to a stored action.
    """
    stored = {a.action: a for a in store.list(tag=tag)}
    support = {video for a in stored.values() for video in a.support_ids}
    hits1, hitsk, unknown = [], [], []
    for p, label in enumerate(source.labels):
        name = source.class_names[label]
        if name not in stored or source.video_ids[p] in support:
            continue
        frames, text = _query_of(run, source, p)
        result = store.query(frames, text, k=k, tag=tag, mpmm=run.head.config.mpmm)
        ranked = [m.action for m in result.matches]
        hits1.append(bool(ranked) and ranked[0] == name)
        hitsk.append(name in ranked)
        unknown.append(result.unknown)
    if not hits1:
        raise InputError("no video of the split belongs to a stored action (outside the support videos)")
    n = len(hits1)
    top1 = sum(hits1) / n
    return StoreEvaluation(
        n_queries=n,
        n_actions=len(stored),
        top1=100 * top1,
        topk=100 * sum(hitsk) / n,
        k=k,
        unknown=100 * sum(unknown) / n,
        top1_ci95=100 * 1.96 * (top1 * (1 - top1) / n) ** 0.5,
    )
