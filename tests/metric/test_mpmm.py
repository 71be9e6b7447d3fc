"""MPMM: parameter-free, adaptive cue weights, and the behaviour the method promises."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fsar_metric import MPMMConfig, create_metric, fuse_cues
from fsar_metric.head.mpmm import MPMM


def _scores(seed: int, n_query: int = 6, n_way: int = 5) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {cue: torch.randn(n_query, n_way, generator=gen) for cue in ("visual", "text", "cross")}


def test_mpmm_owns_no_parameters_and_no_buffers():
    mpmm = create_metric("mpmm", cues=("visual", "text", "cross"))
    assert list(mpmm.parameters()) == []
    assert list(mpmm.buffers()) == []


def test_a_learnable_temporal_metric_is_refused():
    with pytest.raises(ValueError, match="temporal metric must be parameter-free, but 'trx' has parameters"):
        MPMM(temporal_metric="trx", temporal_kwargs={"in_dim": 8})


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    confidence=st.sampled_from(["margin", "entropy"]),
    selection=st.sampled_from(["soft", "hard"]),
    n_way=st.integers(1, 6),
)
def test_adaptive_weights_are_non_negative_and_sum_to_one_per_query(seed, confidence, selection, n_way):
    config = MPMMConfig(cues=("visual", "text", "cross"), confidence=confidence, selection=selection)
    out = fuse_cues(_scores(seed, n_way=n_way), config)
    assert out.weights.shape == (6, 3)
    assert (out.weights >= 0).all()
    torch.testing.assert_close(out.weights.sum(-1), torch.ones(6))
    if selection == "hard":
        assert ((out.weights == 0) | (out.weights == 1)).all()


def test_soft_weights_follow_the_top2_margin():
    scores = {"visual": torch.tensor([[3.0, 0.0, 0.0]]), "text": torch.tensor([[1.0, 0.9, 0.0]])}
    out = fuse_cues(scores, MPMMConfig(tau=1.0))
    probs = {cue: torch.softmax(s, -1)[0] for cue, s in scores.items()}
    margins = torch.stack([p.topk(2).values[0] - p.topk(2).values[1] for p in probs.values()])
    torch.testing.assert_close(out.weights[0], margins / margins.sum())
    expected = sum(w * torch.log_softmax(s, -1) for w, s in zip(out.weights[0], scores.values(), strict=True))
    torch.testing.assert_close(out.logits, expected)


def test_all_zero_confidence_gives_uniform_weights():
    flat = {"visual": torch.zeros(2, 4), "text": torch.zeros(2, 4)}
    out = fuse_cues(flat, MPMMConfig())
    torch.testing.assert_close(out.weights, torch.full((2, 2), 0.5))


def test_fixed_weights_are_constant_and_normalised():
    config = MPMMConfig(selection="fixed", fixed_weights=(1.0, 9.0))
    out = fuse_cues(_scores(0), config)
    torch.testing.assert_close(out.weights, torch.tensor([[0.1, 0.9]]).expand(6, 2))


def test_weights_are_detached_by_default_and_can_be_kept():
    scores = {cue: s.requires_grad_(True) for cue, s in _scores(1).items() if cue != "cross"}
    assert not fuse_cues(scores, MPMMConfig()).weights.requires_grad
    assert fuse_cues(scores, MPMMConfig(detach_weights=False)).weights.requires_grad


def test_identical_text_across_classes_makes_mpmm_rank_as_the_visual_metric(episode):
    ep = episode(n_way=5, n_shot=2, n_query=7, n_frames=6, dim=16, dtype=torch.float64)
    same_text = torch.randn(16, dtype=torch.float64).expand(5, 2, 16)
    mpmm = create_metric("mpmm", cues=("visual", "text", "cross"))
    # The cross cue compares pooled query frames with P_t, which is the same vector for every class.
    logits = mpmm(ep.support, ep.query, support_text=same_text, query_text=ep.query_text)
    otam = create_metric("otam")(ep.support.mean(1, keepdim=True), ep.query)
    assert torch.equal(logits.argsort(-1), otam.argsort(-1))


def test_identical_visual_features_across_classes_let_the_text_decide(episode):
    ep = episode(n_way=5, n_shot=1, n_query=7, n_frames=6, dim=16, dtype=torch.float64)
    same_video = ep.support[:1].expand(5, 1, 6, 16)
    logits = create_metric("mpmm")(same_video, ep.query, support_text=ep.support_text, query_text=ep.query_text)
    text = (
        torch.nn.functional.normalize(ep.query_text, dim=-1)
        @ torch.nn.functional.normalize(ep.support_text[:, 0], dim=-1).T
    )
    assert torch.equal(logits.argsort(-1), text.argsort(-1))


def _order_or_text_task(seed: int, noise: float = 0.3):
    """Four classes: 0/1 share text and differ only in frame order; 2/3 share frames, differ only in text."""
    gen = torch.Generator().manual_seed(seed)
    n_frames, dim = 6, 24
    frames_a = torch.randn(n_frames, dim, generator=gen)
    frames_b = torch.randn(n_frames, dim, generator=gen)
    text_a, text_b, text_c = (torch.randn(dim, generator=gen) for _ in range(3))
    visual = [frames_a, frames_a.flip(0), frames_b, frames_b]
    text = [text_a, text_a, text_b, text_c]

    def sample(c: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        v = visual[c] + noise * torch.randn(k, n_frames, dim, generator=gen)
        t = text[c] + noise * torch.randn(k, dim, generator=gen)
        return v, t

    support = [sample(c, 1) for c in range(4)]
    query = [sample(c, 3) for c in range(4)]
    return (
        torch.stack([s[0] for s in support]),  # [4, 1, T, D]
        torch.stack([s[1] for s in support]),  # [4, 1, D]
        torch.cat([q[0] for q in query]),  # [12, T, D]
        torch.cat([q[1] for q in query]),  # [12, D]
        torch.arange(4).repeat_interleave(3),
    )


def test_mpmm_beats_each_single_cue_when_classes_differ_in_order_or_in_text():
    accuracies = {"visual": [], "text": [], "mpmm": []}
    metrics = {
        "visual": create_metric("mpmm", cues=("visual",)),
        "text": create_metric("mpmm", cues=("text",)),
        "mpmm": create_metric("mpmm"),
    }
    for seed in range(40):
        support, support_text, query, query_text, labels = _order_or_text_task(seed)
        for name, metric in metrics.items():
            logits = metric(support, query, support_text=support_text, query_text=query_text)
            accuracies[name].append((logits.argmax(-1) == labels).float().mean())
    mean = {name: float(torch.stack(acc).mean()) for name, acc in accuracies.items()}
    # Each single cue confuses one pair (chance on half the queries): about 0.75.
    assert mean["visual"] < 0.85
    assert mean["text"] < 0.85
    assert mean["mpmm"] > max(mean["visual"], mean["text"]) + 0.1


def test_temporal_metric_is_selectable_by_name(episode):
    ep = episode(dtype=torch.float64)
    bimhm = create_metric("mpmm", cues=("visual",), temporal_metric="bimhm", visual_per_frame=False, tau=1.0)
    logits = bimhm(ep.support, ep.query, support_text=ep.support_text, query_text=ep.query_text)
    expected = torch.log_softmax(create_metric("bimhm")(ep.support.mean(1, keepdim=True), ep.query), -1)
    torch.testing.assert_close(logits, expected)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"cues": ()}, "mpmm.cues must be distinct names"),
        ({"cues": ("visual", "audio")}, "mpmm.cues entry='audio' is not valid"),
        ({"confidence": "variance"}, "mpmm.confidence='variance' is not valid; choose one of 'margin', 'entropy'"),
        ({"selection": "vote"}, "mpmm.selection='vote' is not valid"),
        ({"selection": "fixed"}, "needs fixed_weights, one per cue"),
        ({"selection": "fixed", "fixed_weights": (-1.0, 2.0)}, "must be non-negative"),
        ({"tau": 0.0}, r"mpmm.tau must be > 0"),
    ],
)
def test_bad_mpmm_options_are_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        MPMMConfig(**fields)


def test_text_cues_without_text_are_refused(episode):
    ep = episode()
    with pytest.raises(ValueError, match="needs support_text"):
        create_metric("mpmm")(ep.support, ep.query, query_text=ep.query_text)
    with pytest.raises(ValueError, match="needs query_text"):
        create_metric("mpmm")(ep.support, ep.query, support_text=ep.support_text)
