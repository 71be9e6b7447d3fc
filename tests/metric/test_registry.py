from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest
import torch
from torch import nn

import fsar_metric
from fsar_metric import (
    METRICS,
    Metric,
    MetricCapabilities,
    create_metric,
    get_metric_class,
    list_metrics,
    metric_capabilities,
    register_metric,
)


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
        def forward(self, support, query, *, support_text=None, query_text=None):
            return -torch.cdist(query.mean(1), support.mean((1, 2)))

    try:
        assert "test_user_metric" in list_metrics()
        assert create_metric("test_user_metric")(torch.randn(3, 1, 4, 2), torch.randn(2, 4, 2)).shape == (2, 3)
        assert metric_capabilities("test_user_metric") == MetricCapabilities()  # visual-only by default
    finally:
        METRICS.unregister("test_user_metric")


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


def test_capabilities_are_declared_on_the_registry_entry_not_on_the_class():
    assert metric_capabilities("fsar_llava") == MetricCapabilities(
        uses_text=True, uses_label_free_support=True, pools_per_video=True, owns_losses=True
    )
    assert metric_capabilities("mpmm") == MetricCapabilities(uses_text=True)
    for name in ("proto", "otam", "bimhm", "trx"):
        assert metric_capabilities(name) == MetricCapabilities()
    for name in list_metrics():
        assert not hasattr(get_metric_class(name), "uses_text"), f"{name} records uses_text a second time"


def test_a_module_gets_its_registered_class_capabilities_and_an_unregistered_one_none():
    assert metric_capabilities(create_metric("mpmm")).uses_text
    subclass = type("SubMPMM", (get_metric_class("mpmm"),), {})
    assert metric_capabilities(subclass()).uses_text  # inherited from the registered base

    class Unregistered(nn.Module):
        def forward(self, support, query):
            return query.mean((1, 2))[:, None] * support.mean((1, 2, 3))[None]

    assert metric_capabilities(Unregistered()) == MetricCapabilities()


def test_declaring_a_capability_without_its_methods_raises():
    with pytest.raises(ValueError, match=r"declares pools_per_video but Plain lacks the PoolsPerVideo method"):
        register_metric("test_plain_pool", pools_per_video=True)(type("Plain", (nn.Module,), {}))
    with pytest.raises(ValueError, match=r"declares owns_losses but Plain lacks the OwnsLosses method"):
        register_metric("test_plain_loss", owns_losses=True)(type("Plain", (nn.Module,), {}))
    with pytest.raises(ValueError, match="uses_label_free_support needs uses_text"):
        register_metric("test_plain_free", uses_label_free_support=True)
    assert "test_plain_pool" not in METRICS
    assert "test_plain_loss" not in METRICS


def test_unknown_and_renamed_options_name_what_is_wrong():
    with pytest.raises(ValueError, match=r"metric 'otam' takes no option\(s\) \['smothing'\]; it takes: smoothing, "):
        create_metric("otam", smothing=0.5)
    with pytest.raises(ValueError, match=r"metric 'trx': the option 'dim' is now called 'in_dim'"):
        create_metric("trx", dim=64)
    with pytest.raises(ValueError, match=r"metric 'mpmm' takes no option\(s\) \['in_dim'\]; MPMMConfig fields: "):
        create_metric("mpmm", in_dim=64)
