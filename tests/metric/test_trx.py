"""TRX against a float64 loop over classes and tuples (the reference code's structure)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from fsar_metric import TRX
from fsar_metric.metrics.trx import sinusoidal_positions


def trx_loop(metric: TRX, support: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """Per class, per query, per tuple, as written in the TRX paper (eval mode: no dropout)."""
    n_way, n_shot, n_frames, dim = support.shape
    logits = torch.zeros(query.shape[0], n_way, dtype=support.dtype)
    pe = torch.zeros(n_frames, dim, dtype=support.dtype)
    for t in range(n_frames):
        for i in range(dim):
            angle = t / (10000 ** ((i - i % 2) / dim))
            pe[t, i] = math.sin(angle) if i % 2 == 0 else math.cos(angle)
    for head, w in zip(metric.heads, metric.cardinalities, strict=True):
        tuples = list(itertools.combinations(range(n_frames), w))

        def tuple_rep(video: torch.Tensor, p: tuple[int, ...]) -> torch.Tensor:
            return torch.cat([video[i] + 0.1 * pe[i] for i in p])

        for c in range(n_way):
            keys = [head.key_norm(head.key(tuple_rep(support[c, k], p))) for k in range(n_shot) for p in tuples]
            values = [head.value(tuple_rep(support[c, k], p)) for k in range(n_shot) for p in tuples]
            for qi in range(query.shape[0]):
                total = 0.0
                for p in tuples:
                    q_key = head.key_norm(head.key(tuple_rep(query[qi], p)))
                    q_value = head.value(tuple_rep(query[qi], p))
                    weights = torch.softmax(torch.stack([q_key @ k / math.sqrt(q_key.numel()) for k in keys]), 0)
                    prototype = sum(a * v for a, v in zip(weights, values, strict=True))
                    total = total + (q_value - prototype).pow(2).sum()
                logits[qi, c] = logits[qi, c] - total / len(tuples) / len(metric.heads)
    return logits


def test_vectorised_trx_matches_the_loop(episode):
    ep = episode(dtype=torch.float64, n_shot=2, n_frames=4, dim=6, n_query=3)
    torch.manual_seed(0)
    metric = TRX(in_dim=6, key_dim=5).double().eval()
    with torch.no_grad():
        torch.testing.assert_close(metric(ep.support, ep.query), trx_loop(metric, ep.support, ep.query))


def test_positional_encoding_is_the_transformer_one():
    pe = sinusoidal_positions(3, 5, device=torch.device("cpu"), dtype=torch.float64)
    assert pe.shape == (3, 5)
    assert pe[0, 0] == 0.0
    assert pe[0, 1] == 1.0
    torch.testing.assert_close(
        pe[2, 2], torch.tensor(math.sin(2 / 10000 ** (2 / 5)), dtype=torch.float64), check_dtype=False
    )


def test_tuple_counts_follow_t_choose_omega():
    metric = TRX(in_dim=4, key_dim=4).eval()
    head = metric.heads[1]  # ω = 3
    keys, _ = head._encode(torch.randn(2, 8, 4))
    assert keys.shape == (2, math.comb(8, 3), 4)


def test_reversing_query_frames_changes_trx(episode):
    ep = episode(n_frames=6)
    metric = TRX(in_dim=ep.query.shape[-1], key_dim=16).eval()
    assert not torch.allclose(metric(ep.support, ep.query), metric(ep.support, ep.query.flip(1)))


def test_clip_shorter_than_the_tuple_is_refused():
    with pytest.raises(ValueError, match="cardinality 3 needs at least that many frames; got support T = 2"):
        TRX(in_dim=4, key_dim=4)(torch.randn(2, 1, 2, 4), torch.randn(3, 2, 4))


def test_width_other_than_built_for_is_refused():
    with pytest.raises(ValueError, match=r"TRX was built for D = 8, got support of shape \[2, 1, 4, 6\]"):
        TRX(in_dim=8, key_dim=4)(torch.randn(2, 1, 4, 6), torch.randn(3, 4, 6))


@pytest.mark.parametrize("cardinalities", [(), (0, 2), (2, 2)])
def test_bad_cardinalities_are_refused(cardinalities):
    with pytest.raises(ValueError, match="cardinalities must be distinct positive integers"):
        TRX(in_dim=4, cardinalities=cardinalities)
