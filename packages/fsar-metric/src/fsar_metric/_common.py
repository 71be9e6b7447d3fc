"""Small pieces of plumbing shared by the metrics: option validation, shot reduction, temperature."""

from __future__ import annotations

from collections.abc import Collection
from typing import Literal

from torch import Tensor

from fsar_metric.errors import InputError

ShotReduction = Literal["mean", "max"]
SHOT_REDUCTIONS: tuple[ShotReduction, ...] = ("mean", "max")


def check_choice(name: str, value: object, valid: Collection[object]) -> None:
    """Raise ``ValueError`` naming the option, the bad value and the valid ones."""
    if value not in valid:
        raise InputError(f"{name}={value!r} is not valid; choose one of {', '.join(repr(v) for v in valid)}")


def check_temperature(temperature: float | None) -> None:
    if temperature is not None and not temperature > 0:
        raise InputError(f"temperature must be a positive number or None, got {temperature!r}")


def reduce_shots(scores: Tensor, how: ShotReduction) -> Tensor:
    """Per-shot scores ``[Q, N, K]`` → class scores ``[Q, N]``.

    ``mean`` averages the scores over the K shots (for a distance metric: the mean distance, the
    OTAM and TRX convention); ``max`` keeps the best-matching shot (the nearest support video).
    """
    return scores.mean(-1) if how == "mean" else scores.amax(-1)


def apply_temperature(logits: Tensor, temperature: float | None) -> Tensor:
    """Divide by ``temperature`` when one is given (a softmax-ready scale for cross-entropy)."""
    return logits if temperature is None else logits / temperature
