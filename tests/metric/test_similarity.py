from __future__ import annotations

import pytest
import torch

from fsar_metric import CosineSimilarity, create_similarity, list_similarities


@pytest.fixture
def frames():
    gen = torch.Generator().manual_seed(0)
    return torch.randn(3, 4, 6, generator=gen, dtype=torch.float64), torch.randn(
        2, 2, 5, 6, generator=gen, dtype=torch.float64
    )


def test_cosine_matches_torch_cosine_similarity(frames):
    query, support = frames
    expected = torch.nn.functional.cosine_similarity(query[:, None, None, :, None], support[None, :, :, None], dim=-1)
    torch.testing.assert_close(create_similarity("cosine")(query, support), expected)


def test_cosine_offset_reproduces_the_public_formula(frames):
    query, support = frames
    q, s = query[1, 2], support[0, 1, 3]
    expected = (q @ s) / (q.norm() * s.norm() + 0.01)
    got = CosineSimilarity(denominator_offset=0.01)(query, support)[1, 0, 1, 2, 3]
    torch.testing.assert_close(got, expected)


def test_cosine_of_a_zero_frame_is_zero_not_nan(frames):
    query, support = frames
    query = query.clone()
    query[0, 0] = 0
    sim = create_similarity("cosine")(query, support)
    assert torch.isfinite(sim).all()
    assert (sim[0, :, :, 0] == 0).all()


def test_dot_and_sqeuclidean_match_direct_formulas(frames):
    query, support = frames
    torch.testing.assert_close(
        create_similarity("dot")(query, support), torch.einsum("qtd,nkud->qnktu", query, support)
    )
    diff = query[:, None, None, :, None] - support[None, :, :, None]  # [Q, N, K, T, U, D]
    torch.testing.assert_close(create_similarity("sqeuclidean")(query, support), -diff.pow(2).sum(-1))


def test_unknown_similarity_lists_the_valid_ones():
    assert list_similarities() == ["cosine", "dot", "sqeuclidean"]
    with pytest.raises(
        ValueError,
        match="unknown frame similarity 'manhattan'; registered frame similarities: cosine, dot, sqeuclidean",
    ):
        create_similarity("manhattan")


def test_a_module_passes_through():
    module = CosineSimilarity(eps=1e-6)
    assert create_similarity(module) is module


def test_bad_cosine_options_are_refused():
    with pytest.raises(ValueError, match="eps must be > 0"):
        CosineSimilarity(eps=0)
