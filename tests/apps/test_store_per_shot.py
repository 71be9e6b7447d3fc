"""The store of a per-shot run (``train.per_shot``) uses the head trained at the store's shot count."""

from __future__ import annotations

import shutil

import pytest
import torch

from fsar_apps.store import build_store_from_run, head_fingerprint, load_trained_run
from fsar_apps.store._run import STORE_SHOTS
from fsar_features import FeatureCache, FeatureRecipe
from fsar_train import ExperimentConfig, RunLayout, TensorFeatures, apply_overrides, run_experiment

DIM = 24


def _task(seed: int, n_classes: int = 4, per_class: int = 7) -> TensorFeatures:
    """``[V, 4, DIM]`` visual features near a per-class vector, with label-aware and label-free text."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_classes, DIM, generator=gen)
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    visual = centres[labels][:, None] + torch.randn(len(labels), 4, DIM, generator=gen)

    def text() -> torch.Tensor:
        return centres[labels] + 0.5 * torch.randn(len(labels), DIM, generator=gen)

    return TensorFeatures(visual, labels, label_aware_text=text(), label_free_text=text())


def _config(cache_dir, per_shot: bool) -> ExperimentConfig:
    return apply_overrides(
        ExperimentConfig(),
        [
            "features.source=mllm",
            "features.n_frames=4",
            f"features.cache_dir='{cache_dir.as_posix()}'",
            "metric.name=fsar_llava",
            "metric.options.dim=16",
            "metric.options.n_frames=4",
            "metric.options.n_heads=2",
            "episodes.n_way=3",
            "episodes.n_shot=1",
            "episodes.train_queries=1",
            "train.steps=2",
            "train.episodes_per_step=2",
            "train.lr=3e-3",
            "train.warmup_steps=1",
            "train.val_every=2",
            "train.val_episodes=5",
            "train.device=cpu",
            f"train.per_shot={str(per_shot).lower()}",
            f"eval.shots=[1, {STORE_SHOTS}]",
            "eval.episodes=5",
            "eval.baselines=[]",
            "eval.trained_baselines=[]",
            "eval.head_ablations=[]",
        ],
    )


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """One intra-op thread for these tiny tensors (two spin against other processes on 2 cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def per_shot_run(tmp_path_factory):
    """A trained per-shot run of the head on in-memory features, with an (empty) feature cache whose
    recipe gives the store its widths."""
    root = tmp_path_factory.mktemp("store_per_shot")
    recipe = FeatureRecipe(
        backend="tiny-video-llava", model_id="m", family="video-llava", dim=DIM, n_layers=2, layers=(2,),
        visual_pooling="mean", text_pooling="last", n_frames=4, sampling="uniform", sampling_seed=None,
        frame_size=32, crop_size=32, scenario="generic", roles=("query", "support"),
    )  # fmt: skip
    FeatureCache.create(root / "cache", recipe)
    sources = {"train": _task(1, n_classes=5), "val": _task(2), "test": _task(3)}
    result = run_experiment(_config(root / "cache", True), root / "run", sources=sources, progress=False)
    assert set(result.trained) == {"fsar_llava", f"fsar_llava@{STORE_SHOTS}shot"}
    return root, sources


def _state(path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def test_the_store_head_is_the_one_trained_at_the_stores_shot_count(per_shot_run):
    root, _ = per_shot_run
    layout = RunLayout(root / "run")
    own = layout.for_shot(STORE_SHOTS, trained_shots=1).checkpoint("best")
    run = load_trained_run(layout.root)
    assert run.checkpoint == own
    assert run.folder == layout.root  # the store stays <run>/store
    saved = _state(own)
    assert all(torch.equal(v, saved[k]) for k, v in run.head.state_dict().items())
    main = load_trained_run(layout.root, shots=1)  # the trained K: the main head
    assert main.checkpoint == layout.checkpoint("best")
    assert run.recipe.head_hash == head_fingerprint(run.head) != main.recipe.head_hash


def test_a_run_built_store_records_the_per_shot_head(per_shot_run, tmp_path):
    root, sources = per_shot_run
    run_dir = tmp_path / "run"
    shutil.copytree(root / "run", run_dir)
    store = build_store_from_run(run_dir, sources=sources)
    assert len(store) == 4
    assert {a.shots for a in store.list()} == {STORE_SHOTS}
    assert store.recipe == load_trained_run(run_dir).recipe  # `store add` / `query` load the same head
    run = load_trained_run(run_dir)
    assert store.recipe.feature_recipe == FeatureCache.open(root / "cache").recipe  # the cache's own recipe
    assert store.recipe.mpmm == run.head.config.mpmm  # the head's MPMM settings: queries use them
    assert store.recipe.head_hash != load_trained_run(run_dir, shots=1).recipe.head_hash


def test_without_the_shot_folder_or_per_shot_training_the_store_uses_the_main_head(per_shot_run, tmp_path):
    root, _ = per_shot_run
    run_dir = tmp_path / "run"
    shutil.copytree(root / "run", run_dir)
    layout = RunLayout(run_dir)
    shot_folder = layout.for_shot(STORE_SHOTS, trained_shots=1).root
    # A run folder without per-shot training that happens to hold a shot5/ folder ignores it.
    config_text = layout.config.read_text()
    assert "per_shot = true" in config_text
    layout.config.write_text(config_text.replace("per_shot = true", "per_shot = false"))
    assert load_trained_run(run_dir).checkpoint == layout.checkpoint("best")
    # A per-shot run whose shot5/ folder is missing (e.g. eval.shots without 5) falls back too.
    layout.config.write_text(config_text)
    shutil.rmtree(shot_folder)
    assert load_trained_run(run_dir).checkpoint == layout.checkpoint("best")


def test_a_per_shot_folder_without_a_checkpoint_keeps_the_error_message(per_shot_run, tmp_path):
    root, _ = per_shot_run
    run_dir = tmp_path / "run"
    shutil.copytree(root / "run", run_dir)
    best = RunLayout(run_dir).for_shot(STORE_SHOTS, trained_shots=1).checkpoint("best")
    best.unlink()
    with pytest.raises(FileNotFoundError, match=rf"shot{STORE_SHOTS}/best.pt does not exist: train the run first"):
        load_trained_run(run_dir)
