"""The Episode container and the score / loss entry points trainers use."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fsar_metric import METRICS, Episode, create_metric, episode_losses, register_metric, score_episode


def _episode(**overrides) -> Episode:
    gen = torch.Generator().manual_seed(0)
    fields = {
        "support": torch.randn(3, 2, 5, 8, generator=gen),
        "query": torch.randn(4, 5, 8, generator=gen),
        "support_text": torch.randn(3, 2, 8, generator=gen),
        "query_text": torch.randn(4, 8, generator=gen),
        "query_labels": torch.tensor([0, 2, 1, 2]),
    }
    fields.update(overrides)
    return Episode(**fields)


def test_sizes_are_read_from_the_tensors():
    ep = _episode()
    assert (ep.n_way, ep.n_shot, ep.n_queries_total) == (3, 2, 4)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"support_text": torch.randn(3, 8)}, r"support_text must be \[N, K, D_t\]"),
        ({"query_text": torch.randn(5, 8)}, r"query_text must be \[Q, D_t\] matching query \[4, 5, 8\]"),
        ({"support_text_free": torch.randn(3, 1, 8)}, r"support_text must be \[N, K, D_t\].*got \[3, 1, 8\]"),
        ({"query_labels": torch.tensor([0, 1, 2])}, r"query_labels must have shape \[4\], got \[3\]"),
        ({"query_labels": torch.tensor([0, 1, 2, 3])}, r"query_labels must lie in 0..2"),
        ({"class_ids": torch.tensor([4, 7])}, r"class_ids must have shape \[3\]"),
        ({"class_anchors": torch.randn(8)}, r"class_anchors must be \[C, D_in\]"),
        ({"query": torch.randn(4, 5, 9)}, r"feature width D differs"),
    ],
)
def test_inconsistent_fields_are_refused_on_construction(overrides, message):
    with pytest.raises(ValueError, match=message):
        _episode(**overrides)


def test_to_casts_features_but_keeps_label_dtype():
    ep = _episode().to("cpu", torch.float64)
    assert ep.support.dtype == torch.float64
    assert ep.query_text.dtype == torch.float64
    assert ep.query_labels.dtype == torch.long


def test_visual_metric_scores_ignore_text_and_default_loss_is_cross_entropy():
    ep = _episode()
    otam = create_metric("otam")
    logits = score_episode(otam, ep)
    torch.testing.assert_close(logits, otam(ep.support, ep.query))
    losses = episode_losses(otam, ep)
    assert set(losses) == {"episode_ce"}
    torch.testing.assert_close(losses["episode_ce"], nn.functional.cross_entropy(logits, ep.query_labels))


@pytest.mark.parametrize(
    ("declared", "given"),
    [
        ({}, set()),
        ({"uses_text": True}, {"support_text", "query_text"}),
        ({"uses_text": True, "uses_label_free_support": True}, {"support_text", "query_text", "support_text_free"}),
    ],
)
def test_text_reaches_only_metrics_that_declare_it(declared, given):
    seen = {}

    class Recorder(nn.Module):
        def forward(self, support, query, **text):
            seen.update(text)
            return torch.zeros(query.shape[0], support.shape[0])

    register_metric("test_recorder", **declared)(Recorder)
    try:
        free = torch.randn(3, 2, 8)
        ep = _episode(support_text_free=free)
        score_episode(Recorder(), ep)
    finally:
        METRICS.unregister("test_recorder")
    assert set(seen) == given
    for name in given:
        assert seen[name] is getattr(ep, name)


def test_losses_need_labels():
    with pytest.raises(ValueError, match="needs an episode with query_labels"):
        episode_losses(create_metric("proto"), _episode(query_labels=None))
