"""From a trained FSAR-LLaVA head and MLLM features to what the store keeps and queries with."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict

import torch
from torch import Tensor

from fsar_metric import FSARLLaVA
from fsar_metric.errors import InputError

__all__ = ["action_prototype", "check_store_head", "encode_query", "head_fingerprint"]


def head_fingerprint(head: FSARLLaVA) -> str:
    """sha256 of the head's config and weights: two heads share it only if they score identically."""
    digest = hashlib.sha256(json.dumps(asdict(head.config), sort_keys=True, default=str).encode())
    for name, tensor in sorted(head.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().float().numpy().tobytes())
    return digest.hexdigest()


def check_store_head(head: FSARLLaVA) -> None:
    """Refuse heads whose prototypes depend on the other classes of an episode.

    Raises:
        ValueError: ``ctpc.task_step`` is not ``off`` (the store builds each action alone).
    """
    if head.config.ctpc.enabled and head.config.ctpc.task_step != "off":
        raise InputError(
            f"the store builds each action's prototype alone, but this head's CTPC task step "
            f"({head.config.ctpc.task_step!r}) attends across the classes of an episode; "
            "use a head with task_step='off'"
        )


@torch.no_grad()
def action_prototype(
    head: FSARLLaVA, visual: Tensor, support_text: Tensor | None, support_text_free: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """One action's prototypes from its K example videos.

    Args:
        head: the trained head (put in eval mode by the caller).
        visual: ``[K, T, D_in]`` MLLM visual features of the examples.
        support_text: ``[K, D_in]`` their label-aware text features.
        support_text_free: ``[K, D_in]`` their label-free text features, or None.

    Returns:
        ``(P_v [T, D], P_t [D])``.
    """
    check_store_head(head)
    encoded = head.encode_support(visual, support_text, support_text_free)  # [K, ...]

    def way(x: Tensor | None) -> Tensor | None:
        return None if x is None else x[None]  # [1, K, ...]: one class

    prototypes = head.ctpc.prototypes(encoded.frames[None], way(encoded.text), way(encoded.text_free))
    return prototypes.visual[0], prototypes.text[0]


@torch.no_grad()
def encode_query(head: FSARLLaVA, visual: Tensor, text: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """A query's head-side features: ``visual [T, D_in]``, ``text [D_in]`` → ``([T, D], [D])``."""
    encoded = head.encode_query(visual[None], None if text is None else text[None])
    return encoded.frames[0], None if encoded.text is None else encoded.text[0]
