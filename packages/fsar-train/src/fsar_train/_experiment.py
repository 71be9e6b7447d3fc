"""The experiment runner: one configuration end to end, into one run folder (``fsar_train._layout``).

``run_experiment`` is what ``fsar-train run`` and ``uv run apps/train`` both call:

1. splits → feature sources (the ``mllm`` source extracts what its cache lacks);
2. train ``config.metric`` on meta-train with meta-val selection (resuming from ``last.pt``), and
   each of ``eval.trained_baselines`` (``trx``) the same way in ``baselines/<name>/``; with
   ``train.per_shot``, train both again at every other evaluated shot count K (``episodes.n_shot =
   K``, nothing else changed) in ``shot<K>/`` and ``baselines/<name>/shot<K>/``;
3. evaluate, on the saved test episodes that every method shares (one list per shot count): the
   method (its ``eval.checkpoint``), the test-time ablations of an FSAR-LLaVA head
   (``eval.head_ablations``: same weights, one MPMM switch), the parameter-free baselines
   (``eval.baselines``) and the trained baselines; at K shots the trained ones are the models
   trained at K when the run trains per shot, else the ones trained at ``episodes.n_shot``;
4. write ``results.json`` (with per-episode accuracies, for paired comparisons), the plots, and
   return the results. Under torchrun every rank trains (data parallel); rank 0 alone evaluates
   and writes, the other ranks return their training summaries with no results.

A folder whose ``results.json`` was written for the same config is read back instead of evaluated
again (``force=True`` re-evaluates; training resumes or is skipped when finished either way).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from fsar_features import atomic_write_json
from fsar_metric import FSARLLaVA, ablation, create_metric
from fsar_metric.errors import InputError, MissingFileError
from fsar_train._config import (
    COSMETIC_KEYS,
    ExperimentConfig,
    MetricConfig,
    config_diff,
    config_from_dict,
    config_to_dict,
)
from fsar_train._datasets import load_splits
from fsar_train._episodes import EpisodeList
from fsar_train._evaluate import MethodResult, evaluate_methods
from fsar_train._features import FeatureSource
from fsar_train._layout import RunLayout
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
    text_dim,
    train,
)

__all__ = [
    "RESULTS_FORMAT",
    "ExperimentResult",
    "baseline_config",
    "evaluate_run",
    "load_sources",
    "per_shot_name",
    "read_results",
    "run_experiment",
    "shot_config",
    "trained_shots",
]

logger = logging.getLogger(__name__)

RESULTS_FORMAT = "fsar-results/2"


@dataclass
class ExperimentResult:
    """What ``run_experiment`` / ``evaluate_run`` return.

    Attributes:
        run_dir: the run folder.
        results: shots K → method name → result on the saved test episodes (every method the same episodes).
        trained: trained method name → its training summary (steps, best step, best meta-val accuracy);
            with ``train.per_shot`` also ``per_shot_name(name, K)`` (``"trx@5shot"``) → the summary of
            the training at K shots.
        reused: True when the results were read back from an earlier run with the same config.
        sources: the feature sources the evaluation read (split name → source), so a caller that goes
            on with the same data (the apps' store) need not load and check the cache again; empty
            when the results were read back.
    """

    run_dir: Path
    results: dict[int, dict[str, MethodResult]]
    trained: dict[str, dict[str, Any]] = field(default_factory=dict)
    reused: bool = False
    sources: dict[str, FeatureSource] = field(default_factory=dict)

    @property
    def layout(self) -> RunLayout:
        return RunLayout(self.run_dir)


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


def baseline_config(config: ExperimentConfig, name: str) -> ExperimentConfig:
    """The config a trained baseline runs with: the method's data, features, episodes and training,
    the metric ``name`` with widths from the feature width, and no evaluation extras."""
    return dataclasses.replace(
        config,
        metric=MetricConfig(name=name),
        eval=dataclasses.replace(config.eval, baselines=(), trained_baselines=(), head_ablations=()),
    )


def shot_config(config: ExperimentConfig, shots: int) -> ExperimentConfig:
    """The config of the training at ``shots`` shots: ``episodes.n_shot = shots``, everything else
    (seeds included) unchanged; ``config`` itself when it already trains at ``shots``."""
    if shots == config.episodes.n_shot:
        return config
    return dataclasses.replace(config, episodes=dataclasses.replace(config.episodes, n_shot=shots))


def trained_shots(config: ExperimentConfig) -> tuple[int, ...]:
    """The shot counts a run trains at: ``episodes.n_shot`` first, then, with ``train.per_shot``,
    every other K of ``eval.shots`` in increasing order.

    Example:
        >>> from fsar_train._config import apply_overrides
        >>> trained_shots(ExperimentConfig())
        (1,)
        >>> trained_shots(apply_overrides(ExperimentConfig(), ["train.per_shot=true", "eval.shots=[5, 1, 3]"]))
        (1, 3, 5)
    """
    n_shot = config.episodes.n_shot
    extra = sorted(set(config.eval.shots) - {n_shot}) if config.train.per_shot else []
    return (n_shot, *extra)


def per_shot_name(name: str, shots: int) -> str:
    """The ``trained`` key of ``name``'s training at ``shots`` shots (a per-shot run's extra trainings).

    Example:
        >>> per_shot_name("trx", 5)
        'trx@5shot'
    """
    return f"{name}@{shots}shot"


@dataclass(frozen=True)
class _Training:
    """One training of a run.

    Attributes:
        key: its name in ``results.json``'s ``trained``: the metric name, or ``per_shot_name(name, K)``.
        config: the config it trains with (its ``metric`` and ``episodes.n_shot``).
        folder: where it trains (``config.toml``, checkpoints, history, curves).
    """

    key: str
    config: ExperimentConfig
    folder: RunLayout


def _model_shots(config: ExperimentConfig, shots: int) -> int:
    """The shot count of the training whose models score ``shots``-shot episodes: ``shots`` when the
    run trains per shot, else ``episodes.n_shot``."""
    return shots if config.train.per_shot else config.episodes.n_shot


def _model_of(config: ExperimentConfig, layout: RunLayout, name: str, shots: int) -> tuple[ExperimentConfig, RunLayout]:
    """The config and folder of the trained metric ``name`` (the method or a trained baseline) that
    scores ``shots``-shot episodes (trained at ``_model_shots(config, shots)``)."""
    n_shot, k = config.episodes.n_shot, _model_shots(config, shots)
    sub = shot_config(config, k)
    if name == config.metric.name:
        return sub, layout.for_shot(k, trained_shots=n_shot)
    return baseline_config(sub, name), layout.baseline(name).for_shot(k, trained_shots=n_shot)


def _trainings(config: ExperimentConfig, layout: RunLayout) -> list[_Training]:
    """Every training of a run, in order: the method and the trained baselines at ``episodes.n_shot``,
    then (``train.per_shot``) both at each other evaluated K."""
    names = [config.metric.name, *(n for n in config.eval.trained_baselines if n != config.metric.name)]
    out = []
    for k in trained_shots(config):
        for name in names:
            sub, folder = _model_of(config, layout, name, k)
            out.append(_Training(name if k == config.episodes.n_shot else per_shot_name(name, k), sub, folder))
    return out


def _train_summary(result: TrainResult) -> dict[str, Any]:
    return {
        "steps": result.steps,
        "best_step": result.best_step,
        "best_val_accuracy": result.best_accuracy,
        "trained": result.trained,
    }


def read_results(run_dir: str | Path) -> dict[str, Any]:
    """The parsed ``results.json`` of a run folder.

    Raises:
        FileNotFoundError: the folder has no results (the run has not finished).
        ValueError: a results file of another format.
    """
    path = RunLayout(Path(run_dir)).results
    if not path.is_file():
        raise MissingFileError(f"{Path(run_dir)} has no {path.name}; run the experiment there first")
    payload = json.loads(path.read_text())
    if payload.get("format") != RESULTS_FORMAT:
        raise InputError(f"{path} is in format {payload.get('format')!r}, not {RESULTS_FORMAT!r}; run it again")
    return payload


def _same_config(saved: Any, config: ExperimentConfig) -> bool:
    """Whether a results file's ``config`` is ``config``; keys added to the config since the file was
    written read as their defaults (as an older ``config.toml`` does)."""
    if not isinstance(saved, dict):
        return False
    try:
        return not config_diff(config_from_dict(saved), config, ignore=COSMETIC_KEYS)
    except (ValueError, TypeError):  # a key this version does not know, or a value of another type
        return False


def _results_from(payload: Mapping[str, Any]) -> dict[int, dict[str, MethodResult]]:
    return {
        int(k): {name: MethodResult.from_dict(r) for name, r in by_method.items()}
        for k, by_method in payload["results"].items()
    }


def run_experiment(
    config: ExperimentConfig,
    run_dir: str | Path,
    *,
    sources: Mapping[str, FeatureSource] | None = None,
    progress: bool = True,
    force: bool = False,
) -> ExperimentResult:
    """Train the method and its trained baselines, evaluate everything on the same saved episodes.

    Args:
        config: the experiment.
        run_dir: the run folder; one made with a different config is refused (``eval.*`` may differ).
        sources: ``train`` / ``val`` / ``test`` feature sources; by default built from ``config``.
        progress: draw progress bars.
        force: evaluate again even when ``results.json`` holds this config's results.

    Raises:
        ValueError: a folder made with another config (the message lists the differences), or a
            per-shot training (``train.per_shot``) that cannot run at its shot count.
    """
    layout = RunLayout(prepare_run_dir(run_dir, config))
    if not force and layout.results.is_file():
        payload = json.loads(layout.results.read_text())
        if payload.get("format") == RESULTS_FORMAT and _same_config(payload.get("config"), config):
            logger.info("results of the earlier run in %s (same config)", layout.root)
            return ExperimentResult(layout.root, _results_from(payload), payload.get("trained", {}), reused=True)
    splits: dict[str, DatasetSplit] = {}
    if sources is None:
        sources, splits = load_sources(config, layout.root, progress=progress)
    trained: dict[str, TrainResult] = {}
    trainings = _trainings(config, layout)
    for job in trainings:  # every rank runs every training, in the same order (torchrun)
        try:
            trained[job.key] = train(job.config, sources["train"], sources["val"], job.folder.root, progress=progress)
        except ValueError as err:
            shots = job.config.episodes.n_shot
            if shots == config.episodes.n_shot:
                raise
            raise InputError(f"train.per_shot: training {job.config.metric.name} at {shots} shots: {err}") from err
    summaries = {key: _train_summary(r) for key, r in trained.items()}
    if int(os.environ.get("RANK", "0")) != 0:  # data parallel (torchrun): rank 0 evaluates and writes
        return ExperimentResult(layout.root, {}, summaries)
    for job in trainings:  # one plot per training folder
        result = trained[job.key]
        if result.history:
            plot_training_curves(result.history, result.val_history, job.folder.training_curves)
    return evaluate_run(
        config,
        layout.root,
        sources=sources,
        splits=splits,
        progress=progress,
        trained=summaries,
    )


def _load_trained(config: ExperimentConfig, folder: RunLayout, dims: tuple[int, int | None]) -> nn.Module:
    metric = build_metric(config, *dims)
    checkpoint = folder.checkpoint(config.eval.checkpoint)
    if checkpoint.exists():
        load_checkpoint_weights(metric, checkpoint)
    elif any(p.requires_grad for p in metric.parameters()):
        raise MissingFileError(f"{checkpoint} does not exist: train this run first")
    return metric.eval()


def _methods(
    config: ExperimentConfig, layout: RunLayout, dims: tuple[int, int | None], shots: int
) -> dict[str, nn.Module]:
    """Table name → module for ``shots``-shot episodes, in table order: the method, its ablations, the
    baselines, the trained baselines (trained ones from ``_model_of``: at ``shots`` when per shot)."""
    head = _load_trained(*_model_of(config, layout, config.metric.name, shots), dims)
    methods: dict[str, nn.Module] = {config.metric.name: head}
    if isinstance(head, FSARLLaVA):
        for name in config.eval.head_ablations:
            variant = FSARLLaVA(ablation(head.config, name))
            variant.load_state_dict(head.state_dict())
            methods[f"{config.metric.name} ({name.replace('_', ' ')})"] = variant.eval()
    for name in config.eval.baselines:
        methods.setdefault(name, create_metric(name))
    for name in config.eval.trained_baselines:
        if name not in methods:
            methods[name] = _load_trained(*_model_of(config, layout, name, shots), dims)
    return methods


def evaluate_run(
    config: ExperimentConfig,
    run_dir: str | Path,
    *,
    sources: Mapping[str, FeatureSource] | None = None,
    splits: Mapping[str, DatasetSplit] | None = None,
    progress: bool = True,
    trained: Mapping[str, Mapping[str, Any]] | None = None,
) -> ExperimentResult:
    """Evaluate a trained run folder: every method of ``_methods`` on the saved test episodes
    (sampled and saved on first use), then ``results.json`` and the plots. With ``train.per_shot``
    the K-shot episodes are scored by the models trained at K (``shot<K>/``).

    Raises:
        FileNotFoundError: a trained method has no checkpoint yet (per shot: at a shot count it
            evaluates).
    """
    layout = RunLayout(prepare_run_dir(run_dir, config))
    if sources is None:
        sources, splits = load_sources(config, layout.root, progress=progress, splits=("test",))
    test = sources["test"]
    ec, ev = config.episodes, config.eval
    device = resolve_device(config.train.device)
    dims = (feature_dim(test), text_dim(test))
    methods: dict[str, nn.Module] = {}
    methods_shots = 0  # the training shot count of `methods` (one set for every K unless per shot)
    results: dict[int, dict[str, MethodResult]] = {}
    for shots in sorted({*ev.shots, ec.n_shot}):
        try:
            episodes = EpisodeList.load_or_sample(
                layout.test_episodes(ec.n_way, shots, ev.episodes, ev.seed),
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
        if _model_shots(config, shots) != methods_shots:
            methods_shots = _model_shots(config, shots)
            methods = _methods(config, layout, dims, methods_shots)
        results[shots] = evaluate_methods(methods, test, episodes, device=device, progress=progress)
    main = results[ec.n_shot][config.metric.name]
    plot_confusion(
        main.confusion,
        list(test.class_names),
        layout.confusion(config.metric.name),
        title=f"{config.metric.name}, {ec.n_way}-way {ec.n_shot}-shot, test",
        max_labelled=ev.confusion_plot_max_classes,
    )
    plot_accuracy_vs_shots(results, layout.accuracy_vs_shots)
    if trained is None and layout.results.is_file():  # re-evaluation: keep what training reported
        trained = json.loads(layout.results.read_text()).get("trained", {})
    payload = {
        "format": RESULTS_FORMAT,
        "benchmark": config.data.benchmark,
        "protocol": {
            "n_way": ec.n_way,
            "n_query_per_class": ec.test_queries,
            "episodes": ev.episodes,
            "seed": ev.seed,
            "ci": "1.96 * std(ddof=0) / sqrt(N) of per-episode accuracies, in percent",
            "model_selection": f"meta-val, {config.train.val_episodes} fixed episodes ({ev.checkpoint}.pt)",
        },
        "features": {"source": config.features.source, "model": config.features.model},
        "trained": dict(trained or {}),
        "missing_videos": {
            name: s.report.summary()
            for name, s in (splits or {}).items()
            if s.report is not None and s.report.n_missing
        },
        "results": {
            str(k): {name: r.to_dict(with_episodes=True) for name, r in by_method.items()}
            for k, by_method in results.items()
        },
        "config": config_to_dict(config),
    }
    atomic_write_json(layout.results, payload, indent=None)
    return ExperimentResult(layout.root, results, dict(trained or {}), sources=dict(sources))
