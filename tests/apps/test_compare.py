"""``fsar compare`` across replicates: each replicate paired over its episodes, then a t-interval."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from fsar_apps._compare import (
    RunResults,
    comparison_markdown,
    paired_difference,
    replicated_difference,
    t_quantile_975,
)


def _run(label: str, accuracies: dict[str, list[float]]) -> RunResults:
    summary = {"1": {m: {"accuracy": 100 * sum(v) / len(v), "ci95": 0.0} for m, v in accuracies.items()}}
    return RunResults(label, Path(label), summary, {"1": accuracies}, {"1": "same-episodes"})


def _replicates() -> list[RunResults]:
    # Replicate i: the head beats trx by exactly (i + 1) * 10 points on every one of 4 episodes.
    runs = []
    for i in range(3):
        trx = [0.2, 0.4, 0.6, 0.4]
        runs.append(_run(f"s{i}", {"head": [x + 0.1 * (i + 1) for x in trx], "trx": trx}))
        runs.append(_run(f"s{i}-free", {"head": [x + 0.05 for x in trx], "trx": trx}))
    return runs


def test_replicates_are_paired_within_and_summarised_across_with_a_t_interval():
    runs = _replicates()
    groups = {"pre": ["s0", "s1", "s2"], "free": ["s0-free", "s1-free", "s2-free"]}
    within = replicated_difference(runs, groups, "pre/head", "pre/trx", 1)
    assert [round(m.mean, 9) for m in within.members] == [10.0, 20.0, 30.0]
    assert within.mean == pytest.approx(20.0)
    assert within.ci95 == pytest.approx(4.303 * 10.0 / math.sqrt(3))  # sd of (10, 20, 30) is 10
    across = replicated_difference(runs, groups, "pre/head", "free/head", 1)  # member by member
    assert [round(m.mean, 9) for m in across.members] == [5.0, 15.0, 25.0]
    one_side = replicated_difference(runs, groups, "pre/head", "s0/trx", 1)  # a plain run on one side
    assert [round(m.mean, 9) for m in one_side.members] == [10.0, 20.0, 30.0]
    # Each member is the ordinary paired difference of its runs.
    assert within.members[1] == paired_difference(runs, "s1/head", "s1/trx", 1)
    text = comparison_markdown(runs, [], [within])
    assert "| pre/head − pre/trx | 1 | +10.00 / +20.00 / +30.00 | +20.00 ± 24.84 (n = 3) |" in text


def test_groups_of_different_sizes_are_refused():
    runs = _replicates()
    with pytest.raises(ValueError, match=r"'a/head' has 3 replicates and 'b/head' 2"):
        replicated_difference(runs, {"a": ["s0", "s1", "s2"], "b": ["s0", "s1"]}, "a/head", "b/head", 1)


def test_t_quantiles():
    assert t_quantile_975(1) == 12.706
    assert t_quantile_975(30) == 2.042
    assert t_quantile_975(31) == 1.96
    with pytest.raises(ValueError, match="degrees of freedom must be >= 1"):
        t_quantile_975(0)
