"""Conversion between fsar's way-major episode layout and the flat layout of public FSAR code.

Public code bases (TRX, STRM, the few-shot-action-recognition library) pass support features as a
flat ``[N·K, T, D]`` tensor plus episode labels ``[N·K]``. fsar's metrics take way-major
``[N, K, T, D]``, which makes a prototype ``support.mean(1)`` with no label bookkeeping. These two
functions are the only place the flat layout is handled.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fsar_metric._shapes import fmt_shape
from fsar_metric.errors import InputError

__all__ = ["to_flat", "to_way_major"]


def to_way_major(features: Tensor, labels: Tensor) -> Tensor:
    """Group flat support features by episode label.

    Args:
        features: ``[N·K, *F]`` support features in any order (``*F`` is e.g. ``T, D`` or ``D``).
        labels: ``[N·K]`` integer episode labels in ``0..N-1``, each used exactly K times.

    Returns:
        ``[N, K, *F]``; row n holds the videos labelled n in their original relative order.

    Raises:
        ValueError: labels that are not a 1-D integer tensor matching ``features``, labels outside
            ``0..N-1``, or classes with different shot counts (the message lists the counts).

    Example:
        >>> import torch
        >>> from fsar_metric import to_way_major
        >>> to_way_major(torch.randn(6, 8, 32), torch.tensor([2, 0, 1, 0, 1, 2])).shape
        torch.Size([3, 2, 8, 32])
    """
    if labels.dim() != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise InputError(f"labels must be a 1-D integer tensor, got {labels.dtype} of shape {fmt_shape(labels)}")
    if features.dim() < 1 or features.shape[0] != labels.shape[0]:
        raise InputError(f"features {fmt_shape(features)} and labels {fmt_shape(labels)} disagree on N*K")
    if labels.numel() == 0:
        raise InputError("cannot build an episode from zero support videos")
    counts = torch.bincount(labels.cpu()) if int(labels.min()) >= 0 else None
    if counts is None or (counts == 0).any():
        raise InputError(
            f"episode labels must cover 0..N-1 with no gaps, got the label set {sorted(set(labels.tolist()))}"
        )
    if not bool((counts == counts[0]).all()):
        per_class = {c: int(n) for c, n in enumerate(counts)}
        raise InputError(f"every class needs the same number of shots K; videos per label: {per_class}")
    n_way, n_shot = counts.numel(), int(counts[0])
    # A stable sort keeps each class's videos in their original order.
    order = torch.sort(labels, stable=True).indices
    return features[order].reshape(n_way, n_shot, *features.shape[1:])


def to_flat(support: Tensor) -> tuple[Tensor, Tensor]:
    """Inverse of ``to_way_major`` up to order: way-major ``[N, K, *F]`` → ``([N·K, *F], labels [N·K])``.

    The flat tensor is class-major (all shots of class 0, then class 1, ...), and the labels are
    ``0..N-1`` on the same device as ``support``.
    """
    if support.dim() < 2:
        raise InputError(f"support must be [N, K, ...], got shape {fmt_shape(support)}")
    n_way, n_shot = support.shape[:2]
    labels = torch.arange(n_way, device=support.device).repeat_interleave(n_shot)  # [N*K]
    return support.reshape(n_way * n_shot, *support.shape[2:]), labels
