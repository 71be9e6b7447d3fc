"""Fixtures for fsar-train tests: split-file writers, a synthetic feature task, tiny configs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from fsar_train import ExperimentConfig, SyntheticConfig, TensorFeatures, apply_overrides


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """One intra-op thread: these tensors are tiny, and two OpenMP threads per process on a shared
    2-core machine spin against other processes (a 3 s test took minutes under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def write_file(tmp_path: Path) -> Callable[[str, str], Path]:
    """``write_file(relative_path, text)`` → the written path under ``tmp_path``."""

    def write(relative: str, text: str) -> Path:
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    return write


def make_trajectory_features(
    n_classes: int,
    videos_per_class: int,
    *,
    seed: int,
    pool_seed: int = 0,
    n_frames: int = 6,
    signal_dim: int = 8,
    nuisance_dim: int = 24,
    nuisance_scale: float = 1.5,
) -> TensorFeatures:
    """A feature task that needs learning: classes share one pool of frame codes (the same in every
    split) and differ only in their order (a trajectory), in ``signal_dim`` channels;
    ``nuisance_dim`` further channels carry a large per-video constant ("appearance") that dominates
    untrained cosine or projection distances.

    Returns:
        ``[C·V, T, signal_dim + nuisance_dim]`` features with labels ``0..C-1``.
    """
    # Every split shares the frame codes (primitives) and differs in their orders (classes).
    pool = torch.randn(n_frames, signal_dim, generator=torch.Generator().manual_seed(pool_seed))
    gen = torch.Generator().manual_seed(seed)
    orders = [torch.randperm(n_frames, generator=gen) for _ in range(n_classes)]
    videos, labels = [], []
    for c, order in enumerate(orders):
        for _ in range(videos_per_class):
            signal = pool[order] + 0.3 * torch.randn(n_frames, signal_dim, generator=gen)  # [T, d_s]
            appearance = nuisance_scale * torch.randn(1, nuisance_dim, generator=gen).expand(n_frames, -1)
            videos.append(torch.cat([signal, appearance], dim=1))  # [T, D]
            labels.append(c)
    return TensorFeatures(torch.stack(videos), labels)


@pytest.fixture
def trajectory_task() -> dict[str, TensorFeatures]:
    """Disjoint train / val classes of the trajectory task (each split draws its own orders)."""
    return {
        "train": make_trajectory_features(12, 10, seed=1),
        "val": make_trajectory_features(6, 10, seed=2),
        "test": make_trajectory_features(6, 10, seed=3),
    }


@pytest.fixture
def tiny_train_config() -> ExperimentConfig:
    """A few-step TRX run on the trajectory task (CPU, small widths)."""
    return apply_overrides(
        ExperimentConfig(),
        [
            "metric.name=trx",
            "metric.options.key_dim=16",
            "metric.options.cardinalities=[2]",
            "episodes.n_way=3",
            "episodes.n_shot=1",
            "episodes.train_queries=2",
            "train.steps=6",
            "train.episodes_per_step=2",
            "train.lr=3e-3",
            "train.warmup_steps=2",
            "train.val_every=3",
            "train.val_episodes=20",
            "train.checkpoint_every=2",
            "train.device=cpu",
        ],
    )


@pytest.fixture
def tiny_synthetic() -> SyntheticConfig:
    """44 videos of 4 frames at 32×32: the full grammar at the smallest size."""
    return SyntheticConfig(videos_per_class=1, n_frames=4, size=32, workers=1)
