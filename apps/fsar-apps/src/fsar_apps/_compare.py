"""``fsar compare``: one table over several run folders, and paired differences on shared episodes.

Each run folder holds ``results.json`` (shots → method → accuracy ± CI and one accuracy per test
episode, for every method of the run). Runs whose test episode lists are byte-identical scored the same episodes,
so the difference of two methods is measured per episode: mean ± 1.96 · sd / √N of the paired
differences, much tighter than comparing two independent intervals.

That interval covers the sampling of episodes only. Replicates (runs that differ only in a seed: of
the MLLM's pretraining, of the head's training) cover what it leaves out: a group ``NAME`` of run
labels makes ``NAME/METHOD`` in a paired difference stand for each member in turn (two groups pair
member by member), and the differences are summarised across members as mean ± t₀.₉₇₅,ₙ₋₁ · sd / √n.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

from rich.table import Table

from fsar_metric.errors import InputError

__all__ = [
    "PairedDifference",
    "ReplicatedDifference",
    "RunResults",
    "comparison_markdown",
    "comparison_table",
    "load_run",
    "paired_difference",
    "replicated_difference",
    "t_quantile_975",
]


@dataclass(frozen=True)
class RunResults:
    """What one run folder measured."""

    label: str
    run_dir: Path
    summary: dict[str, dict[str, dict]]  # shots → method → result dict
    episodes: dict[str, dict[str, list[float]]]  # shots → method → per-episode accuracy in [0, 1]
    episode_lists: dict[str, str]  # shots → sha256 of the test episode list

    def methods(self) -> list[str]:
        return list(dict.fromkeys(m for by_method in self.summary.values() for m in by_method))


@dataclass(frozen=True)
class PairedDifference:
    """``a − b`` in accuracy points over the same episodes."""

    a: str
    b: str
    shots: int
    mean: float
    ci95: float
    n_episodes: int


def load_run(spec: str) -> RunResults:
    """``RUN_DIR`` or ``LABEL=RUN_DIR``.

    Raises:
        FileNotFoundError: the folder has no results.json (not a finished run).
    """
    from fsar_train import RunLayout, read_results

    label, _, folder = spec.rpartition("=")
    run_dir = Path(folder)
    payload = read_results(run_dir)
    summary: dict[str, dict[str, dict]] = {}
    episodes: dict[str, dict[str, list[float]]] = {}
    for shots, by_method in payload["results"].items():
        for method, result in by_method.items():
            summary.setdefault(shots, {})[method] = {k: v for k, v in result.items() if k != "episode_accuracies"}
            episodes.setdefault(shots, {})[method] = result.get("episode_accuracies", [])
    lists = {
        str(shots): hashlib.sha256(path.read_bytes()).hexdigest()
        for shots, path in RunLayout(run_dir).saved_test_episodes().items()
    }
    return RunResults(label or run_dir.name, run_dir, summary, episodes, lists)


def _find(runs: list[RunResults], ref: str) -> tuple[RunResults, str]:
    label, sep, method = ref.partition("/")
    if not sep:
        raise InputError(f"{ref!r}: name a method as LABEL/METHOD, e.g. pretrained/fsar_llava")
    for run in runs:
        if run.label == label:
            return run, method
    raise InputError(f"{ref!r}: no run labelled {label!r}; labels: {', '.join(r.label for r in runs)}")


def paired_difference(runs: list[RunResults], a: str, b: str, shots: int) -> PairedDifference:
    """``a − b`` (``LABEL/METHOD`` each) per shared test episode at ``shots``.

    Raises:
        ValueError: an unknown label or method, no per-episode accuracies, or different episodes.
    """
    (run_a, method_a), (run_b, method_b) = _find(runs, a), _find(runs, b)
    key = str(shots)
    if run_a.episode_lists.get(key) is None or run_a.episode_lists.get(key) != run_b.episode_lists.get(key):
        raise InputError(f"{run_a.label} and {run_b.label} did not score the same {shots}-shot test episodes")
    values = []
    for run, method in ((run_a, method_a), (run_b, method_b)):
        accuracies = run.episodes.get(key, {}).get(method)
        if accuracies is None:
            known = sorted(run.episodes.get(key, {}))
            raise InputError(f"{run.label} has no per-episode {shots}-shot accuracies of {method!r}; it has {known}")
        values.append(accuracies)
    n = len(values[0])
    diffs = [100.0 * (x - y) for x, y in zip(values[0], values[1], strict=True)]
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1)) if n > 1 else 0.0
    return PairedDifference(a, b, shots, mean, 1.96 * sd / math.sqrt(n), n)


#: Two-sided 95 % quantiles of Student's t, t₀.₉₇₅ with ν degrees of freedom (ν = 1…30).
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t_quantile_975(dof: int) -> float:
    """t₀.₉₇₅ with ``dof`` degrees of freedom (1.96 beyond 30).

    Example:
        >>> t_quantile_975(2), t_quantile_975(1000)
        (4.303, 1.96)
    """
    if dof < 1:
        raise InputError(f"degrees of freedom must be >= 1, got {dof}")
    return _T975[dof - 1] if dof <= len(_T975) else 1.96


@dataclass(frozen=True)
class ReplicatedDifference:
    """``a − b`` measured in each replicate (paired over its episodes), summarised across replicates."""

    a: str
    b: str
    shots: int
    members: tuple[PairedDifference, ...]
    mean: float  # mean over replicates of the per-replicate paired mean (points)
    ci95: float  # t₀.₉₇₅,ₙ₋₁ · sd / √n over replicates (0 for one replicate)

    @property
    def n_replicates(self) -> int:
        return len(self.members)


def replicated_difference(
    runs: list[RunResults], groups: dict[str, list[str]], a: str, b: str, shots: int
) -> ReplicatedDifference:
    """``a − b`` where either side's label may name a group of replicate runs (``groups``).

    A group on one side pairs each of its members with the other side's run; groups on both sides
    must have the same size and pair member by member.

    Raises:
        ValueError: groups of different sizes, or whatever ``paired_difference`` refuses.
    """

    def expand(ref: str) -> list[str]:
        label, _, method = ref.partition("/")
        return [f"{member}/{method}" for member in groups[label]] if label in groups else [ref]

    left, right = expand(a), expand(b)
    if len(left) > 1 and len(right) > 1 and len(left) != len(right):
        raise InputError(f"{a!r} has {len(left)} replicates and {b!r} {len(right)}: pair groups of one size")
    n = max(len(left), len(right))
    left, right = left * (n if len(left) == 1 else 1), right * (n if len(right) == 1 else 1)
    members = tuple(paired_difference(runs, x, y, shots) for x, y in zip(left, right, strict=True))
    means = [m.mean for m in members]
    mean = sum(means) / n
    sd = math.sqrt(sum((m - mean) ** 2 for m in means) / (n - 1)) if n > 1 else 0.0
    ci = t_quantile_975(n - 1) * sd / math.sqrt(n) if n > 1 else 0.0
    return ReplicatedDifference(a, b, shots, members, mean, ci)


def _rows(runs: list[RunResults]) -> tuple[list[str], list[list[str]]]:
    shots = sorted({int(k) for run in runs for k in run.summary})
    header = ["run", "method", *(f"{k}-shot" for k in shots)]
    rows = []
    for run in runs:
        for method in run.methods():
            cells = []
            for k in shots:
                r = run.summary.get(str(k), {}).get(method)
                cells.append(f"{r['accuracy']:.2f} ± {r['ci95']:.2f}" if r else "–")
            rows.append([run.label, method, *cells])
    return header, rows


def comparison_table(
    runs: list[RunResults],
    diffs: list[PairedDifference],
    title: str,
    replicated: list[ReplicatedDifference] | None = None,
) -> Table:
    """A rich table: every run's methods, the paired differences, the differences across replicates."""
    header, rows = _rows(runs)
    table = Table(title=title)
    for i, column in enumerate(header):
        table.add_column(column, justify="right" if i >= 2 else "left")
    for row in rows:
        table.add_row(*row)
    grouped: dict[tuple[str, str], dict[str, PairedDifference]] = {}
    for d in diffs:
        grouped.setdefault((d.a, d.b), {})[f"{d.shots}-shot"] = d
    for (a, b), by_shots in grouped.items():
        cells = [f"{by_shots[c].mean:+.2f} ± {by_shots[c].ci95:.2f}" if c in by_shots else "–" for c in header[2:]]
        table.add_row("paired", f"{a} − {b}", *cells, style="bold")
    by_pair: dict[tuple[str, str], dict[str, ReplicatedDifference]] = {}
    for r in replicated or []:
        by_pair.setdefault((r.a, r.b), {})[f"{r.shots}-shot"] = r
    for (a, b), by_shots in by_pair.items():
        n = next(iter(by_shots.values())).n_replicates
        cells = [f"{by_shots[c].mean:+.2f} ± {by_shots[c].ci95:.2f}" if c in by_shots else "–" for c in header[2:]]
        table.add_row(f"{n} replicates", f"{a} − {b}", *cells, style="bold cyan")
    return table


def comparison_markdown(
    runs: list[RunResults], diffs: list[PairedDifference], replicated: list[ReplicatedDifference] | None = None
) -> str:
    """The same table as Markdown (for docs)."""
    header, rows = _rows(runs)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    if diffs:
        lines += [
            "",
            "| paired difference (same episodes) | shots | mean ± 95% CI (points) | episodes |",
            "|---|---|---|---|",
        ]
        lines += [f"| {d.a} − {d.b} | {d.shots} | {d.mean:+.2f} ± {d.ci95:.2f} | {d.n_episodes:,} |" for d in diffs]
    if replicated:
        lines += [
            "",
            "| difference across replicates | shots | each replicate (paired, points) | mean ± 95% CI (t, n − 1 dof) |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {r.a} − {r.b} | {r.shots} | {' / '.join(f'{m.mean:+.2f}' for m in r.members)} | "
            f"{r.mean:+.2f} ± {r.ci95:.2f} (n = {r.n_replicates}) |"
            for r in replicated
        ]
    return "\n".join(lines) + "\n"
