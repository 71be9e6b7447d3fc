"""ProtoNet / TSN mean pooling against direct formulas."""

from __future__ import annotations

import pytest
import torch

from fsar_metric import ProtoNet


def test_cosine_prototype_matches_the_formula(episode):
    ep = episode(dtype=torch.float64)
    q = ep.query.mean(1)  # [Q, D]
    p = ep.support.mean((1, 2))  # [N, D]
    expected = torch.nn.functional.cosine_similarity(q[:, None], p[None], dim=-1)
    torch.testing.assert_close(ProtoNet()(ep.support, ep.query), expected)


def test_squared_euclidean_is_the_negative_squared_distance(episode):
    ep = episode(dtype=torch.float64)
    expected = -torch.cdist(ep.query.mean(1), ep.support.mean((1, 2))).pow(2)
    torch.testing.assert_close(ProtoNet(similarity="sqeuclidean")(ep.support, ep.query), expected)


def test_per_shot_averages_the_similarity_to_each_support_video(episode):
    ep = episode(dtype=torch.float64, n_shot=3)
    q = ep.query.mean(1)  # [Q, D]
    s = ep.support.mean(2)  # [N, K, D]
    expected = torch.nn.functional.cosine_similarity(q[:, None, None], s[None], dim=-1).mean(-1)
    torch.testing.assert_close(ProtoNet(prototype="per_shot")(ep.support, ep.query), expected)


def test_scaling_features_does_not_change_cosine_proto(episode):
    ep = episode()
    torch.testing.assert_close(ProtoNet()(ep.support * 7.0, ep.query * 0.5), ProtoNet()(ep.support, ep.query))


def test_unknown_prototype_mode_is_refused():
    with pytest.raises(ValueError, match="prototype='median' is not valid; choose one of 'mean', 'per_shot'"):
        ProtoNet(prototype="median")
