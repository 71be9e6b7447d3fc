"""Fixtures for the apps' tests: small stores and heads."""

from __future__ import annotations

import pytest
import torch

from fsar_apps.store import PrototypeStore, StoreRecipe
from fsar_features import FeatureRecipe

DIM, N_FRAMES = 16, 4


@pytest.fixture
def feature_recipe() -> FeatureRecipe:
    """The feature recipe of a small store (D_in = 32, T = N_FRAMES; the head maps it to D)."""
    return FeatureRecipe(
        backend="tiny-video-llava", model_id="tiny-video-llava", family="video-llava", dim=32, n_layers=2,
        layers=(2,), visual_pooling="mean", text_pooling="last", n_frames=N_FRAMES, sampling="uniform",
        sampling_seed=None, frame_size=32, crop_size=32, scenario="generic", roles=("query", "support"),
    )  # fmt: skip


@pytest.fixture
def recipe(feature_recipe) -> StoreRecipe:
    return StoreRecipe(feature_recipe, head_hash="head-a", dim=DIM, n_frames=N_FRAMES)


@pytest.fixture
def store(tmp_path, recipe) -> PrototypeStore:
    return PrototypeStore.open(tmp_path / "store", recipe)


@pytest.fixture
def prototypes():
    """Ten well-separated actions: visual [10, T, D] and text [10, D]."""
    gen = torch.Generator().manual_seed(0)
    return torch.randn(10, N_FRAMES, DIM, generator=gen), torch.randn(10, DIM, generator=gen)
