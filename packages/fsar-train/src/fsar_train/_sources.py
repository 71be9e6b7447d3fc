"""Feature-source registry: how a run turns a split's videos into a ``FeatureSource``.

A factory takes the split (video ids, labels, class names and file paths) and the experiment config
and returns a ``FeatureSource``. fsar-train ships ``pixels`` (decoded, downsampled frames: a stand-in
that needs no model); the fsar-features cache registers its own name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from fsar_metric.registry import NoDeclared, Registry
from fsar_train._features import FeatureSource
from fsar_train._splits import DatasetSplit

if TYPE_CHECKING:
    from fsar_train._config import ExperimentConfig

__all__ = ["FeatureSourceFactory", "create_feature_source", "list_feature_sources", "register_feature_source"]

FeatureSourceFactory = Callable[[DatasetSplit, "ExperimentConfig"], FeatureSource]
F = TypeVar("F", bound=FeatureSourceFactory)

SOURCES: Registry[FeatureSourceFactory, NoDeclared] = Registry("feature source")


def register_feature_source(name: str) -> Callable[[F], F]:
    """Decorator registering ``factory(split, config) -> FeatureSource`` under ``name``.

    Raises:
        ValueError: ``name`` is already registered.
    """
    return SOURCES.register(name)


def list_feature_sources() -> list[str]:
    """Registered feature-source names, sorted."""
    return SOURCES.names()


def create_feature_source(name: str, split: DatasetSplit, config: ExperimentConfig) -> FeatureSource:
    """Build the named source for one split.

    Raises:
        ValueError: unknown name; the message lists the registered ones.
    """
    return SOURCES.get(name)(split, config)
