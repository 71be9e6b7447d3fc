"""The metric registry, the ``Metric`` protocol and what each metric declares (its capabilities).

A metric is an ``nn.Module`` whose forward follows the one tensor contract of fsar::

    logits = metric(support, query, *, support_text=None, query_text=None)
    # support [N, K, T, D] (way-major), query [Q, T, D]  ->  logits [Q, N], larger = more similar

What a metric can do beyond that is declared when it is registered, never found by probing its
attributes: ``register_metric(name, uses_text=…, uses_label_free_support=…, pools_per_video=…,
owns_losses=…)`` (all False by default: a visual-only metric scored by ``forward`` and trained with
episode cross-entropy). ``metric_capabilities(name_or_module)`` returns them.

Widths. A metric whose size follows the input feature width takes it as ``in_dim`` (one keyword for
every metric) and declares ``takes_in_dim=True``; ``sizes(in_dim, text_dim)`` may declare the other
widths that follow the feature widths by default (a trainer passes them unless its options set them).

Registering a metric puts it under the contract tests in ``tests/metric/test_contract.py``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

from torch import Tensor, nn

from fsar_metric.errors import InputError
from fsar_metric.registry import Registry

__all__ = [
    "METRICS",
    "Metric",
    "MetricCapabilities",
    "MetricSpec",
    "OwnsLosses",
    "PoolsPerVideo",
    "create_metric",
    "get_metric_class",
    "list_metrics",
    "metric_capabilities",
    "metric_spec",
    "register_metric",
]


@runtime_checkable
class Metric(Protocol):
    """What every registered metric provides."""

    def __call__(
        self,
        support: Tensor,
        query: Tensor,
        *,
        support_text: Tensor | None = None,
        query_text: Tensor | None = None,
    ) -> Tensor:
        """Score every query against every class.

        Args:
            support: ``[N, K, T, D]`` way-major support features.
            query: ``[Q, T, D]`` query features.
            support_text: ``[N, K, D_t]`` text features of the support videos (metrics that declare
                ``uses_text``; visual-only metrics accept and ignore it).
            query_text: ``[Q, D_t]`` text features of the queries (likewise).

        Returns:
            ``[Q, N]`` logits, larger = more similar.
        """
        ...


@runtime_checkable
class PoolsPerVideo(Protocol):
    """The methods a metric declared ``pools_per_video`` has: encode every video once, score episodes
    from the pool (the result equals ``forward`` on the same episode)."""

    def encode_pool(
        self, visual: Tensor, support_text: Tensor | None, query_text: Tensor | None, *, chunk_size: int | None = None
    ) -> Any:
        """``visual [P, T, D_in]``, label-aware ``support_text [P, D_t]``, label-free ``query_text
        [P, D_t]`` → an encoded pool of the P videos."""
        ...

    def score_pool(self, pool: Any, support_idx: Tensor, query_idx: Tensor) -> Tensor:
        """Logits ``[Q, N]`` of the episode ``support_idx [N, K]``, ``query_idx [Q]`` of the pool."""
        ...


@runtime_checkable
class OwnsLosses(Protocol):
    """The method a metric declared ``owns_losses`` has: its named loss terms of one episode."""

    def losses(self, episode: Any) -> dict[str, Tensor]:
        """``fsar_metric.Episode`` → named, already weighted loss terms."""
        ...


@dataclass(frozen=True)
class MetricCapabilities:
    """What a metric reads and provides beyond ``forward(support, query)``.

    Attributes:
        uses_text: ``forward`` reads ``support_text`` / ``query_text``; a metric without it gives the
            same logits whatever text is passed.
        uses_label_free_support: ``forward`` also reads ``support_text_free`` (the label-free prompt's
            text of the support videos); needs ``uses_text``.
        pools_per_video: the metric has ``encode_pool`` / ``score_pool`` (``PoolsPerVideo``); an
            evaluator encodes every video once and scores episodes from the pool.
        owns_losses: the metric has ``losses(episode)`` (``OwnsLosses``), used instead of episode
            cross-entropy.
    """

    uses_text: bool = False
    uses_label_free_support: bool = False
    pools_per_video: bool = False
    owns_losses: bool = False

    def __post_init__(self) -> None:
        if self.uses_label_free_support and not self.uses_text:
            raise InputError("uses_label_free_support needs uses_text (the label-free text is text)")


#: ``(in_dim, text_dim) → keyword arguments``: widths that follow the feature widths by default.
Sizes = Callable[[int, int], Mapping[str, Any]]


@dataclass(frozen=True)
class MetricSpec:
    """What a registered metric declares (the metadata of its registry entry).

    Attributes:
        capabilities: see ``MetricCapabilities``.
        takes_in_dim: the constructor takes the input feature width D_in as ``in_dim`` (a trainer
            passes it); False for metrics without width-dependent parameters.
        sizes: ``(in_dim, text_dim) → {option: value}``, other widths that follow the feature widths
            unless the options set them (None: none).
        renamed_options: ``{old keyword: new keyword}`` of constructor options that were renamed;
            passing an old one raises an error naming the new one.
    """

    capabilities: MetricCapabilities = field(default_factory=MetricCapabilities)
    takes_in_dim: bool = False
    sizes: Sizes | None = None
    renamed_options: Mapping[str, str] = field(default_factory=dict, compare=False)


def _check_module_class(name: str, cls: type[nn.Module]) -> None:
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise InputError(f"register_metric({name!r}) expects an nn.Module subclass, got {cls!r}")


#: Every registered metric: ``METRICS.entry(name)`` gives its class and ``MetricSpec``.
METRICS: Registry[type[nn.Module], MetricSpec] = Registry("metric", declared=MetricSpec, check=_check_module_class)

M = TypeVar("M", bound=type[nn.Module])


def register_metric(
    name: str,
    *,
    uses_text: bool = False,
    uses_label_free_support: bool = False,
    pools_per_video: bool = False,
    owns_losses: bool = False,
    takes_in_dim: bool = False,
    sizes: Sizes | None = None,
    renamed_options: Mapping[str, str] | None = None,
) -> Callable[[M], M]:
    """Class decorator that registers a metric under ``name`` with what it declares.

    Args:
        name: the registry name.
        uses_text, uses_label_free_support, pools_per_video, owns_losses: its ``MetricCapabilities``.
        takes_in_dim, sizes, renamed_options: see ``MetricSpec``.

    Raises:
        ValueError: ``name`` is already registered, the class is not an ``nn.Module``, or it lacks
            the methods a declared capability needs (``PoolsPerVideo``, ``OwnsLosses``).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from fsar_metric import METRICS, create_metric, metric_capabilities, register_metric
        >>> @register_metric("doc_mean_cosine")
        ... class MeanCosine(nn.Module):
        ...     def forward(self, support, query, *, support_text=None, query_text=None):
        ...         p = nn.functional.normalize(support.mean((1, 2)), dim=-1)  # [N, D]
        ...         q = nn.functional.normalize(query.mean(1), dim=-1)         # [Q, D]
        ...         return q @ p.T                                               # [Q, N]
        >>> create_metric("doc_mean_cosine")(torch.randn(5, 1, 8, 16), torch.randn(3, 8, 16)).shape
        torch.Size([3, 5])
        >>> metric_capabilities("doc_mean_cosine").uses_text
        False
        >>> _ = METRICS.unregister("doc_mean_cosine")
    """
    capabilities = MetricCapabilities(uses_text, uses_label_free_support, pools_per_video, owns_losses)

    def decorator(cls: M) -> M:
        for declared, protocol in ((pools_per_video, PoolsPerVideo), (owns_losses, OwnsLosses)):
            if declared and isinstance(cls, type) and not issubclass(cls, protocol):
                raise InputError(
                    f"metric {name!r} declares {'pools_per_video' if protocol is PoolsPerVideo else 'owns_losses'} "
                    f"but {cls.__qualname__} lacks the {protocol.__name__} method(s)"
                )
        return METRICS.register(
            name,
            cls,
            capabilities=capabilities,
            takes_in_dim=takes_in_dim,
            sizes=sizes,
            renamed_options=dict(renamed_options or {}),
        )

    return decorator


def list_metrics() -> list[str]:
    """Names of all registered metrics, sorted."""
    return METRICS.names()


def get_metric_class(name: str) -> type[nn.Module]:
    """The class registered under ``name``.

    Raises:
        ValueError: unknown name; the message lists the registered ones.
    """
    return METRICS.get(name)


def metric_spec(name: str) -> MetricSpec:
    """What the metric registered under ``name`` declares (raises ``ValueError`` for an unknown name)."""
    return METRICS.entry(name).declared


def metric_capabilities(metric: str | nn.Module) -> MetricCapabilities:
    """The declared capabilities of a metric, given by name or as a module.

    A module gets the capabilities of its class's registration, or of the nearest registered base
    class (a subclass of a registered metric inherits what it declared). A module whose class is not
    registered at all is a plain visual-only metric (``MetricCapabilities()``): to read text or own
    its losses, a metric must be registered with the capability.

    Raises:
        ValueError: an unknown name.

    Example:
        >>> from fsar_metric import create_metric, metric_capabilities
        >>> metric_capabilities("fsar_llava").pools_per_video, metric_capabilities(create_metric("otam")).uses_text
        (True, False)
    """
    if isinstance(metric, str):
        return metric_spec(metric).capabilities
    by_class = {METRICS.get(name): name for name in METRICS}
    for cls in type(metric).__mro__:
        if cls in by_class:
            return metric_spec(by_class[cls]).capabilities
    return MetricCapabilities()


def _check_options(name: str, cls: type[nn.Module], spec: MetricSpec, kwargs: Mapping[str, Any]) -> None:
    """Renamed options, and options a constructor without ``**kwargs`` does not take, raise ValueError.

    The one signature read of the registry: it lists a metric's options in the error message.
    """
    renamed = {old: new for old, new in spec.renamed_options.items() if old in kwargs}
    if renamed:
        moves = ", ".join(f"{old!r} is now called {new!r}" for old, new in renamed.items())
        raise InputError(f"metric {name!r}: the option {moves}; rename it (in a config: metric.options.<new name>)")
    parameters = inspect.signature(cls.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return  # the constructor checks its own fields (FSARLLaVA, MPMM: their config dataclasses)
    accepted = [p for p in parameters if p != "self"]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise InputError(f"metric {name!r} takes no option(s) {unknown}; it takes: {', '.join(accepted)}")


def create_metric(name_or_module: str | nn.Module, **kwargs: Any) -> nn.Module:
    """Build a registered metric by name, or pass an existing module through unchanged.

    Args:
        name_or_module: a registered name (see ``list_metrics()``) or an ``nn.Module``.
        **kwargs: constructor arguments of the metric. Metrics with width-dependent parameters take
            the input feature width as ``in_dim``.

    Raises:
        ValueError: unknown name, an option the metric does not take (the message lists its
            options) or one that was renamed (the message names the new one), or keyword arguments
            given together with a module.

    Example:
        >>> import torch
        >>> from fsar_metric import create_metric
        >>> otam = create_metric("otam", smoothing=0.1)
        >>> otam(torch.randn(5, 2, 8, 32), torch.randn(10, 8, 32)).shape
        torch.Size([10, 5])
    """
    if isinstance(name_or_module, nn.Module):
        if kwargs:
            raise InputError(
                f"create_metric got a module and the keyword arguments {sorted(kwargs)}; pass one or the other"
            )
        return name_or_module
    if not isinstance(name_or_module, str):
        raise InputError(f"create_metric expects a metric name or an nn.Module, got {type(name_or_module).__name__}")
    entry = METRICS.entry(name_or_module)
    _check_options(name_or_module, entry.obj, entry.declared, kwargs)
    return entry.obj(**kwargs)
