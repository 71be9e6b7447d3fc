from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest
import torch
from torch import nn

import fsar_metric
from fsar_metric import Metric, create_metric, get_metric_class, list_metrics, register_metric
from fsar_metric._registry import _METRICS


def test_list_is_sorted_and_complete():
    assert list_metrics() == sorted(list_metrics())
    assert {"bimhm", "otam", "proto", "trx"} <= set(list_metrics())


def test_create_metric_builds_the_registered_class_with_kwargs():
    otam = create_metric("otam", smoothing=0.5)
    assert type(otam) is get_metric_class("otam")
    assert otam.smoothing == 0.5
    assert isinstance(otam, Metric)


def test_create_metric_passes_a_module_through_unchanged():
    module = create_metric("proto")
    assert create_metric(module) is module
    with pytest.raises(ValueError, match="got a module and the keyword arguments"):
        create_metric(module, temperature=0.1)


def test_unknown_name_lists_the_registered_metrics():
    with pytest.raises(ValueError, match=r"unknown metric 'otamm'; registered metrics: bimhm, .*otam, proto, trx"):
        create_metric("otamm")


def test_registering_a_taken_name_raises():
    with pytest.raises(ValueError, match="a metric named 'otam' is already registered"):
        register_metric("otam")(type("Other", (nn.Module,), {}))


def test_registering_a_non_module_raises():
    with pytest.raises(ValueError, match=r"expects an nn.Module subclass"):
        register_metric("not_a_module")(int)


def test_a_user_metric_registers_and_builds():
    @register_metric("test_user_metric")
    class Negated(nn.Module):
        uses_text = False

        def forward(self, support, query, *, support_text=None, query_text=None):
            return -torch.cdist(query.mean(1), support.mean((1, 2)))

    try:
        assert "test_user_metric" in list_metrics()
        assert create_metric("test_user_metric")(torch.randn(3, 1, 4, 2), torch.randn(2, 4, 2)).shape == (2, 3)
    finally:
        _METRICS.pop("test_user_metric")


def test_docstring_examples_run():
    modules = [fsar_metric] + [
        importlib.import_module(info.name)
        for info in pkgutil.walk_packages(fsar_metric.__path__, prefix="fsar_metric.")
    ]
    failed, attempted = 0, 0
    for module in modules:
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        failed += result.failed
        attempted += result.attempted
    assert attempted >= 6
    assert failed == 0
