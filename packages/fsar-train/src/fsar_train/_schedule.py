"""The learning-rate schedule of training and pretraining: linear warm-up, then cosine decay.

One function for both loops (``_train`` and ``_pretrain``); they differ only in where the cosine
ends, so that both keep the learning rates they always had (the shipped pretrained model must stay
reproducible): the episode training reaches ``final_ratio`` on its last step (``ends="last-step"``),
the MLLM pretraining would reach it one step after its last (``ends="after-last-step"``).
"""

from __future__ import annotations

import math
from typing import Literal

from fsar_metric.errors import InputError

__all__ = ["CosineEnd", "lr_factor"]

#: Where the cosine decay reaches ``final_ratio``: on step ``total - 1``, or on step ``total``.
CosineEnd = Literal["last-step", "after-last-step"]
_SPAN_OFFSET: dict[str, int] = {"last-step": 1, "after-last-step": 0}  # decay steps = total - warmup - offset


def lr_factor(step: int, *, warmup: int, total: int, final_ratio: float, ends: CosineEnd = "last-step") -> float:
    """Multiplier of the peak lr for optimiser step ``step`` (0-based): linear warm-up over ``warmup``
    steps (``(step + 1) / warmup``), then a cosine from 1 down to ``final_ratio``, flat after it ends.

    Args:
        step: the optimiser step, 0-based.
        warmup: warm-up steps (0: none).
        total: all steps, warm-up included.
        final_ratio: the factor the cosine ends at.
        ends: ``last-step`` (the factor is ``final_ratio`` on step ``total - 1``) or
            ``after-last-step`` (it would be on step ``total``).

    Raises:
        ValueError: an unknown ``ends``, or a negative ``step`` or ``warmup``.

    Example:
        >>> [round(lr_factor(s, warmup=2, total=6, final_ratio=0.0), 3) for s in range(6)]
        [0.5, 1.0, 1.0, 0.75, 0.25, 0.0]
        >>> [round(lr_factor(s, warmup=2, total=6, final_ratio=0.0, ends="after-last-step"), 3) for s in range(6)]
        [0.5, 1.0, 1.0, 0.854, 0.5, 0.146]
    """
    if ends not in _SPAN_OFFSET:
        raise InputError(f"unknown cosine end {ends!r}; valid: {', '.join(_SPAN_OFFSET)}")
    if step < 0 or warmup < 0:
        raise InputError(f"step and warmup must be non-negative, got step={step}, warmup={warmup}")
    if step < warmup:
        return (step + 1) / warmup
    span = max(total - warmup - _SPAN_OFFSET[ends], 1)
    progress = min((step - warmup) / span, 1.0)
    return final_ratio + (1.0 - final_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
