"""Per-shot training (``train.per_shot``): the runner trains the method and every trained baseline
again at each other evaluated shot count, in its own folder, and scores K-shot episodes with the
models trained at K."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from fsar_metric import FSARLLaVA, ablation, create_metric
from fsar_train import (
    EpisodeList,
    ExperimentConfig,
    RunLayout,
    TensorFeatures,
    apply_overrides,
    build_metric,
    evaluate_methods,
    load_checkpoint_weights,
    load_config,
    run_experiment,
    train,
)
from fsar_train._experiment import baseline_config, per_shot_name, shot_config, trained_shots

N_WAY, SHOTS, EPISODES, DIM = 3, 5, 20, 24

BASE = [
    "metric.name=fsar_llava",
    "metric.options.dim=16",
    "metric.options.n_frames=4",
    "metric.options.n_heads=2",
    f"episodes.n_way={N_WAY}",
    "episodes.n_shot=1",
    "episodes.train_queries=2",
    "train.steps=4",
    "train.episodes_per_step=2",
    "train.lr=3e-3",
    "train.warmup_steps=1",
    "train.val_every=2",
    "train.val_episodes=10",
    "train.checkpoint_every=2",
    "train.device=cpu",
    f"eval.shots=[1, {SHOTS}]",
    f"eval.episodes={EPISODES}",
    'eval.baselines=["proto"]',
    'eval.trained_baselines=["trx"]',
    'eval.head_ablations=["visual_only"]',
]


def _config(per_shot: bool, *extra: str) -> ExperimentConfig:
    return apply_overrides(ExperimentConfig(), [*BASE, f"train.per_shot={str(per_shot).lower()}", *extra])


def _task(seed: int, n_classes: int = 4, per_class: int = 8) -> TensorFeatures:
    """Noisy features near a per-class vector, with label-aware and label-free text: hard enough that
    two differently trained heads score some episodes differently. ``[V, 4, DIM]`` visual, ``[V, DIM]`` text."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_classes, DIM, generator=gen)
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    visual = centres[labels][:, None] + 2.0 * torch.randn(len(labels), 4, DIM, generator=gen)

    def text() -> torch.Tensor:
        return centres[labels] + 2.0 * torch.randn(len(labels), DIM, generator=gen)

    return TensorFeatures(visual, labels, label_aware_text=text(), label_free_text=text())


@pytest.fixture(scope="module")
def sources() -> dict[str, TensorFeatures]:
    return {"train": _task(1, n_classes=6), "val": _task(2), "test": _task(3)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, sources):
    """The same experiment with and without per-shot training (same seeds, same sources)."""
    root = tmp_path_factory.mktemp("per_shot")
    out = {}
    for per_shot in (True, False):
        run_dir = root / ("per_shot" if per_shot else "one_model")
        out[per_shot] = run_experiment(_config(per_shot), run_dir, sources=sources, progress=False)
    return out


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def _episodes(run_dir: Path, shots: int) -> EpisodeList:
    return EpisodeList.load(RunLayout(run_dir).test_episodes(N_WAY, shots, EPISODES, 0))


def test_trained_shots_follow_the_evaluated_shots_only_when_per_shot():
    assert trained_shots(_config(False)) == (1,)
    assert trained_shots(_config(True)) == (1, SHOTS)
    assert trained_shots(_config(True, "episodes.n_shot=5", "eval.shots=[3, 1, 5]")) == (5, 1, 3)
    five = shot_config(_config(True), 5)
    assert five.episodes.n_shot == 5
    assert (five.train, five.metric, five.eval) == (_config(True).train, _config(True).metric, _config(True).eval)


def test_per_shot_trains_a_k_shot_folder_for_the_method_and_each_trained_baseline(runs):
    result = runs[True]
    layout = result.layout
    folders = {
        "fsar_llava": layout.for_shot(SHOTS, trained_shots=1),
        "trx": layout.baseline("trx").for_shot(SHOTS, trained_shots=1),
    }
    assert folders["fsar_llava"].root == layout.root / f"shot{SHOTS}"
    assert folders["trx"].root == layout.root / "baselines" / "trx" / f"shot{SHOTS}"
    for name, folder in folders.items():
        saved = load_config(folder.config)
        assert saved.episodes.n_shot == SHOTS
        assert saved.metric.name == name
        assert saved.train == _config(True).train  # same seeds, steps and schedule
        val = EpisodeList.load(folder.val_episodes)
        assert val.n_shot == SHOTS
        assert all(len(support) == SHOTS for episode in val.episodes for support in episode.support)
        for path in (folder.checkpoint("best"), folder.checkpoint("last"), folder.history, folder.training_curves):
            assert path.is_file(), path
    # The main trainings stay where they were, at episodes.n_shot = 1; no folder for the trained K.
    assert load_config(layout.config).episodes.n_shot == 1
    assert EpisodeList.load(layout.val_episodes).n_shot == 1
    assert EpisodeList.load(layout.baseline("trx").val_episodes).n_shot == 1
    assert not (layout.root / "shot1").exists()
    assert not (layout.root / "baselines" / "trx" / "shot1").exists()
    # A K-shot training is another model: its weights differ from the 1-shot one's.
    one, five = _weights(layout.checkpoint("best")), _weights(folders["fsar_llava"].checkpoint("best"))
    assert any(not torch.equal(one[k], five[k]) for k in one)
    # results.json records every training.
    trained = json.loads(layout.results.read_text())["trained"]
    assert set(trained) == {"fsar_llava", "trx", per_shot_name("fsar_llava", SHOTS), per_shot_name("trx", SHOTS)}
    assert trained["trx@5shot"]["steps"] == 4
    assert trained == result.trained


def test_k_shot_episodes_are_scored_with_the_k_shot_weights(runs, sources):
    per_shot, one_model = runs[True], runs[False]
    config = _config(True)
    five = shot_config(config, SHOTS)
    head = build_metric(five, DIM, DIM)
    load_checkpoint_weights(head, per_shot.layout.for_shot(SHOTS, trained_shots=1).checkpoint("best"))
    assert isinstance(head, FSARLLaVA)
    variant = FSARLLaVA(ablation(head.config, "visual_only"))
    variant.load_state_dict(head.state_dict())
    trx = build_metric(baseline_config(five, "trx"), DIM, DIM)
    load_checkpoint_weights(trx, per_shot.layout.baseline("trx").for_shot(SHOTS, trained_shots=1).checkpoint("best"))
    methods = {
        "fsar_llava": head.eval(),
        "fsar_llava (visual only)": variant.eval(),
        "proto": create_metric("proto"),
        "trx": trx.eval(),
    }
    expected = evaluate_methods(methods, sources["test"], _episodes(per_shot.run_dir, SHOTS))
    assert list(per_shot.results[SHOTS]) == list(methods)
    for name in methods:
        assert per_shot.results[SHOTS][name].episode_accuracies == expected[name].episode_accuracies, name
    # Same seeds, same episodes: 1-shot results are the same with or without per-shot training; at 5 shots
    # the trained methods differ (another model) and the parameter-free baseline does not.
    for name in methods:
        assert per_shot.results[1][name].episode_accuracies == one_model.results[1][name].episode_accuracies, name
    assert _episodes(per_shot.run_dir, SHOTS).episodes == _episodes(one_model.run_dir, SHOTS).episodes
    for name in ("fsar_llava", "fsar_llava (visual only)", "trx"):
        assert per_shot.results[SHOTS][name].episode_accuracies != one_model.results[SHOTS][name].episode_accuracies
    assert per_shot.results[SHOTS]["proto"].episode_accuracies == one_model.results[SHOTS]["proto"].episode_accuracies


def test_without_per_shot_no_shot_folder_is_written_and_results_keep_their_format(runs):
    result = runs[False]
    assert [p for p in result.run_dir.rglob("shot*") if p.is_dir()] == []
    payload = json.loads(result.layout.results.read_text())
    assert set(payload) == {"format", "benchmark", "protocol", "features", "trained", "missing_videos", "results",
                            "config"}  # fmt: skip
    assert set(payload["trained"]) == {"fsar_llava", "trx"}
    assert payload["config"]["train"]["per_shot"] is False
    # The 5-shot results come from the 1-shot checkpoint.
    head = build_metric(_config(False), DIM, DIM)
    load_checkpoint_weights(head, result.layout.checkpoint("best"))
    test = result.sources["test"]
    expected = evaluate_methods({"fsar_llava": head.eval()}, test, _episodes(result.run_dir, SHOTS))["fsar_llava"]
    assert result.results[SHOTS]["fsar_llava"].episode_accuracies == expected.episode_accuracies


def test_a_second_call_reuses_the_results(runs, sources):
    first = runs[True]
    again = run_experiment(_config(True), first.run_dir, sources=sources, progress=False)
    assert again.reused
    assert again.trained == first.trained
    for shots, by_method in first.results.items():
        for name, r in by_method.items():
            assert again.results[shots][name].episode_accuracies == r.episode_accuracies
    quiet = apply_overrides(_config(True), ["features.progress=false", "train.log_every=1"])
    assert run_experiment(quiet, first.run_dir, sources=sources, progress=False).reused  # display settings only


def test_results_written_before_per_shot_existed_are_reused(runs, sources, tmp_path):
    """A results.json whose config has no ``train.per_shot`` (written before the key existed) is this
    config's results with per_shot = false: read back, not evaluated again."""
    run_dir = tmp_path / "old"
    shutil.copytree(runs[False].run_dir, run_dir)
    payload = json.loads((run_dir / "results.json").read_text())
    del payload["config"]["train"]["per_shot"]
    payload["results"]["1"]["proto"]["accuracy"] = -1.0  # a marker: re-evaluation would overwrite it
    (run_dir / "results.json").write_text(json.dumps(payload))
    again = run_experiment(_config(False), run_dir, sources=sources, progress=False)
    assert again.reused
    assert again.results[1]["proto"].accuracy == -1.0
    # Per-shot training is a training setting: a folder trained without it is refused, not mixed.
    with pytest.raises(ValueError, match=r"train\.per_shot: False -> True"):
        run_experiment(_config(True), run_dir, sources=sources, progress=False)


def test_a_killed_per_shot_training_resumes_in_its_own_folder(runs, sources, tmp_path):
    """Kill the 5-shot training of the method after step 3 (last.pt holds step 2): the next call resumes
    it and ends with the weights and results of the uninterrupted run; the finished trainings stay."""
    done = runs[True]
    run_dir = tmp_path / "killed"
    shutil.copytree(done.run_dir, run_dir)
    (run_dir / "results.json").unlink()
    shot_dir = RunLayout(run_dir).for_shot(SHOTS, trained_shots=1)
    shutil.rmtree(shot_dir.root)
    config = _config(True)
    train(shot_config(config, SHOTS), sources["train"], sources["val"], shot_dir.root, stop_after=3, progress=False)
    assert torch.load(shot_dir.checkpoint("last"), weights_only=True)["step"] == 2
    assert not RunLayout(run_dir).results.exists()
    resumed = run_experiment(config, run_dir, sources=sources, progress=False)
    assert not resumed.reused
    assert resumed.trained == done.trained
    reference = done.layout.for_shot(SHOTS, trained_shots=1)
    for which in ("best", "last"):
        ours, theirs = _weights(shot_dir.checkpoint(which)), _weights(reference.checkpoint(which))
        assert all(torch.equal(ours[k], theirs[k]) for k in theirs), which
    for shots, by_method in done.results.items():
        for name, r in by_method.items():
            assert resumed.results[shots][name].episode_accuracies == r.episode_accuracies, (shots, name)


def test_a_k_shot_folder_made_with_another_config_is_refused(runs, sources, tmp_path):
    run_dir = tmp_path / "stale"
    shutil.copytree(runs[True].run_dir, run_dir)
    (run_dir / "results.json").unlink()
    folder = RunLayout(run_dir).baseline("trx").for_shot(SHOTS, trained_shots=1)
    text = folder.config.read_text()
    assert "\nlr = 0.003\n" in text
    folder.config.write_text(text.replace("\nlr = 0.003\n", "\nlr = 0.001\n"))
    with pytest.raises(ValueError, match=r"training trx at 5 shots: run folder .*shot5 was made with a different.*"
                       r"train\.lr: 0\.001 -> 0\.003"):  # fmt: skip
        run_experiment(_config(True), run_dir, sources=sources, progress=False)


def test_a_shot_count_meta_train_cannot_fill_is_an_error_naming_it(sources, tmp_path):
    """8 shots need 10 videos per meta-train class (2 queries) and 9 per meta-val and test class (1 query);
    every split has 8. Without per-shot training the 8-shot evaluation is skipped; with it, the 8-shot
    training fails and says so."""
    assert 8 not in run_experiment(_config(False, "eval.shots=[1, 8]"), tmp_path / "a", sources=sources,
                                   progress=False).results  # fmt: skip
    with pytest.raises(ValueError, match=r"train\.per_shot: training fsar_llava at 8 shots: .*class0"):
        run_experiment(_config(True, "eval.shots=[1, 8]"), tmp_path / "b", sources=sources, progress=False)


def test_every_rank_runs_the_per_shot_trainings(sources, tmp_path, monkeypatch):
    """Under torchrun a rank other than 0 trains everything rank 0 trains (collectives need every rank)
    and returns without results. Simulated in one process with RANK=1."""
    monkeypatch.setenv("RANK", "1")
    result = run_experiment(_config(True), tmp_path / "rank1", sources=sources, progress=False)
    assert result.results == {}
    assert set(result.trained) == {"fsar_llava", "trx", "fsar_llava@5shot", "trx@5shot"}
    assert all(summary["steps"] == 4 for summary in result.trained.values())
    assert not result.layout.results.exists()
