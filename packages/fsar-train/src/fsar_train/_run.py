"""One experiment end to end: splits → feature sources → training → evaluation → results and plots."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from fsar_metric import create_metric
from fsar_train._config import ExperimentConfig, config_to_dict
from fsar_train._datasets import load_splits
from fsar_train._episodes import EpisodeList
from fsar_train._evaluate import MethodResult, evaluate_methods
from fsar_train._features import FeatureSource
from fsar_train._io import atomic_write_json
from fsar_train._plots import plot_accuracy_vs_shots, plot_confusion, plot_training_curves
from fsar_train._sources import create_feature_source
from fsar_train._splits import DatasetSplit
from fsar_train._train import (
    TrainResult,
    build_metric,
    feature_dim,
    load_checkpoint_weights,
    prepare_run_dir,
    resolve_device,
    train,
)

__all__ = ["ExperimentResult", "evaluate_run", "load_sources", "run_experiment"]

logger = logging.getLogger(__name__)


@dataclass
class ExperimentResult:
    """What ``run_experiment`` / ``evaluate_run`` return.

    Attributes:
        run_dir: the run folder (``results.json`` and the plots are there).
        results: shots K → method name → result on the fixed test episodes.
        train: the training result, or None for ``evaluate_run``.
    """

    run_dir: Path
    results: dict[int, dict[str, MethodResult]]
    train: TrainResult | None = None


def load_sources(
    config: ExperimentConfig,
    run_dir: str | Path,
    *,
    progress: bool = True,
    splits: tuple[str, ...] = ("train", "val", "test"),
) -> tuple[dict[str, FeatureSource], dict[str, DatasetSplit]]:
    """The configured splits (all, or the named ones; missing-video lists go to ``run_dir``) and a
    feature source per split."""
    loaded = load_splits(config, splits=splits, report_dir=run_dir, progress=progress)
    sources = {name: create_feature_source(config.features.source, split, config) for name, split in loaded.items()}
    return sources, loaded


def run_experiment(
    config: ExperimentConfig,
    run_dir: str | Path,
    *,
    sources: Mapping[str, FeatureSource] | None = None,
    progress: bool = True,
) -> ExperimentResult:
    """Train ``config.metric`` (resuming if the run folder has a checkpoint), then evaluate it and the
    baselines on the fixed test episodes.

    Args:
        config: the experiment.
        run_dir: the run folder; one made with a different config is refused.
        sources: ``train`` / ``val`` / ``test`` feature sources; by default built from ``config.data``
            and ``config.features``.
        progress: draw progress bars.
    """
    run_dir = prepare_run_dir(run_dir, config)
    splits: dict[str, DatasetSplit] = {}
    if sources is None:
        sources, splits = load_sources(config, run_dir, progress=progress)
    result = train(config, sources["train"], sources["val"], run_dir, progress=progress)
    if result.history:
        plot_training_curves(result.history, result.val_history, run_dir / "training_curves.png")
    evaluated = evaluate_run(config, run_dir, sources=sources, progress=progress, splits=splits, trained=result)
    evaluated.train = result
    return evaluated


def evaluate_run(
    config: ExperimentConfig,
    run_dir: str | Path,
    *,
    sources: Mapping[str, FeatureSource] | None = None,
    progress: bool = True,
    splits: Mapping[str, DatasetSplit] | None = None,
    trained: TrainResult | None = None,
) -> ExperimentResult:
    """Evaluate a run's checkpoint (``eval.checkpoint``) and the baselines on the fixed test episodes.

    Writes ``test_episodes_<N>way_<K>shot_<count>_seed<seed>.json`` (reused when present), ``results.json``,
    ``episode_accuracies.json``, ``accuracy_vs_shots.png`` and ``confusion_<method>.png``.
    """
    run_dir = prepare_run_dir(run_dir, config)
    if sources is None:
        sources, splits = load_sources(config, run_dir, progress=progress)
    test = sources["test"]
    ec, ev = config.episodes, config.eval
    device = resolve_device(config.train.device)
    metric = build_metric(config, feature_dim(test))
    checkpoint = run_dir / f"{ev.checkpoint}.pt"
    if checkpoint.exists():
        load_checkpoint_weights(metric, checkpoint)
    elif any(p.requires_grad for p in metric.parameters()):
        raise FileNotFoundError(f"{checkpoint} does not exist: train this run first")
    methods: dict[str, nn.Module] = {config.metric.name: metric}
    for name in ev.baselines:
        if name not in methods:
            methods[name] = create_metric(name)
    results: dict[int, dict[str, MethodResult]] = {}
    for shots in sorted({*ev.shots, ec.n_shot}):
        try:
            episodes = EpisodeList.load_or_sample(
                run_dir / f"test_episodes_{ec.n_way}way_{shots}shot_{ev.episodes}_seed{ev.seed}.json",
                test.labels,
                test.video_ids,
                count=ev.episodes,
                n_way=ec.n_way,
                n_shot=shots,
                n_query=ec.test_queries,
                seed=ev.seed,
                split="test",
                class_names=test.class_names,
            )
        except ValueError as err:
            if shots == ec.n_shot:
                raise
            logger.warning("skipping %d-shot evaluation: %s", shots, err)
            continue
        results[shots] = evaluate_methods(methods, test, episodes, device=device, progress=progress)
    main = results[ec.n_shot][config.metric.name]
    plot_confusion(
        main.confusion,
        list(test.class_names),
        run_dir / f"confusion_{config.metric.name}.png",
        title=f"{config.metric.name}, {ec.n_way}-way {ec.n_shot}-shot, test",
        max_labelled=ev.confusion_plot_max_classes,
    )
    plot_accuracy_vs_shots(results, run_dir / "accuracy_vs_shots.png")
    payload = {
        "format": "fsar-results/1",
        "benchmark": config.data.benchmark,
        "protocol": {
            "n_way": ec.n_way,
            "n_query_per_class": ec.test_queries,
            "episodes": ev.episodes,
            "seed": ev.seed,
            "ci": "1.96 * std(ddof=0) / sqrt(N) of per-episode accuracies, in percent",
            "model_selection": f"meta-val, {config.train.val_episodes} fixed episodes ({ev.checkpoint}.pt)",
        },
        "train": None
        if trained is None
        else {
            "steps": trained.steps,
            "best_step": trained.best_step,
            "best_val_accuracy": trained.best_accuracy,
            "trained": trained.trained,
        },
        "missing_videos": {
            name: s.report.summary()
            for name, s in (splits or {}).items()
            if s.report is not None and s.report.n_missing
        },
        "results": {str(k): {name: r.to_dict() for name, r in by_method.items()} for k, by_method in results.items()},
        "config": config_to_dict(config),
    }
    atomic_write_json(run_dir / "results.json", payload)
    atomic_write_json(
        run_dir / "episode_accuracies.json",
        {str(k): {n: list(r.episode_accuracies) for n, r in m.items()} for k, m in results.items()},
        indent=None,
    )
    return ExperimentResult(run_dir, results)
