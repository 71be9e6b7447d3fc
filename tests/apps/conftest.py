"""Fixtures for the apps' tests: small stores and heads."""

from __future__ import annotations

import pytest
import torch

from fsar_apps.store import PrototypeStore, StoreRecipe

DIM, N_FRAMES = 16, 4


@pytest.fixture
def recipe() -> StoreRecipe:
    return StoreRecipe({"model": "tiny-video-llava", "layer": -1}, head_hash="head-a", dim=DIM, n_frames=N_FRAMES)


@pytest.fixture
def store(tmp_path, recipe) -> PrototypeStore:
    return PrototypeStore.open(tmp_path / "store", recipe)


@pytest.fixture
def prototypes():
    """Ten well-separated actions: visual [10, T, D] and text [10, D]."""
    gen = torch.Generator().manual_seed(0)
    return torch.randn(10, N_FRAMES, DIM, generator=gen), torch.randn(10, DIM, generator=gen)
