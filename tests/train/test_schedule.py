"""One learning-rate schedule for training and pretraining (fsar_train._schedule)."""

from __future__ import annotations

import math

import pytest

from fsar_train import lr_factor
from fsar_train._config import PretrainConfig
from fsar_train._pretrain import _lr_factor as pretrain_lr_factor

SETTINGS = [(0, 1), (0, 5), (2, 6), (5, 5), (10, 11), (100, 4000), (3, 50), (7, 3)]  # (warmup, total)


def _old_training(step: int, *, warmup: int, total: int, final_ratio: float) -> float:
    """``fsar_train._train.lr_factor`` before the schedule moved (copied verbatim)."""
    if step < warmup:
        return (step + 1) / warmup
    span = max(total - warmup - 1, 1)
    progress = min((step - warmup) / span, 1.0)
    return final_ratio + (1.0 - final_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _old_pretraining(step: int, config: PretrainConfig) -> float:
    """``fsar_train._pretrain._lr_factor`` before the schedule moved (copied verbatim)."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


@pytest.mark.parametrize(("warmup", "total"), SETTINGS)
@pytest.mark.parametrize("final_ratio", [0.0, 0.05, 0.1, 0.5])
def test_training_learning_rates_are_the_old_ones_bit_for_bit(warmup: int, total: int, final_ratio: float) -> None:
    steps = range(total + 3)
    new = [lr_factor(s, warmup=warmup, total=total, final_ratio=final_ratio) for s in steps]
    assert new == [_old_training(s, warmup=warmup, total=total, final_ratio=final_ratio) for s in steps]


@pytest.mark.parametrize(("warmup", "total"), SETTINGS)
def test_pretraining_learning_rates_are_the_old_ones_bit_for_bit(warmup: int, total: int) -> None:
    config = PretrainConfig(warmup_steps=warmup, steps=total)
    steps = range(total + 3)
    assert [pretrain_lr_factor(s, config) for s in steps] == [_old_pretraining(s, config) for s in steps]


def test_the_two_ends_differ_only_in_where_the_cosine_reaches_the_final_ratio() -> None:
    last = [lr_factor(s, warmup=1, total=5, final_ratio=0.1) for s in range(6)]
    after = [lr_factor(s, warmup=1, total=5, final_ratio=0.1, ends="after-last-step") for s in range(6)]
    assert last[:2] == after[:2] == [1.0, 1.0]  # the same warm-up
    assert last[4:] == pytest.approx([0.1, 0.1])  # training: the final ratio on its last step (4) ...
    assert after[4] > 0.1  # ... pretraining: one step later
    assert after[5] == pytest.approx(0.1)


def test_bad_schedule_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="unknown cosine end 'end'; valid: last-step, after-last-step"):
        lr_factor(0, warmup=1, total=2, final_ratio=0.0, ends="end")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="step=-1, warmup=0"):
        lr_factor(-1, warmup=0, total=2, final_ratio=0.0)
