"""Scenario presets for the standard benchmarks, as data (``fsar_prompts/data/benchmark_scenarios.toml``).

SSv2 classes differ by object interaction and direction of motion, so SSv2-Full and SSv2-Small use
the ``temporal`` wording; Kinetics-100, UCF101 and HMDB51 classes differ by the actor, body movement
and scene, so they use ``appearance`` (docs/prompts.md, "Scenario presets"). fsar's
``synthetic-actions`` benchmark uses ``temporal``.
"""

from __future__ import annotations

import functools

from fsar_prompts._data import PACKAGE, check_keys, read_toml, shipped
from fsar_prompts._errors import PromptError

__all__ = ["list_benchmarks", "scenario_for"]


@functools.cache
def _presets() -> dict[str, str]:
    data, source = read_toml(shipped("data/benchmark_scenarios.toml"), f"{PACKAGE}/data/benchmark_scenarios.toml")
    check_keys(data, required={"scenario"}, where=source)
    return dict(data["scenario"])


def list_benchmarks() -> list[str]:
    """Benchmarks with a scenario preset, sorted.

    Example:
        >>> list_benchmarks()
        ['hmdb51', 'kinetics100', 'ssv2-full', 'ssv2-small', 'synthetic-actions', 'ucf101']
    """
    return sorted(_presets())


def scenario_for(benchmark: str) -> str:
    """The prompt scenario preset for a benchmark.

    Raises:
        ValueError: unknown benchmark; the message lists the known ones.

    Example:
        >>> scenario_for("ssv2-small"), scenario_for("ucf101")
        ('temporal', 'appearance')
    """
    try:
        return _presets()[benchmark]
    except (KeyError, TypeError):
        raise PromptError(f"unknown benchmark {benchmark!r}; benchmarks: {', '.join(list_benchmarks())}") from None
