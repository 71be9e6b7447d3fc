"""Scenario presets for the standard benchmarks (fsar_prompts/_scenarios.py)."""

from __future__ import annotations

import pytest

from fsar_prompts import list_benchmarks, list_scenarios, render_prompt, scenario_for


@pytest.mark.parametrize(
    ("benchmark", "scenario"),
    [
        ("ssv2-full", "temporal"),
        ("ssv2-small", "temporal"),
        ("kinetics100", "appearance"),
        ("ucf101", "appearance"),
        ("hmdb51", "appearance"),
        ("synthetic-actions", "temporal"),
    ],
)
def test_each_benchmark_maps_to_its_scenario(benchmark, scenario):
    assert scenario_for(benchmark) == scenario


def test_list_benchmarks_is_sorted_and_complete():
    assert list_benchmarks() == ["hmdb51", "kinetics100", "ssv2-full", "ssv2-small", "synthetic-actions", "ucf101"]


def test_every_preset_scenario_has_shipped_query_and_support_templates():
    for benchmark in list_benchmarks():
        scenario = scenario_for(benchmark)
        assert scenario in list_scenarios()
        assert render_prompt("video-llava", "query", scenario).template_id == f"query-{scenario}"
        assert render_prompt("video-llava", "support", scenario, label="x").template_id == f"support-{scenario}"


@pytest.mark.parametrize("benchmark", ["ssv2", "SSv2-Full", "kinetics", ""])
def test_unknown_benchmark_lists_the_known_ones(benchmark):
    with pytest.raises(ValueError, match=rf"unknown benchmark {benchmark!r}; benchmarks: hmdb51, kinetics100, "):
        scenario_for(benchmark)
