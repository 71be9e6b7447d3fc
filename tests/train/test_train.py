"""Episodic training: it learns, it resumes exactly, it selects on meta-val, it trains any metric."""

from __future__ import annotations

import dataclasses
import itertools
import json

import pytest
import torch

import fsar_train._train
from fsar_metric import list_metrics, metric_capabilities
from fsar_train import (
    ConcatFeatures,
    EpisodeList,
    ExperimentConfig,
    MetricConfig,
    SubsetFeatures,
    TensorFeatures,
    apply_overrides,
    build_metric,
    evaluate_methods,
    hold_out_classes,
    load_checkpoint_weights,
    lr_factor,
    run_episodes,
    train,
    uses_class_names,
)
from fsar_train._train import CHECKPOINT_FORMAT


def test_training_improves_meta_val_accuracy_over_the_untrained_metric(tmp_path, trajectory_task, tiny_train_config):
    cfg = apply_overrides(
        tiny_train_config,
        ["train.steps=60", "train.episodes_per_step=4", "train.lr=1e-2", "train.val_every=20",
         "train.val_episodes=150", "train.checkpoint_every=60", "train.warmup_steps=4", "metric.options.dropout=0.0"],
    )  # fmt: skip
    torch.manual_seed(cfg.train.seed)
    untrained = build_metric(cfg, 32)
    result = train(cfg, trajectory_task["train"], trajectory_task["val"], tmp_path / "run", progress=False)
    val = trajectory_task["val"]
    episodes = EpisodeList.load(tmp_path / "run" / "val_episodes.json")
    before = run_episodes(untrained, val, episodes)[0].mean()
    after = run_episodes(result.metric, val, episodes)[0].mean()
    assert result.steps == 60
    assert len(result.history) == 60
    assert len(result.val_history) == 3
    assert before < 0.5, f"the task should not be solved before training (chance is 1/3), got {before:.2f}"
    assert after > before + 0.25, f"meta-val accuracy went from {before:.2f} to only {after:.2f}"
    assert result.best_accuracy == max(v["accuracy"] for v in result.val_history)
    first_losses = sum(h["loss"] for h in result.history[:5]) / 5
    last_losses = sum(h["loss"] for h in result.history[-5:]) / 5
    assert last_losses < first_losses


def test_killed_and_resumed_run_ends_with_the_same_weights_and_metrics(tmp_path, trajectory_task, tiny_train_config):
    train_src, val_src = trajectory_task["train"], trajectory_task["val"]
    whole = train(tiny_train_config, train_src, val_src, tmp_path / "whole", progress=False)
    # "Killed" after step 5: the last checkpoint is step 4, so step 5 is lost and replayed on resume.
    killed = train(tiny_train_config, train_src, val_src, tmp_path / "killed", stop_after=5, progress=False)
    assert killed.steps == 5
    assert torch.load(tmp_path / "killed" / "last.pt", weights_only=True)["step"] == 4
    resumed = train(tiny_train_config, train_src, val_src, tmp_path / "killed", progress=False)
    assert resumed.steps == whole.steps == 6
    for (name, a), (_, b) in zip(whole.metric.state_dict().items(), resumed.metric.state_dict().items(), strict=True):
        assert torch.equal(a, b), f"{name} differs after resume"
    assert resumed.history == whole.history
    assert resumed.val_history == whole.val_history
    assert (resumed.best_step, resumed.best_accuracy) == (whole.best_step, whole.best_accuracy)
    best_whole = torch.load(tmp_path / "whole" / "best.pt", weights_only=True)
    best_resumed = torch.load(tmp_path / "killed" / "best.pt", weights_only=True)
    assert best_whole["step"] == best_resumed["step"]
    assert all(torch.equal(best_whole["model"][k], best_resumed["model"][k]) for k in best_whole["model"])


def test_a_truncated_checkpoint_is_a_clear_error_naming_it(tmp_path, trajectory_task, tiny_train_config):
    """A last.pt cut short (a full disk outside the atomic write, a copy interrupted) must not end
    in a zip-reader traceback; neither may a best.pt loaded for evaluation."""
    run = tmp_path / "run"
    train(tiny_train_config, trajectory_task["train"], trajectory_task["val"], run, progress=False)
    for name in ("last.pt", "best.pt"):
        data = (run / name).read_bytes()
        (run / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"last.pt cannot be read as a checkpoint .*damaged"):
        train(apply_overrides(tiny_train_config, ["eval.episodes=5"]), trajectory_task["train"],
              trajectory_task["val"], run, progress=False)  # fmt: skip
    with pytest.raises(ValueError, match=r"best.pt cannot be read as a checkpoint"):
        load_checkpoint_weights(build_metric(tiny_train_config, 32), run / "best.pt")
    torch.save({"format": "something else"}, run / "other.pt")
    with pytest.raises(ValueError, match=r"other.pt is not an fsar-train checkpoint"):
        load_checkpoint_weights(build_metric(tiny_train_config, 32), run / "other.pt")


def test_checkpoint_holds_model_optimizer_scheduler_rng_and_step(tmp_path, trajectory_task, tiny_train_config):
    train(tiny_train_config, trajectory_task["train"], trajectory_task["val"], tmp_path / "run", progress=False)
    checkpoint = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert checkpoint["format"] == CHECKPOINT_FORMAT
    assert {"model", "optimizer", "scheduler", "rng", "step", "history", "val_history"} <= set(checkpoint)
    assert checkpoint["step"] == 6
    assert checkpoint["scheduler"]["last_epoch"] == 6
    assert checkpoint["optimizer"]["state"], "AdamW moments are saved"
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert len(history["train"]) == 6
    assert [v["step"] for v in history["val"]] == [3, 6]
    assert not list((tmp_path / "run").glob(".*tmp*")), "no temporary files are left behind"


def test_training_leaves_the_global_rng_untouched(tmp_path, trajectory_task, tiny_train_config):
    torch.manual_seed(123)
    state = torch.get_rng_state()
    train(tiny_train_config, trajectory_task["train"], trajectory_task["val"], tmp_path / "run", progress=False)
    assert torch.equal(torch.get_rng_state(), state)


def test_parameter_free_metric_is_validated_without_training(tmp_path, trajectory_task, tiny_train_config):
    cfg = dataclasses.replace(tiny_train_config, metric=MetricConfig(name="otam"))  # otam takes no trx options
    result = train(cfg, trajectory_task["train"], trajectory_task["val"], tmp_path / "run", progress=False)
    assert not result.trained
    assert result.steps == 0
    assert len(result.val_history) == 1


def test_loss_terms_are_weighted_and_a_zero_weight_on_every_term_is_an_error(
    tmp_path, trajectory_task, tiny_train_config
):
    cfg = apply_overrides(tiny_train_config, ["train.loss_weights.episode_ce=0.0"])
    with pytest.raises(ValueError, match=r"every loss term has weight 0: \['episode_ce'\]"):
        train(cfg, trajectory_task["train"], trajectory_task["val"], tmp_path / "run", progress=False)


def test_unknown_metric_option_names_the_accepted_ones(trajectory_task, tiny_train_config):
    cfg = apply_overrides(tiny_train_config, ["metric.options.keydim=3"])
    with pytest.raises(ValueError, match=r"metric 'trx' takes no option\(s\) \['keydim'\]; it takes: in_dim, "):
        build_metric(cfg, 32)


def test_an_old_trx_dim_option_names_its_new_name(tiny_train_config):
    cfg = apply_overrides(tiny_train_config, ["metric.options.dim=32"])
    with pytest.raises(ValueError, match=r"metric 'trx': the option 'dim' is now called 'in_dim'"):
        build_metric(cfg, 32)


@pytest.mark.parametrize(("in_dim", "text_dim"), [(32, None), (48, 16), (2048, 2048), (3072, 1536)])
def test_build_metric_sizes_follow_the_feature_widths_as_before(in_dim, text_dim):
    # The sizes the removed DEFAULT_SIZES table gave: trx in_dim = D_in, key_dim = min(D_t, 1152); the
    # head in_dim = D_in, text_in_dim = D_t when it differs, dim = min(D_t, 1024).
    d_t = in_dim if text_dim is None else text_dim

    def config(name: str, **options: object) -> ExperimentConfig:
        return dataclasses.replace(ExperimentConfig(), metric=MetricConfig(name=name, options=options))

    trx = build_metric(config("trx", cardinalities=[2]), in_dim, text_dim)
    assert trx.in_dim == in_dim
    assert trx.heads[0].key.weight.shape == (min(d_t, 1152), in_dim * 2)
    if in_dim <= 2048:  # wider heads are slow to build on CPU; the cap is reached at 2048
        head = build_metric(config("fsar_llava", n_heads=4), in_dim, text_dim).config
        assert (head.in_dim, head.text_in_dim, head.dim) == (in_dim, None if d_t == in_dim else d_t, min(d_t, 1024))
    for name in ("proto", "otam", "bimhm", "mpmm"):  # parameter-free: built with no width at all
        assert list(build_metric(config(name), in_dim, text_dim).parameters()) == []


def test_warmup_then_cosine_schedule():
    factors = [lr_factor(s, warmup=4, total=20, final_ratio=0.1) for s in range(20)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert factors[4] == 1.0
    assert factors[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in itertools.pairwise(factors[4:]))


SMALL_OPTIONS = {
    "trx": ["metric.options.key_dim=8", "metric.options.cardinalities=[2]"],
    "fsar_llava": ["metric.options.dim=16", "metric.options.n_frames=4", "metric.options.n_heads=2"],
}


def _text_task(seed: int, n_classes: int = 6, per_class: int = 6, dim: int = 24) -> TensorFeatures:
    """Visual and text features both near a per-class vector, with label-aware and label-free text."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_classes, dim, generator=gen)
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    visual = centres[labels][:, None] + torch.randn(len(labels), 4, dim, generator=gen)  # [V, T, D]

    def text() -> torch.Tensor:
        return centres[labels] + 0.3 * torch.randn(len(labels), dim, generator=gen)  # [V, D]

    return TensorFeatures(visual, labels, label_aware_text=text(), label_free_text=text())


@pytest.mark.parametrize("name", list_metrics())
def test_every_registered_metric_trains_and_evaluates_through_the_episode_contract(tmp_path, tiny_train_config, name):
    cfg = dataclasses.replace(tiny_train_config, metric=MetricConfig(name=name))
    cfg = apply_overrides(cfg, [*SMALL_OPTIONS.get(name, []), "train.steps=2", "train.val_every=2"])
    task = {split: _text_task(seed) for split, seed in (("train", 1), ("val", 2), ("test", 3))}
    result = train(cfg, task["train"], task["val"], tmp_path / "run", progress=False)
    trainable = any(p.requires_grad for p in result.metric.parameters())
    assert result.trained == trainable
    assert result.steps == (2 if trainable else 0)
    episodes = EpisodeList.sample(task["test"].labels, task["test"].video_ids, count=10, n_way=3, n_shot=1,
                                  n_query=1, seed=0)  # fmt: skip
    evaluated = evaluate_methods({name: result.metric}, task["test"], episodes)[name]
    assert 0 <= evaluated.accuracy <= 100
    assert evaluated.uses_class_names == metric_capabilities(name).uses_text


def test_subset_and_concat_views_read_the_same_features_as_the_source():
    task = _text_task(0, n_classes=5, per_class=3)
    sub = SubsetFeatures(task, [4, 1])
    assert sub.class_names == ["class4", "class1"]
    assert sub.labels == [1, 1, 1, 0, 0, 0]  # class1's videos come first, as in the source
    torch.testing.assert_close(sub.visual([0, 5]), task.visual([3, 14]))
    torch.testing.assert_close(sub.text([4], "label_free"), task.text([13], "label_free"))
    other = TensorFeatures(torch.randn(2, 4, 24), [0, 0], class_names=["extra"], video_ids=["e0", "e1"],
                           label_aware_text=torch.randn(2, 24), label_free_text=torch.randn(2, 24))  # fmt: skip
    both = ConcatFeatures([sub, other])
    assert both.class_names == ["class4", "class1", "extra"]
    assert both.labels == [1, 1, 1, 0, 0, 0, 2, 2]
    # Positions from both parts, in any order, come back in the asked order.
    torch.testing.assert_close(both.visual([7, 0, 6]), torch.stack([other.visual([1])[0], task.visual([3])[0],
                                                                     other.visual([0])[0]]))  # fmt: skip
    expected = torch.stack([other.text([0], "label_aware")[0], task.text([4], "label_aware")[0]])
    torch.testing.assert_close(both.text([6, 1], "label_aware"), expected)


def test_the_support_prompt_is_declared_and_kept_by_every_view():
    task = _text_task(0, n_classes=5, per_class=3)
    visual, free_text = task.visual(range(15)), task.text(range(15), "label_free")
    ablated = TensorFeatures(visual, task.labels, label_free_text=free_text, support_prompt="label_free")
    assert task.support_prompt == "label_aware"
    assert ablated.support_prompt == "label_free"
    assert ablated.text_prompts == frozenset({"label_free"})
    assert SubsetFeatures(ablated, [0, 2]).support_prompt == "label_free"
    assert ablated.to("cpu").support_prompt == "label_free"
    held_train, held_val = hold_out_classes(ablated, SubsetFeatures(ablated, [4]), 1, seed=0)
    assert held_train.support_prompt == "label_free"
    assert held_val.support_prompt == "label_free"
    both_texts = TensorFeatures(visual, task.labels, label_aware_text=task.text(range(15), "label_aware"),
                                label_free_text=free_text, support_prompt="label_free")  # fmt: skip
    with pytest.raises(ValueError, match=r"different support prompts cannot be joined: \['label_aware', 'label_f"):
        ConcatFeatures([SubsetFeatures(task, [0]), SubsetFeatures(both_texts, [1])])
    text_metric = build_metric(dataclasses.replace(ExperimentConfig(), metric=MetricConfig(name="mpmm")), 24)
    visual_metric = build_metric(dataclasses.replace(ExperimentConfig(), metric=MetricConfig(name="otam")), 24)
    assert uses_class_names(text_metric, task)
    assert not uses_class_names(text_metric, ablated)
    assert not uses_class_names(visual_metric, task)


def test_views_refuse_bad_input():
    task = _text_task(0, n_classes=3, per_class=2)
    with pytest.raises(ValueError, match=r"classes must be distinct indices in 0..2, got \[0, 3\]"):
        SubsetFeatures(task, [0, 3])
    with pytest.raises(ValueError, match=r"class names occur in more than one source: \['class0'\]"):
        ConcatFeatures([task, SubsetFeatures(task, [0])])
    visual_only = TensorFeatures(torch.randn(2, 4, 24), [0, 1], class_names=["x", "y"])
    with pytest.raises(ValueError, match="different text prompts"):
        ConcatFeatures([task, visual_only])
    with pytest.raises(ValueError, match=r"support_prompt must be one of \['label_aware', 'label_free'\], got 'supp"):
        TensorFeatures(torch.randn(2, 4, 24), [0, 1], support_prompt="support")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"label_free_text must be \[2, D\], got shape \[3, 24\]"):
        TensorFeatures(torch.randn(2, 4, 24), [0, 1], label_free_text=torch.randn(3, 24))
    free_only = TensorFeatures(torch.randn(2, 4, 24), [0, 1], label_free_text=torch.randn(2, 24))
    with pytest.raises(KeyError, match=r"no 'label_aware' text features; this source holds: \['label_free'\]"):
        SubsetFeatures(free_only, [1]).text([0], "label_aware")
    with pytest.raises(KeyError, match=r"no 'label_free' text features; this source holds: no text"):
        visual_only.text([0], "label_free")
    with pytest.raises(ValueError, match=r"val_train_classes = 2 must be >= 0 and leave meta-train at least 2"):
        hold_out_classes(task, visual_only, 2, seed=1)


def test_held_out_classes_leave_training_and_join_validation():
    train_src, val_src = _text_task(1, n_classes=10), _text_task(2, n_classes=3)
    val_src = TensorFeatures(val_src.visual(range(18)), val_src.labels, class_names=["v0", "v1", "v2"],
                             label_aware_text=val_src.text(range(18), "label_aware"),
                             label_free_text=val_src.text(range(18), "label_free"))  # fmt: skip
    kept, widened = hold_out_classes(train_src, val_src, 4, seed=1)
    held = widened.class_names[3:]
    assert len(held) == 4
    assert widened.class_names[:3] == ["v0", "v1", "v2"]
    assert set(kept.class_names).isdisjoint(held)
    assert sorted(kept.class_names + held) == sorted(train_src.class_names)
    assert len(kept.labels) + len(widened.labels) == len(train_src.labels) + len(val_src.labels)
    again, _ = hold_out_classes(train_src, val_src, 4, seed=1)
    assert again.class_names == kept.class_names  # seeded
    assert hold_out_classes(train_src, val_src, 0, seed=1) == (train_src, val_src)


def test_training_validates_on_the_held_out_classes_and_never_trains_on_them(tmp_path, tiny_train_config, monkeypatch):
    cfg = dataclasses.replace(tiny_train_config, metric=MetricConfig(name="fsar_llava"))
    cfg = apply_overrides(cfg, [*SMALL_OPTIONS.get("fsar_llava", []), "train.steps=2", "train.val_every=2",
                                "train.val_train_classes=3", "episodes.n_way=3"])  # fmt: skip
    train_src, val_src = _text_task(1, n_classes=8), _text_task(2, n_classes=2)
    val_src = TensorFeatures(val_src.visual(range(12)), val_src.labels, class_names=["v0", "v1"],
                             label_aware_text=val_src.text(range(12), "label_aware"),
                             label_free_text=val_src.text(range(12), "label_free"))  # fmt: skip
    _, widened = hold_out_classes(train_src, val_src, 3, seed=cfg.train.val_seed)
    seen, validating = [], [False]
    original_read, original_validate = train_src.visual, fsar_train._train.run_episodes

    def spy(positions):
        if not validating[0]:
            seen.extend(train_src.labels[p] for p in positions)
        return original_read(positions)

    def validate(*args, **kwargs):
        validating[0] = True
        try:
            return original_validate(*args, **kwargs)
        finally:
            validating[0] = False

    train_src.visual = spy  # type: ignore[method-assign]
    monkeypatch.setattr(fsar_train._train, "run_episodes", validate)
    train(cfg, train_src, val_src, tmp_path / "run", progress=False)
    val_list = EpisodeList.load(tmp_path / "run" / "val_episodes.json")
    used = {widened.class_names[c] for ep in val_list.episodes for c in ep.class_ids}
    held = set(widened.class_names[2:])
    assert used & held, "validation episodes should draw on the held-out meta-train classes"
    trained_on = {train_src.class_names[c] for c in seen}
    assert trained_on
    assert trained_on.isdisjoint(held)
