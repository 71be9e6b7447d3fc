"""Frame sampling strategies and the padding policy for short videos."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from fsar_features import list_samplers, sample_indices


@pytest.mark.parametrize("strategy", ["uniform", "segments"])
@pytest.mark.parametrize("n_available", [1, 3, 8, 9, 250])
def test_indices_are_t_sorted_and_in_range(strategy: str, n_available: int) -> None:
    indices = sample_indices(n_available, 8, strategy)
    assert len(indices) == 8
    assert indices == sorted(indices)
    assert all(0 <= i < n_available for i in indices)


def test_uniform_is_linspace_including_first_and_last_frame() -> None:
    assert sample_indices(100, 8, "uniform") == [0, 14, 28, 42, 57, 71, 85, 99]


def test_segments_without_generator_takes_segment_centres() -> None:
    assert sample_indices(80, 8, "segments") == [5, 15, 25, 35, 45, 55, 65, 75]


def test_segments_with_generator_draws_one_index_inside_each_segment() -> None:
    for seed in range(20):
        indices = sample_indices(80, 8, "segments", np.random.default_rng(seed))
        assert [i // 10 for i in indices] == list(range(8))


def test_segments_are_reproducible_from_numpy_and_torch_generators() -> None:
    a = sample_indices(300, 8, "segments", np.random.default_rng(3))
    assert a == sample_indices(300, 8, "segments", np.random.default_rng(3))
    t = sample_indices(300, 8, "segments", torch.Generator().manual_seed(3))
    assert t == sample_indices(300, 8, "segments", torch.Generator().manual_seed(3))


@pytest.mark.parametrize("strategy", ["uniform", "segments"])
def test_short_videos_repeat_every_frame_in_order(strategy: str) -> None:
    indices = sample_indices(3, 8, strategy)
    assert set(indices) == {0, 1, 2}
    assert indices == sorted(indices)
    assert sample_indices(1, 8, strategy) == [0] * 8


def test_unknown_strategy_lists_the_registered_ones() -> None:
    with pytest.raises(ValueError, match=r"'random'.*segments, uniform"):
        sample_indices(10, 8, "random")
    assert list_samplers() == ["segments", "uniform"]


@pytest.mark.parametrize(("n_available", "n_frames"), [(0, 8), (10, 0)])
def test_empty_video_or_zero_frames_is_refused(n_available: int, n_frames: int) -> None:
    with pytest.raises(ValueError, match="frames"):
        sample_indices(n_available, n_frames)


def test_a_bad_generator_type_is_refused() -> None:
    with pytest.raises(ValueError, match="generator must be"):
        sample_indices(10, 4, "segments", generator=42)  # type: ignore[arg-type]


def _exact_uniform(n: int, t: int) -> list[int]:
    """floor(i·(n − 1)/(T − 1) + 1/2) in exact rational arithmetic."""
    return [0] if t == 1 else [math.floor(Fraction(i * (n - 1), t - 1) + Fraction(1, 2)) for i in range(t)]


def _exact_centres(n: int, t: int) -> list[int]:
    """floor((i + 1/2)·n/T) in exact rational arithmetic."""
    return [min(math.floor((i + Fraction(1, 2)) * Fraction(n, t)), n - 1) for i in range(t)]


def test_deterministic_indices_are_exact_for_every_length_and_frame_count() -> None:
    # The float forms lost an exact half (uniform, T = 15, 23, …) or fell a frame short (segments,
    # T = 7, 12, …) for about 1 % of the (n, T) pairs.
    for t in range(1, 33):
        for n in range(1, 400):
            assert sample_indices(n, t, "uniform") == _exact_uniform(n, t), (n, t)
            assert sample_indices(n, t, "segments") == _exact_centres(n, t), (n, t)


@pytest.mark.parametrize("t", [8, 16])
def test_the_shipped_frame_counts_sample_the_frames_the_float_forms_sampled(t: int) -> None:
    """Caches extracted before the integer forms (T = 8, the default; 16) hold the same frames."""
    for n in range(1, 5000):
        old_uniform = [int(i) for i in np.floor(np.linspace(0, n - 1, t) + 0.5)]
        old_centres = [min(int(p), n - 1) for p in np.floor((np.arange(t) + 0.5) * (n / t))]
        assert sample_indices(n, t, "uniform") == old_uniform, n
        assert sample_indices(n, t, "segments") == old_centres, n
