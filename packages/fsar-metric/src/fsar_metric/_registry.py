"""The metric registry and the ``Metric`` protocol (timm's ``register_model`` pattern).

A metric is an ``nn.Module`` whose forward follows the one tensor contract of fsar::

    logits = metric(support, query, *, support_text=None, query_text=None)
    # support [N, K, T, D] (way-major), query [Q, T, D]  ->  logits [Q, N], larger = more similar

Registering a metric puts it under the contract tests in ``tests/metric/test_contract.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar, runtime_checkable

from torch import Tensor, nn

__all__ = ["Metric", "create_metric", "get_metric_class", "list_metrics", "register_metric"]


@runtime_checkable
class Metric(Protocol):
    """What every registered metric provides."""

    #: True when the metric reads ``support_text`` / ``query_text``; visual-only metrics accept and
    #: ignore them, so a trainer can call every metric the same way.
    uses_text: bool

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
            support_text: ``[N, K, D_t]`` text features of the support videos (multimodal metrics).
            query_text: ``[Q, D_t]`` text features of the queries (multimodal metrics).

        Returns:
            ``[Q, N]`` logits, larger = more similar.
        """
        ...


_METRICS: dict[str, type[nn.Module]] = {}

M = TypeVar("M", bound=type[nn.Module])


def register_metric(name: str) -> Callable[[M], M]:
    """Class decorator that registers a metric under ``name``.

    Raises:
        ValueError: ``name`` is already registered, or the class is not an ``nn.Module``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from fsar_metric import register_metric, create_metric
        >>> @register_metric("doc_mean_cosine")
        ... class MeanCosine(nn.Module):
        ...     uses_text = False
        ...     def forward(self, support, query, *, support_text=None, query_text=None):
        ...         p = nn.functional.normalize(support.mean((1, 2)), dim=-1)  # [N, D]
        ...         q = nn.functional.normalize(query.mean(1), dim=-1)         # [Q, D]
        ...         return q @ p.T                                               # [Q, N]
        >>> create_metric("doc_mean_cosine")(torch.randn(5, 1, 8, 16), torch.randn(3, 8, 16)).shape
        torch.Size([3, 5])
        >>> from fsar_metric._registry import _METRICS; _ = _METRICS.pop("doc_mean_cosine")
    """

    def decorator(cls: M) -> M:
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise ValueError(f"register_metric({name!r}) expects an nn.Module subclass, got {cls!r}")
        if name in _METRICS:
            raise ValueError(f"a metric named {name!r} is already registered ({_METRICS[name].__qualname__})")
        _METRICS[name] = cls
        return cls

    return decorator


def list_metrics() -> list[str]:
    """Names of all registered metrics, sorted."""
    return sorted(_METRICS)


def get_metric_class(name: str) -> type[nn.Module]:
    """The class registered under ``name``.

    Raises:
        ValueError: unknown name; the message lists the registered ones.
    """
    try:
        return _METRICS[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}; registered metrics: {', '.join(list_metrics())}") from None


def create_metric(name_or_module: str | nn.Module, **kwargs: Any) -> nn.Module:
    """Build a registered metric by name, or pass an existing module through unchanged.

    Args:
        name_or_module: a registered name (see ``list_metrics()``) or an ``nn.Module``.
        **kwargs: constructor arguments of the metric. Metrics with parameters take the feature
            width as ``dim``.

    Raises:
        ValueError: unknown name, or keyword arguments given together with a module.

    Example:
        >>> import torch
        >>> from fsar_metric import create_metric
        >>> otam = create_metric("otam", smoothing=0.1)
        >>> otam(torch.randn(5, 2, 8, 32), torch.randn(10, 8, 32)).shape
        torch.Size([10, 5])
    """
    if isinstance(name_or_module, nn.Module):
        if kwargs:
            raise ValueError(
                f"create_metric got a module and the keyword arguments {sorted(kwargs)}; pass one or the other"
            )
        return name_or_module
    if not isinstance(name_or_module, str):
        raise ValueError(f"create_metric expects a metric name or an nn.Module, got {type(name_or_module).__name__}")
    return get_metric_class(name_or_module)(**kwargs)
