"""Shape and value checks shared by every metric (plumbing only).

Every check raises ``ValueError`` with a message that names the argument and its shape, so a user
who passes ``[N·K, T, D]`` where ``[N, K, T, D]`` is expected learns exactly that.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fsar_metric.errors import InputError

__all__ = ["check_episode", "check_finite", "check_text", "fmt_shape"]


def fmt_shape(x: Tensor) -> str:
    """``[2, 3, 8, 64]`` style string for error messages."""
    return "[" + ", ".join(str(s) for s in x.shape) + "]"


def check_episode(support: Tensor, query: Tensor, *, same_frames: bool = False) -> None:
    """Check the visual half of the episode contract.

    Args:
        support: ``[N, K, T, D]``, way-major support features.
        query: ``[Q, T, D]`` query features.
        same_frames: require the support and query T to be equal (metrics that compare frame i
            with frame i need it; alignment metrics such as OTAM do not).

    Raises:
        ValueError: wrong rank, an empty axis, mismatched D (or T when ``same_frames``), a
            non-floating dtype, or tensors on different devices.
    """
    if not isinstance(support, Tensor) or not isinstance(query, Tensor):
        raise InputError(
            f"support and query must be torch.Tensors, got {type(support).__name__} and {type(query).__name__}"
        )
    if support.dim() != 4:
        raise InputError(
            f"support must be [N, K, T, D] (way-major), got shape {fmt_shape(support)}; "
            "convert flat [N*K, T, D] features plus labels with fsar_metric.to_way_major"
        )
    if query.dim() != 3:
        raise InputError(f"query must be [Q, T, D], got shape {fmt_shape(query)}")
    n_way, n_shot, n_frames, dim = support.shape
    n_query, q_frames, q_dim = query.shape
    for name, size in (("N (ways)", n_way), ("K (shots)", n_shot), ("T (support frames)", n_frames), ("D", dim)):
        if size == 0:
            raise InputError(f"support {fmt_shape(support)} has an empty axis: {name} = 0")
    for name, size in (("Q (queries)", n_query), ("T (query frames)", q_frames), ("D", q_dim)):
        if size == 0:
            raise InputError(f"query {fmt_shape(query)} has an empty axis: {name} = 0")
    if q_dim != dim:
        raise InputError(f"feature width D differs: support {fmt_shape(support)} vs query {fmt_shape(query)}")
    if same_frames and q_frames != n_frames:
        raise InputError(
            f"this metric needs equal T for support and query: support {fmt_shape(support)} vs query {fmt_shape(query)}"
        )
    if not (support.is_floating_point() and query.is_floating_point()):
        raise InputError(f"features must be floating point, got support {support.dtype} and query {query.dtype}")
    if support.device != query.device:
        raise InputError(f"support is on {support.device} but query is on {query.device}")


def check_text(
    support: Tensor,
    query: Tensor,
    support_text: Tensor | None,
    query_text: Tensor | None,
    *,
    required: bool,
) -> None:
    """Check the optional text half of the contract.

    Args:
        support: ``[N, K, T, D]``.
        query: ``[Q, T, D]``.
        support_text: ``[N, K, D_t]`` one text vector per support video, or None.
        query_text: ``[Q, D_t]`` one text vector per query, or None.
        required: raise when either text tensor is missing.

    Raises:
        ValueError: a missing text tensor when ``required``, or shapes that disagree with the
            visual tensors (N, K, Q) or with each other (D_t).
    """
    if required and (support_text is None or query_text is None):
        missing = [n for n, t in (("support_text", support_text), ("query_text", query_text)) if t is None]
        raise InputError(f"this metric is multimodal and needs {' and '.join(missing)}")
    if support_text is not None and (
        support_text.dim() != 3 or tuple(support_text.shape[:2]) != tuple(support.shape[:2])
    ):
        raise InputError(
            f"support_text must be [N, K, D_t] matching support {fmt_shape(support)}, got {fmt_shape(support_text)}"
        )
    if query_text is not None and (query_text.dim() != 2 or query_text.shape[0] != query.shape[0]):
        raise InputError(f"query_text must be [Q, D_t] matching query {fmt_shape(query)}, got {fmt_shape(query_text)}")
    if support_text is not None and query_text is not None and support_text.shape[-1] != query_text.shape[-1]:
        raise InputError(
            f"text width D_t differs: support_text {fmt_shape(support_text)} vs query_text {fmt_shape(query_text)}"
        )


def check_finite(**tensors: Tensor | None) -> None:
    """Raise ``ValueError`` naming every tensor that holds NaN or inf (None entries are skipped).

    This forces a device sync, so metrics only call it when built with ``check_finite=True``.
    """
    bad = [
        f"{name} {fmt_shape(t)} ({int((~torch.isfinite(t)).sum())} non-finite values)"
        for name, t in tensors.items()
        if t is not None and not bool(torch.isfinite(t).all())
    ]
    if bad:
        raise InputError("non-finite input: " + "; ".join(bad))
