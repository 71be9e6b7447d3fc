"""Evaluation on a fixed episode list: mean accuracy ± 1.96·σ/√N, per-class accuracy, confusion matrix.

Every method runs on the same saved ``EpisodeList`` (docs/protocol.md, "Episodes"): 10,000 test
episodes by default, one query per class. The reported number is the mean of per-episode accuracies with the
95 % interval 1.96·σ/√N, σ the standard deviation of the per-episode accuracies with NumPy's default
ddof = 0, as in public FSAR code.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from rich.table import Table
from torch import Tensor, nn

from fsar_metric import PoolsPerVideo, metric_capabilities, score_episode
from fsar_metric.errors import InputError
from fsar_train._episodes import EpisodeList, video_list_hash
from fsar_train._features import FeatureSource, TextPrompt, build_episode
from fsar_train._progress import make_progress

__all__ = ["MethodResult", "evaluate_methods", "mean_ci", "results_table", "run_episodes", "uses_class_names"]

logger = logging.getLogger(__name__)


def mean_ci(accuracies: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Mean and 95 % half-width 1.96·σ/√N of per-episode accuracies (σ with ddof = 0).

    Example:
        >>> mean_ci([0.2, 0.4, 0.6, 0.8])
        (0.5, 0.21913...)
    """
    values = np.asarray(accuracies, dtype=np.float64)
    if values.size == 0:
        raise InputError("mean_ci needs at least one episode accuracy")
    return float(values.mean()), float(1.96 * values.std(ddof=0) / np.sqrt(values.size))


def uses_class_names(metric: nn.Module, source: FeatureSource) -> bool:
    """True when ``metric`` is declared to read text and the source's support videos carry label-aware
    text (made with the class name): privileged text compared with vision-only methods. A source whose
    ``support_prompt`` is ``label_free`` (the ablation) does not count."""
    return (
        metric_capabilities(metric).uses_text
        and source.support_prompt == "label_aware"
        and "label_aware" in source.text_prompts
    )


@dataclass(frozen=True)
class MethodResult:
    """One method's results on one episode list (accuracies in percent).

    Attributes:
        name: method name in the table.
        accuracy: mean per-episode accuracy, %.
        ci95: 1.96·σ/√N, %.
        n_episodes: N.
        n_way, n_shot, n_query: episode sizes (``n_query`` per class).
        uses_class_names: the method read label-aware support text.
        seconds: wall time of the evaluation.
        per_class_accuracy: class name → accuracy (%) over all its queries.
        confusion: ``[C, C]`` counts, row = true class, column = predicted class (split's class ids).
        episode_accuracies: ``[N]`` per-episode accuracies in [0, 1].
    """

    name: str
    accuracy: float
    ci95: float
    n_episodes: int
    n_way: int
    n_shot: int
    n_query: int
    uses_class_names: bool
    seconds: float
    per_class_accuracy: dict[str, float] = field(default_factory=dict)
    confusion: list[list[int]] = field(default_factory=list)
    episode_accuracies: tuple[float, ...] = ()

    def to_dict(self, *, with_episodes: bool = False) -> dict[str, Any]:
        out = {
            "name": self.name,
            "accuracy": self.accuracy,
            "ci95": self.ci95,
            "n_episodes": self.n_episodes,
            "n_way": self.n_way,
            "n_shot": self.n_shot,
            "n_query": self.n_query,
            "uses_class_names": self.uses_class_names,
            "seconds": self.seconds,
            "per_class_accuracy": self.per_class_accuracy,
            "confusion": self.confusion,
        }
        if with_episodes:
            out["episode_accuracies"] = list(self.episode_accuracies)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MethodResult:
        """Inverse of ``to_dict`` (per-episode accuracies when present)."""
        fields = {k: v for k, v in data.items() if k != "episode_accuracies"}
        return cls(**fields, episode_accuracies=tuple(data.get("episode_accuracies", ())))


def _encode_pool(metric: PoolsPerVideo, source: FeatureSource, device: torch.device | str) -> object:
    """``metric.encode_pool`` over every video of ``source``: visual, the support prompt's text (what
    ``build_episode`` gives the support videos) and the label-free text."""
    positions = list(range(len(source.video_ids)))
    prompts = source.text_prompts

    def text(prompt: TextPrompt) -> Tensor | None:
        return source.text(positions, prompt).to(device, torch.float32) if prompt in prompts else None

    visual = source.visual(positions).to(device, torch.float32)  # [V, T, D]
    return metric.encode_pool(visual, text(source.support_prompt), text("label_free"), chunk_size=256)


@torch.no_grad()
def run_episodes(
    metric: nn.Module,
    source: FeatureSource,
    episodes: EpisodeList,
    *,
    device: torch.device | str = "cpu",
    progress: bool = False,
    description: str = "eval",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Score every episode.

    Returns:
        ``(accuracies [E], true [E·Q], predicted [E·Q])``; the class arrays hold the split's class ids.
    """
    was_training = metric.training
    metric.eval()
    capabilities = metric_capabilities(metric)
    accuracies = np.empty(len(episodes), dtype=np.float64)
    true, predicted = [], []
    # Metrics declared pools_per_video (the FSAR-LLaVA head) encode every video of the split once
    # and score episodes from that pool; the result equals score_episode (tested in fsar-metric).
    pooling: PoolsPerVideo | None = metric if capabilities.pools_per_video else None  # type: ignore[assignment]
    pool = _encode_pool(pooling, source, device) if pooling is not None else None
    try:
        with make_progress(progress) as bar:
            task = bar.add_task(description, total=len(episodes), info="")
            for e, indices in enumerate(episodes.episodes):
                if pool is not None:
                    support_idx = torch.tensor(indices.support, device=device)  # [N, K]
                    query_idx = torch.tensor(list(indices.query), device=device)  # [Q]
                    prediction = pooling.score_pool(pool, support_idx, query_idx).argmax(-1).cpu()  # [Q]
                else:
                    # No class anchors: scoring never reads them.
                    episode = build_episode(source, indices, with_text=capabilities.uses_text, device=device)
                    prediction = score_episode(metric, episode).argmax(-1).cpu()  # [Q]
                labels = torch.tensor(indices.query_labels)
                accuracies[e] = float((prediction == labels).double().mean())
                class_ids = torch.tensor(indices.class_ids)
                true.append(class_ids[labels])
                predicted.append(class_ids[prediction])
                if e % 256 == 255 or e == len(episodes) - 1:
                    bar.update(task, completed=e + 1, info=f"{100 * accuracies[: e + 1].mean():.1f}%")
    finally:
        metric.train(was_training)
    return accuracies, torch.cat(true).numpy(), torch.cat(predicted).numpy()


def evaluate_methods(
    methods: Mapping[str, nn.Module],
    source: FeatureSource,
    episodes: EpisodeList,
    *,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> dict[str, MethodResult]:
    """Evaluate several methods on the same episodes.

    Args:
        methods: table name → metric module (trained or parameter-free).
        source: the test split's features.
        episodes: the fixed episode list (its video hash must match ``source``).

    Returns:
        name → result, in the order of ``methods``.
    """
    if episodes.video_hash != video_list_hash(source.video_ids, source.labels):
        raise InputError("the episode list was sampled from another video list than this feature source")
    names = list(source.class_names)
    n_classes = len(names)
    out = {}
    for name, metric in methods.items():
        metric.to(device)
        started = time.perf_counter()
        accuracies, true, predicted = run_episodes(
            metric, source, episodes, device=device, progress=progress, description=name
        )
        seconds = time.perf_counter() - started
        confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
        np.add.at(confusion, (true, predicted), 1)
        totals = confusion.sum(1)
        per_class = {names[c]: float(100 * confusion[c, c] / totals[c]) for c in range(n_classes) if totals[c] > 0}
        mean, ci = mean_ci(accuracies)
        out[name] = MethodResult(
            name=name,
            accuracy=100 * mean,
            ci95=100 * ci,
            n_episodes=len(episodes),
            n_way=episodes.n_way,
            n_shot=episodes.n_shot,
            n_query=episodes.n_query,
            uses_class_names=uses_class_names(metric, source),
            seconds=seconds,
            per_class_accuracy=per_class,
            confusion=confusion.tolist(),
            episode_accuracies=tuple(float(a) for a in accuracies),
        )
        logger.info(
            "%s: %.2f ± %.2f %% over %d episodes (%d-way %d-shot) in %.1f s",
            name,
            100 * mean,
            100 * ci,
            len(episodes),
            episodes.n_way,
            episodes.n_shot,
            seconds,
        )
    return out


def results_table(results: Mapping[int, Mapping[str, MethodResult]], title: str = "few-shot evaluation") -> Table:
    """A rich table: one row per method, one column per shot setting (mean ± CI)."""
    shots = sorted(results)
    table = Table(title=title)
    table.add_column("method")
    for k in shots:
        some = next(iter(results[k].values()))
        table.add_column(f"{some.n_way}-way {k}-shot", justify="right")
    table.add_column("episodes", justify="right")
    table.add_column("class names", justify="center")
    methods = list(dict.fromkeys(name for k in shots for name in results[k]))
    for name in methods:
        cells = []
        for k in shots:
            r = results[k].get(name)
            cells.append(f"{r.accuracy:.2f} ± {r.ci95:.2f}" if r else "–")
        any_result = next(results[k][name] for k in shots if name in results[k])
        table.add_row(name, *cells, f"{any_result.n_episodes:,}", "yes" if any_result.uses_class_names else "no")
    return table
