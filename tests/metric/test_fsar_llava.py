"""The FSAR-LLaVA head: per-video caching path, ablations, losses, parameter count, learning."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from fsar_metric import (
    CTPCConfig,
    Episode,
    FSARLLaVA,
    FSARLLaVAConfig,
    LossConfig,
    MFEMConfig,
    MPMMConfig,
    ablation,
    episode_losses,
    list_ablations,
    score_episode,
)

IN_DIM, DIM = 12, 16


def small_head(**fields) -> FSARLLaVA:
    torch.manual_seed(0)
    base = {"in_dim": IN_DIM, "dim": DIM, "n_heads": 2, "n_frames": 6}
    base.update(fields)
    return FSARLLaVA(**base).eval()


def multimodal_episode(n_way=3, n_shot=2, n_query=4, n_frames=5, seed=0, free=True) -> Episode:
    gen = torch.Generator().manual_seed(seed)
    return Episode(
        support=torch.randn(n_way, n_shot, n_frames, IN_DIM, generator=gen),
        query=torch.randn(n_query, n_frames, IN_DIM, generator=gen),
        support_text=torch.randn(n_way, n_shot, IN_DIM, generator=gen),
        query_text=torch.randn(n_query, IN_DIM, generator=gen),
        support_text_free=torch.randn(n_way, n_shot, IN_DIM, generator=gen) if free else None,
        query_labels=torch.arange(n_query) % n_way,
        query_class_ids=torch.arange(n_query) % n_way + 10,
        class_anchors=torch.randn(20, IN_DIM, generator=gen),
    )


def test_trainable_parameters_at_the_default_width():
    with torch.device("meta"):
        head = FSARLLaVA()  # D_in = 4096, D = 1024
        light = FSARLLaVA(dim=512)
    # MFEM: two 4096→1024 projections (4.2 M each) + one Transformer layer (12.6 M) ≈ 21.0 M;
    # CTPC: its Transformer layer Enc_p (12.6 M). MPMM: none.
    # Counted by hand: a 4096→1024 Linear has 4,195,328 parameters, a LayerNorm 2,048, the
    # temporal embedding 8 × 1024, a pre-norm Transformer layer (attention 4,198,400 + FFN 8,393,728
    # + two LayerNorms 4,096) 12,596,224.
    assert sum(p.numel() for p in head.mfem.parameters()) == 2 * 4_195_328 + 2 * 2_048 + 8_192 + 12_596_224
    assert sum(p.numel() for p in head.ctpc.parameters()) == 12_596_224
    assert head.n_parameters() == 33_595_392
    assert light.n_parameters() == 10_506_240


@pytest.mark.parametrize("shot_merge", ["after", "before"])
@pytest.mark.parametrize("task_step", ["off", "both"])
def test_pool_path_equals_the_full_forward(shot_merge, task_step):
    head = small_head(ctpc=CTPCConfig(shot_merge=shot_merge, task_step=task_step)).double()
    gen = torch.Generator().manual_seed(3)
    pool_visual = torch.randn(10, 5, IN_DIM, generator=gen, dtype=torch.float64)
    pool_support_text = torch.randn(10, IN_DIM, generator=gen, dtype=torch.float64)
    pool_query_text = torch.randn(10, IN_DIM, generator=gen, dtype=torch.float64)
    support_idx = torch.tensor([[0, 1], [4, 5], [7, 8]])
    query_idx = torch.tensor([2, 6, 9, 3])
    with torch.no_grad():
        pool = head.encode_pool(pool_visual, pool_support_text, pool_query_text, chunk_size=3)
        fast = head.score_pool(pool, support_idx, query_idx)
        full = head(
            pool_visual[support_idx],
            pool_visual[query_idx],
            support_text=pool_support_text[support_idx],
            query_text=pool_query_text[query_idx],
            support_text_free=pool_query_text[support_idx],
        )
    torch.testing.assert_close(fast, full)


def test_label_free_support_text_changes_the_prototypes_through_beta():
    ep = multimodal_episode()
    with_free = score_episode(small_head(), ep)
    no_free = score_episode(small_head(), dataclasses.replace(ep, support_text_free=None))
    beta_zero = score_episode(small_head(ctpc=CTPCConfig(beta=0.0)), ep)
    assert not torch.allclose(with_free, no_free)
    torch.testing.assert_close(beta_zero, no_free)


@pytest.mark.parametrize("name", list_ablations())
def test_every_ablation_builds_runs_and_trains(name):
    config = ablation(FSARLLaVAConfig(in_dim=IN_DIM, dim=DIM, n_heads=2, n_frames=6), name)
    head = FSARLLaVA(config).train()
    losses = episode_losses(head, multimodal_episode())
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())


def test_ablations_switch_off_their_component():
    config = FSARLLaVAConfig(in_dim=IN_DIM, dim=DIM, n_heads=2)
    no_mfem = FSARLLaVA(ablation(config, "no_mfem"))
    assert not hasattr(no_mfem.mfem, "temporal")
    no_ctpc = FSARLLaVA(ablation(config, "no_ctpc"))
    assert list(no_ctpc.ctpc.parameters()) == []
    assert ablation(config, "visual_only").mpmm.cues == ("visual",)
    with pytest.raises(ValueError, match="unknown ablation 'no_text'; valid: full, no_mfem"):
        ablation(config, "no_text")


def test_visual_only_head_needs_no_query_text():
    head = small_head(**{"mpmm": ablation(FSARLLaVAConfig(), "visual_only").mpmm})
    ep = multimodal_episode()
    logits = head(ep.support, ep.query, support_text=ep.support_text)
    assert logits.shape == (4, 3)


def test_loss_terms_follow_the_loss_config():
    ep = multimodal_episode()
    assert set(episode_losses(small_head(), ep)) == {"episode_ce"}
    weights = LossConfig(episode_ce=1.0, modality_ce=0.5, base_class_ce=3.0)
    terms = episode_losses(small_head(losses=weights), ep)
    assert set(terms) == {"episode_ce", "modality_ce", "base_class_ce"}
    assert all(torch.isfinite(t) and t > 0 for t in terms.values())
    unweighted = episode_losses(small_head(losses=dataclasses.replace(weights, base_class_ce=1.0)), ep)
    torch.testing.assert_close(terms["base_class_ce"], 3.0 * unweighted["base_class_ce"])


def test_base_class_loss_needs_anchors():
    ep = dataclasses.replace(multimodal_episode(), class_anchors=None)
    with pytest.raises(ValueError, match=r"needs episode.class_anchors and episode.query_class_ids"):
        episode_losses(small_head(losses=LossConfig(base_class_ce=1.0)), ep)


def test_cross_attention_option_adds_parameters_that_learn():
    head = small_head(mfem=MFEMConfig(cross_attention=True)).train()
    assert hasattr(head.mfem, "cross")
    sum(episode_losses(head, multimodal_episode()).values()).backward()
    assert head.mfem.cross.in_proj_weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"dimension": 8}, r"unknown FSARLLaVAConfig fields \['dimension'\]; valid: ctpc, dim, dropout"),
        ({"dim": 10, "n_heads": 4}, "dim = 10 must be divisible by n_heads = 4"),
        ({"ctpc": "off"}, "ctpc"),
    ],
)
def test_bad_head_options_are_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        FSARLLaVA(**fields)


def test_sections_given_as_mappings_build_the_same_head_as_dataclasses():
    """A TOML table (``metric.options.losses``) reaches the head like a LossConfig would."""
    plain = small_head(losses={"base_class_ce": 2.0}, mpmm={"cues": ["visual", "cross"], "tau": 0.2})
    typed = small_head(losses=LossConfig(base_class_ce=2.0), mpmm=MPMMConfig(cues=("visual", "cross"), tau=0.2))
    assert plain.config == typed.config
    assert plain.config.mpmm.cues == ("visual", "cross")
    ep = multimodal_episode()
    assert "base_class_ce" in episode_losses(plain, ep)
    torch.testing.assert_close(score_episode(plain, ep), score_episode(typed, ep))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"losses": {"base_class": 1.0}}, r"unknown losses option\(s\) \['base_class'\]; valid: base_class_ce"),
        ({"mpmm": {"cues": ["visual", "audio"]}}, r"mpmm.cues entry='audio' is not valid"),
    ],
)
def test_bad_section_options_are_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        small_head(**fields)


def test_bad_component_options_are_refused():
    with pytest.raises(ValueError, match=r"ctpc.beta must lie in \[0, 1\]"):
        CTPCConfig(beta=1.5)
    with pytest.raises(ValueError, match=r"ctpc.task_step='classes' is not valid"):
        CTPCConfig(task_step="classes")
    with pytest.raises(ValueError, match=r"losses.modality_ce must be >= 0"):
        LossConfig(modality_ce=-1.0)


def test_more_frames_than_the_temporal_embedding_is_refused():
    ep = multimodal_episode(n_frames=7)
    with pytest.raises(ValueError, match="temporal embedding covers 6 frames"):
        score_episode(small_head(), ep)


def test_missing_text_is_refused_with_a_clear_message():
    ep = multimodal_episode()
    head = small_head()
    with pytest.raises(ValueError, match="needs support text"):
        head(ep.support, ep.query, query_text=ep.query_text)
    with pytest.raises(ValueError, match="needs query_text"):
        head(ep.support, ep.query, support_text=ep.support_text)
    with pytest.raises(ValueError, match="built for D_in = 12"):
        head(
            ep.support[..., :8],
            ep.query[..., :8],
            support_text=ep.support_text[..., :8],
            query_text=ep.query_text[..., :8],
        )


# ----------------------------------------------------------------------------- learning
def _nuisance_task(class_ids: list[int], seed: int, n_shot: int = 1, n_query: int = 2) -> Episode:
    """Episodes whose class signal lives in a small subspace, drowned by large per-video nuisance.

    Visual: each class moves a point along its own trajectory in dims 0..3; text: a class vector
    in dims 4..7; every video adds a large random constant in dims 8..D_in. An untrained head
    mixes the nuisance into everything; a trained one learns to ignore it, for unseen classes too.
    """
    gen = torch.Generator().manual_seed(seed)
    n_frames = 5
    world = torch.Generator().manual_seed(1234)  # the class definitions are fixed across calls
    trajectories = torch.randn(40, n_frames, 4, generator=world)
    texts = torch.randn(40, 4, generator=world)

    def videos(c: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        visual = torch.zeros(k, n_frames, IN_DIM)
        visual[..., :4] = trajectories[c] + 0.1 * torch.randn(k, n_frames, 4, generator=gen)
        visual[..., 8:] = 3.0 * torch.randn(k, 1, IN_DIM - 8, generator=gen)
        text = torch.zeros(k, IN_DIM)
        text[:, 4:8] = texts[c] + 0.1 * torch.randn(k, 4, generator=gen)
        text[:, 8:] = 3.0 * torch.randn(k, IN_DIM - 8, generator=gen)
        return visual, text

    support = [videos(c, n_shot) for c in class_ids]
    query = [videos(c, n_query) for c in class_ids]
    return Episode(
        support=torch.stack([s[0] for s in support]),
        query=torch.cat([q[0] for q in query]),
        support_text=torch.stack([s[1] for s in support]),
        query_text=torch.cat([q[1] for q in query]),
        query_labels=torch.arange(len(class_ids)).repeat_interleave(n_query),
    )


def _accuracy(head: FSARLLaVA, classes: list[int], seeds: range) -> float:
    head.eval()
    correct = []
    with torch.no_grad():
        for seed in seeds:
            picked = torch.randperm(len(classes), generator=torch.Generator().manual_seed(seed))[:5]
            ep = _nuisance_task([classes[i] for i in picked], seed)
            correct.append((score_episode(head, ep).argmax(-1) == ep.query_labels).float().mean())
    return float(torch.stack(correct).mean())


def test_a_short_training_run_beats_the_untrained_head_on_held_out_classes():
    test_classes = list(range(30, 40))  # training draws from classes 0..29 only
    head = small_head(dropout=0.0)
    before = _accuracy(head, test_classes, range(1000, 1060))
    optimizer = torch.optim.AdamW(head.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(7)
    head.train()
    for step in range(150):
        picked = torch.randperm(30, generator=gen)[:5].tolist()
        loss = sum(episode_losses(head, _nuisance_task(picked, seed=step)).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = _accuracy(head, test_classes, range(1000, 1060))
    assert after > before + 0.15, (before, after)


def test_every_parameter_learns_with_all_optional_modules_on():
    head = small_head(
        mfem=MFEMConfig(cross_attention=True),
        ctpc=CTPCConfig(task_step="both", query_text_token="label_free"),
        mpmm=ablation(FSARLLaVAConfig(), "with_cross").mpmm,
        losses=LossConfig(modality_ce=1.0, base_class_ce=1.0),
    ).train()
    sum(episode_losses(head, multimodal_episode()).values()).backward()
    for name, param in head.named_parameters():
        assert param.grad is not None, f"{name} got no gradient"
        assert param.grad.abs().sum() > 0, f"{name} got an all-zero gradient"


def test_visual_and_text_widths_may_differ_and_a_wrong_text_width_is_refused():
    """A spatial grid widens the visual stream only: D_in (visual) = 4 · D_t (text) here."""
    head = small_head(in_dim=4 * IN_DIM, text_in_dim=IN_DIM).train()
    gen = torch.Generator().manual_seed(5)
    episode = Episode(
        support=torch.randn(3, 2, 5, 4 * IN_DIM, generator=gen),
        query=torch.randn(4, 5, 4 * IN_DIM, generator=gen),
        support_text=torch.randn(3, 2, IN_DIM, generator=gen),
        query_text=torch.randn(4, IN_DIM, generator=gen),
        support_text_free=torch.randn(3, 2, IN_DIM, generator=gen),
        query_labels=torch.arange(4) % 3,
        query_class_ids=torch.arange(4) % 3 + 10,
        class_anchors=torch.randn(20, IN_DIM, generator=gen),
    )
    assert head.mfem.visual_proj.in_features == 4 * IN_DIM
    assert head.mfem.text_proj.in_features == IN_DIM
    losses = episode_losses(head, episode)
    sum(losses.values()).backward()
    assert head.mfem.text_proj.weight.grad is not None
    assert score_episode(head.eval(), episode).shape == (4, 3)
    wrong = dataclasses.replace(
        episode,
        support_text=torch.randn(3, 2, 4 * IN_DIM),
        query_text=torch.randn(4, 4 * IN_DIM),
        support_text_free=None,
        class_anchors=None,
    )
    with pytest.raises(ValueError, match=r"text width D_t = 12, got support_text"):
        score_episode(head, wrong)
    with pytest.raises(ValueError, match="text_in_dim must be positive"):
        FSARLLaVAConfig(text_in_dim=0)
