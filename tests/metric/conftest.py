"""Fixtures for fsar-metric tests: seeded episodes and per-metric construction."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor, nn

import fsar_metric

# Small but asymmetric sizes, so a swapped axis cannot pass by accident.
N_WAY, N_SHOT, N_QUERY, N_FRAMES, DIM = 3, 2, 4, 5, 8


@dataclass(frozen=True)
class EpisodeTensors:
    """support ``[N, K, T, D]``, query ``[Q, T, D]``, text ``[N, K, D]`` / ``[Q, D]``, query labels ``[Q]``."""

    support: Tensor
    query: Tensor
    support_text: Tensor
    query_text: Tensor
    query_labels: Tensor


def make_episode(
    n_way: int = N_WAY,
    n_shot: int = N_SHOT,
    n_query: int = N_QUERY,
    n_frames: int = N_FRAMES,
    dim: int = DIM,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> EpisodeTensors:
    """A random episode drawn from a private generator (no global RNG state)."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype)

    return EpisodeTensors(
        support=randn(n_way, n_shot, n_frames, dim),
        query=randn(n_query, n_frames, dim),
        support_text=randn(n_way, n_shot, dim),
        query_text=randn(n_query, dim),
        query_labels=torch.randint(0, n_way, (n_query,), generator=gen),
    )


# Per-metric construction arguments for tests. Metrics declared `takes_in_dim` get the input width
# as `in_dim`; anything else a metric needs in tests goes here.
_TEST_KWARGS: dict[str, dict[str, object]] = {
    "trx": {"key_dim": 16},
    "fsar_llava": {"dim": 16, "n_heads": 2},
}


def build_metric(name: str, dim: int = DIM, n_frames: int = N_FRAMES, **overrides: object) -> nn.Module:
    """Construct a registered metric for tests, in eval mode, seeded."""
    cls = fsar_metric.get_metric_class(name)
    kwargs: dict[str, object] = dict(_TEST_KWARGS.get(name, {}))
    params = inspect.signature(cls).parameters
    if fsar_metric.metric_spec(name).takes_in_dim:
        kwargs["in_dim"] = dim
    if "cardinalities" in params:  # TRX: tuples cannot be longer than the clip
        kwargs["cardinalities"] = tuple(w for w in (1, 2, 3) if w <= n_frames)[-2:]
    kwargs.update(overrides)
    torch.manual_seed(0)
    return fsar_metric.create_metric(name, **kwargs).eval()


def call(metric: nn.Module, ep: EpisodeTensors) -> Tensor:
    """Run a metric on an episode, passing text only to metrics declared to read it."""
    if fsar_metric.metric_capabilities(metric).uses_text:
        return metric(ep.support, ep.query, support_text=ep.support_text, query_text=ep.query_text)
    return metric(ep.support, ep.query)


@pytest.fixture
def episode() -> Callable[..., EpisodeTensors]:
    return make_episode


@pytest.fixture
def build() -> Callable[..., nn.Module]:
    return build_metric


@pytest.fixture
def run_metric() -> Callable[[nn.Module, EpisodeTensors], Tensor]:
    return call
