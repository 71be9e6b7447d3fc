"""Frame sampling strategies: which T source frames of an n-frame video to read.

The protocol behind them: docs/protocol.md, "Frame sampling and spatial preprocessing".

A strategy maps ``(n_available, n_frames, generator)`` to ``n_frames`` source indices in
``[0, n_available)``, in temporal order. Strategies live in a registry (``register_sampler``), so a
new one needs no change here.

Padding policy for videos shorter than T (``n_available < n_frames``): both shipped strategies
stretch the video in time, i.e. they return each available frame about ``T / n`` times, in order
(sampling with replacement, evenly spread). A one-frame video gives T copies of frame 0. Repeating
only the last frame was rejected: it puts all the padding at the end and shifts the temporal
alignment that OTAM-style metrics rely on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch

from fsar_metric.errors import InputError
from fsar_metric.registry import NoDeclared, Registry

__all__ = ["Generator", "Sampler", "list_samplers", "register_sampler", "sample_indices"]

#: A source of randomness for training-time sampling: a numpy or a torch generator.
Generator = np.random.Generator | torch.Generator


class Sampler(Protocol):
    """A frame-sampling strategy."""

    def __call__(self, n_available: int, n_frames: int, generator: Generator | None) -> list[int]:
        """Choose source frames.

        Args:
            n_available: frames in the video (≥ 1).
            n_frames: T, how many indices to return (≥ 1).
            generator: randomness for training-time sampling; None means deterministic (test time).

        Returns:
            T indices in ``[0, n_available)``, non-decreasing.
        """
        ...


SAMPLERS: Registry[Sampler, NoDeclared] = Registry("frame sampler")


def register_sampler(name: str) -> Callable[[Sampler], Sampler]:
    """Decorator that registers a sampling strategy under ``name``.

    Raises:
        ValueError: ``name`` is already registered.
    """
    return SAMPLERS.register(name)


def list_samplers() -> list[str]:
    """Names of the registered sampling strategies, sorted."""
    return SAMPLERS.names()


def _uniforms(n: int, generator: Generator) -> np.ndarray:
    """``n`` floats in [0, 1) from a numpy or torch generator (float64 either way)."""
    if isinstance(generator, np.random.Generator):
        return generator.random(n)
    if isinstance(generator, torch.Generator):
        return torch.rand(n, generator=generator, dtype=torch.float64).numpy()
    raise InputError(f"generator must be a numpy.random.Generator or a torch.Generator, got {type(generator).__name__}")


@register_sampler("uniform")
def uniform(n_available: int, n_frames: int, generator: Generator | None = None) -> list[int]:
    """T indices by ``linspace(0, n - 1, T)``, rounded; deterministic (the generator is ignored).

    Example:
        >>> uniform(100, 8)
        [0, 14, 28, 42, 57, 71, 85, 99]
        >>> uniform(3, 8)  # shorter than T: each frame repeated, in order
        [0, 0, 1, 1, 1, 1, 2, 2]
    """
    # Round half up (floor(x + 0.5)), not numpy's half-to-even, so the indices are the obvious ones
    # when written down by hand; in integers, floor((2·i·(n − 1) + (T − 1)) / (2·(T − 1))), so that
    # an exact half is never lost to float rounding (the float linspace lost some for T − 1 not a
    # power of two, e.g. T = 15; T = 8 and 16 give the same indices either way, tested).
    if n_frames == 1:
        return [0]
    steps = n_frames - 1
    return [(2 * i * (n_available - 1) + steps) // (2 * steps) for i in range(n_frames)]


@register_sampler("segments")
def segments(n_available: int, n_frames: int, generator: Generator | None = None) -> list[int]:
    """TSN sampling: T equal segments, the centre of each (test) or a random offset in each (training).

    Segment ``i`` covers ``[i·n/T, (i+1)·n/T)``. Without a generator the index is
    ``floor((i + 0.5)·n/T)``; with one it is ``floor((i + u_i)·n/T)`` for ``u_i`` uniform in [0, 1).

    Example:
        >>> segments(80, 8)
        [5, 15, 25, 35, 45, 55, 65, 75]
        >>> segments(80, 8, np.random.default_rng(0))  # training: a random offset per segment
        [6, 12, 20, 30, 48, 59, 66, 77]
    """
    if generator is None:
        # floor((i + 1/2)·n/T) in integers: (i + 0.5)·(n/T) in floats fell one frame short for some
        # T that are not powers of two (e.g. 7, 12); T = 8 and 16 give the same indices either way.
        return [min((2 * i + 1) * n_available // (2 * n_frames), n_available - 1) for i in range(n_frames)]
    positions = (np.arange(n_frames) + _uniforms(n_frames, generator)) * (n_available / n_frames)
    return [min(int(p), n_available - 1) for p in np.floor(positions)]


def sample_indices(
    n_available: int, n_frames: int = 8, strategy: str = "uniform", generator: Generator | None = None
) -> list[int]:
    """Source frame indices for a video of ``n_available`` frames.

    Args:
        n_available: frames in the video.
        n_frames: T.
        strategy: a registered strategy (``list_samplers()``).
        generator: randomness for training-time sampling (``segments``); None is deterministic.

    Returns:
        T non-decreasing indices in ``[0, n_available)``; repeats when ``n_available < T`` (module
        docstring: padding policy).

    Raises:
        ValueError: unknown strategy (the message lists the registered ones), ``n_available < 1`` or
            ``n_frames < 1``.

    Example:
        >>> sample_indices(250, 8, "segments")
        [15, 46, 78, 109, 140, 171, 203, 234]
    """
    sampler = SAMPLERS.get(strategy)
    if n_available < 1:
        raise InputError(f"cannot sample frames from a video with {n_available} frames")
    if n_frames < 1:
        raise InputError(f"n_frames must be at least 1, got {n_frames}")
    indices = sampler(n_available, n_frames, generator)
    if len(indices) != n_frames or any(not 0 <= i < n_available for i in indices):
        raise InputError(
            f"frame sampler {strategy!r} returned {indices} for n_available={n_available}, n_frames={n_frames}"
        )
    return indices
