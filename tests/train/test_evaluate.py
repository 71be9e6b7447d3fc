"""Evaluation: the confidence interval formula, several methods on the same episodes, per-class results."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fsar_metric import METRICS, create_metric, register_metric
from fsar_train import (
    EpisodeList,
    TensorFeatures,
    evaluate_methods,
    mean_ci,
    plot_accuracy_vs_shots,
    plot_confusion,
    results_table,
)


def test_confidence_interval_is_1_96_sigma_over_sqrt_n_with_ddof_0():
    rng = np.random.default_rng(0)
    accuracies = rng.integers(0, 6, size=1000) / 5  # multiples of 0.2, as with Q = 5
    mean, ci = mean_ci(accuracies)
    n = len(accuracies)
    sigma = np.sqrt(((accuracies - accuracies.mean()) ** 2).sum() / n)  # ddof = 0
    assert mean == pytest.approx(accuracies.sum() / n, abs=1e-15)
    assert ci == pytest.approx(1.96 * sigma / np.sqrt(n), rel=1e-12)
    assert mean_ci([0.2, 0.4]) == pytest.approx((0.3, 1.96 * 0.1 / np.sqrt(2)))
    with pytest.raises(ValueError, match="at least one"):
        mean_ci([])


class _TextOnly(nn.Module):
    """Scores by support-text cosine: a method that reads label-aware support text (registered, with
    ``uses_text``, by the ``text_only`` fixture)."""

    def forward(self, support, query, *, support_text=None, query_text=None):
        prototypes = nn.functional.normalize(support_text.mean(1), dim=-1)  # [N, D]
        return nn.functional.normalize(query_text, dim=-1) @ prototypes.T  # [Q, N]


@pytest.fixture
def text_only():
    register_metric("test_text_only", uses_text=True)(_TextOnly)
    yield _TextOnly
    METRICS.unregister("test_text_only")


def test_several_methods_share_one_episode_list_and_report_per_class_results(trajectory_task, text_only):
    source = trajectory_task["test"]
    gen = torch.Generator().manual_seed(0)
    per_class = torch.randn(len(source.class_names), 16, generator=gen)
    text = per_class[torch.tensor(source.labels)] + 0.1 * torch.randn(len(source.labels), 16, generator=gen)
    source = TensorFeatures(
        source.visual(range(len(source.labels))),
        source.labels,
        label_aware_text=text,
        label_free_text=text + 0.1 * torch.randn(text.shape, generator=gen),
    )
    episodes = EpisodeList.sample(source.labels, source.video_ids, count=40, n_way=3, n_shot=1, n_query=1, seed=0)
    methods = {name: create_metric(name) for name in ("proto", "otam", "bimhm")} | {"text": _TextOnly()}
    results = evaluate_methods(methods, source, episodes)
    assert list(results) == ["proto", "otam", "bimhm", "text"]
    for result in results.values():
        assert result.n_episodes == 40
        assert len(result.episode_accuracies) == 40
        mean, ci = mean_ci(result.episode_accuracies)
        assert (result.accuracy, result.ci95) == pytest.approx((100 * mean, 100 * ci))
        confusion = np.array(result.confusion)
        assert confusion.shape == (6, 6)
        assert confusion.sum() == 40 * 3
        assert result.accuracy == pytest.approx(100 * np.trace(confusion) / confusion.sum())
        for c, name in enumerate(source.class_names):
            if confusion[c].sum():
                assert result.per_class_accuracy[name] == pytest.approx(100 * confusion[c, c] / confusion[c].sum())
    assert [r.uses_class_names for r in results.values()] == [False, False, False, True]
    # Text is the class vector plus small noise: the text method wins by construction.
    assert results["text"].accuracy == 100.0
    table = results_table({1: results})
    assert table.row_count == 4
    assert [c.header for c in table.columns][1] == "3-way 1-shot"


def test_evaluation_refuses_episodes_of_another_video_list(trajectory_task):
    train, test = trajectory_task["train"], trajectory_task["test"]
    episodes = EpisodeList.sample(train.labels, train.video_ids, count=5, n_way=3, n_shot=1, n_query=1, seed=0)
    with pytest.raises(ValueError, match="another video list"):
        evaluate_methods({"proto": create_metric("proto")}, test, episodes)


def test_plots_are_written_as_png(tmp_path, trajectory_task):
    source = trajectory_task["test"]
    episodes = EpisodeList.sample(source.labels, source.video_ids, count=5, n_way=3, n_shot=1, n_query=1, seed=0)
    results = evaluate_methods({"proto": create_metric("proto")}, source, episodes)
    for path in (
        plot_confusion(results["proto"].confusion, source.class_names, tmp_path / "c.png"),
        plot_accuracy_vs_shots({1: results}, tmp_path / "s.png"),
    ):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
