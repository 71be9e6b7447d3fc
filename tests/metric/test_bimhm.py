"""Bi-MHM against a float64 loop oracle (docs/protocol.md, "`bimhm`: bidirectional mean Hausdorff")."""

from __future__ import annotations

import torch

from fsar_metric import BiMHM, bimhm_distance


def bimhm_loop(query: torch.Tensor, support: torch.Tensor) -> float:
    """``query [T, D]``, ``support [U, D]``: mean nearest-frame cosine distance, both ways."""

    def cos_dist(a: torch.Tensor, b: torch.Tensor) -> float:
        return 1.0 - float(a @ b) / (float(a.norm()) * float(b.norm()))

    n_q, n_s = query.shape[0], support.shape[0]
    forward = sum(min(cos_dist(query[i], support[j]) for j in range(n_s)) for i in range(n_q)) / n_q
    backward = sum(min(cos_dist(query[i], support[j]) for i in range(n_q)) for j in range(n_s)) / n_s
    return forward + backward


def test_metric_matches_the_float64_loop(episode):
    ep = episode(dtype=torch.float64, n_shot=3)
    logits = BiMHM()(ep.support, ep.query)
    expected = torch.tensor(
        [
            [-sum(bimhm_loop(ep.query[q], ep.support[c, k]) for k in range(3)) / 3 for c in range(ep.support.shape[0])]
            for q in range(ep.query.shape[0])
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(logits, expected, rtol=1e-10, atol=1e-10)


def test_unequal_frame_counts_match_the_loop():
    gen = torch.Generator().manual_seed(0)
    query, support = (
        torch.randn(2, 3, 6, generator=gen, dtype=torch.float64),
        torch.randn(2, 1, 7, 6, generator=gen, dtype=torch.float64),
    )
    logits = BiMHM()(support, query)
    expected = torch.tensor(
        [[-bimhm_loop(query[q], support[c, 0]) for c in range(2)] for q in range(2)], dtype=torch.float64
    )
    torch.testing.assert_close(logits, expected)


def test_frame_order_is_ignored(episode):
    ep = episode(n_frames=8)
    torch.testing.assert_close(BiMHM()(ep.support, ep.query.flip(1)), BiMHM()(ep.support, ep.query))


def test_identical_sequences_have_zero_distance():
    x = torch.rand(4, 6, 6, dtype=torch.float64)
    assert torch.equal(bimhm_distance(torch.zeros_like(x)), torch.zeros(4, dtype=torch.float64))
    frames = torch.randn(8, 16, dtype=torch.float64)
    torch.testing.assert_close(BiMHM()(frames[None, None], frames[None]), torch.zeros(1, 1, dtype=torch.float64))


def test_scaling_features_does_not_change_cosine_bimhm(episode):
    ep = episode()
    torch.testing.assert_close(BiMHM()(ep.support * 5.0, ep.query * 0.1), BiMHM()(ep.support, ep.query))
