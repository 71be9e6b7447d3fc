"""CTPC: Composite Task-Oriented Prototype Construction of FSAR-LLaVA (arXiv:2603.26033).

The abstract says CTPC builds prototypes from the MLLM outputs under scenario-adapted prompts and
narrows the gap between meta-train and meta-test class distributions. fsar's reconstruction
(``docs/method.md`` §2, CTPC) reads "composite" three ways:

(a) text-guided visual prototypes: each support video's label-aware text token is appended to its
    frames, a shared Transformer layer (Enc_p) runs over the T + 1 tokens and the T frame outputs
    are kept, then averaged over shots (CLIP-FSAR's prototype modulation);
(b) a textual prototype per class composed from the label-aware and label-free support outputs:
    P_t = n((1 − β)·mean_k n(E_lab) + β·mean_k n(E_free)), n = L2-normalise;
(c) an optional task step: attention across the N prototypes of the episode.

::

    X   = concat(V_s, E_lab[:, :, None])   # [N, K, T+1, D]
    V'  = Enc_p(X)[:, :, :T]               # [N, K, T, D]
    P_v = V'.mean(1)                       # [N, T, D]
    P_t = n((1-β)·mean_k n(E_lab) + β·mean_k n(E_free))     # [N, D]
    P_t = P_t + MHA(P_t, P_t, P_t)         # optional task step across the N classes
    V'_q = Enc_p(V_q)                      # [Q, T, D]  queries: no text token by default

Everything before the shot mean is per video, so ``encode_support`` / ``encode_query`` can run once
per video and ``prototypes`` once per episode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from einops import rearrange
from torch import Tensor, nn

from fsar_metric._common import check_choice
from fsar_metric.errors import InputError

__all__ = ["CTPC", "CTPCConfig", "Prototypes"]

TextToken = Literal["label_aware", "none"]
QueryTextToken = Literal["none", "label_free"]
TaskStep = Literal["off", "text", "visual", "both"]
ShotMerge = Literal["after", "before"]


@dataclass(frozen=True)
class CTPCConfig:
    """Options of CTPC; switching all of them off leaves plain shot-mean prototypes."""

    # False is the "shot mean" ablation: no Enc_p, no task step; P_v = mean_k V, P_t as in (b).
    enabled: bool = True
    # Token appended to each support video's frames before Enc_p: its label-aware text, or nothing.
    text_token: TextToken = "label_aware"
    # Token appended to each query's frames: nothing (default), or its label-free text.
    query_text_token: QueryTextToken = "none"
    # Share β of the label-free support text in the text prototype (0 without label-free text).
    beta: float = 0.5
    # Attention across the N classes of the episode: off, on P_t, on P_v (per frame), or both.
    task_step: TaskStep = "off"
    # Average shots after Enc_p (default, per-video work) or before it (CLIP-FSAR's MERGE_BEFORE).
    shot_merge: ShotMerge = "after"

    def __post_init__(self) -> None:
        check_choice("ctpc.text_token", self.text_token, ("label_aware", "none"))
        check_choice("ctpc.query_text_token", self.query_text_token, ("none", "label_free"))
        check_choice("ctpc.task_step", self.task_step, ("off", "text", "visual", "both"))
        check_choice("ctpc.shot_merge", self.shot_merge, ("after", "before"))
        if not 0.0 <= self.beta <= 1.0:
            raise InputError(f"ctpc.beta must lie in [0, 1], got {self.beta}")


@dataclass(frozen=True)
class Prototypes:
    """Class prototypes of one episode.

    Attributes:
        visual: ``[N, T, D]`` per-frame visual prototypes P_v.
        text: ``[N, D]`` unit-norm textual prototypes P_t.
    """

    visual: Tensor
    text: Tensor


def _unit(x: Tensor) -> Tensor:
    return nn.functional.normalize(x, dim=-1)


class CTPC(nn.Module):
    """Composite, task-oriented prototypes (see the module docstring).

    Args:
        dim: D, the head width.
        n_heads: heads of Enc_p and of the task-step attention.
        dropout: dropout inside Enc_p and the task step.
        config: ``CTPCConfig``.
    """

    def __init__(self, dim: int, n_heads: int, dropout: float, config: CTPCConfig) -> None:
        super().__init__()
        self.config = config
        if config.enabled:
            self.encoder = nn.TransformerEncoderLayer(
                dim,
                n_heads,
                dim_feedforward=4 * dim,
                dropout=dropout,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )
            if config.task_step in ("text", "both"):
                self.text_task_norm = nn.LayerNorm(dim)
                self.text_task = nn.MultiheadAttention(dim, n_heads, dropout=dropout, batch_first=True)
            if config.task_step in ("visual", "both"):
                self.visual_task_norm = nn.LayerNorm(dim)
                self.visual_task = nn.MultiheadAttention(dim, n_heads, dropout=dropout, batch_first=True)

    def _modulate(self, frames: Tensor, token: Tensor | None) -> Tensor:
        """Enc_p over ``frames [B, T, D]`` with an optional extra ``token [B, D]``; keeps the T frame outputs."""
        n_frames = frames.shape[1]
        if token is not None:
            frames = torch.cat([frames, token[:, None]], dim=1)  # [B, T+1, D]
        return self.encoder(frames)[:, :n_frames]  # [B, T, D]

    def encode_support(self, frames: Tensor, text: Tensor | None) -> Tensor:
        """Per-video part of (a): ``frames [B, T, D]``, label-aware ``text [B, D]`` → ``[B, T, D]``.

        Identity when CTPC is disabled or shots are merged before modulation.
        """
        if not self.config.enabled or self.config.shot_merge == "before":
            return frames
        token = text if self.config.text_token == "label_aware" else None
        if self.config.text_token == "label_aware" and text is None:
            raise InputError("CTPC with text_token='label_aware' needs the support videos' label-aware text")
        return self._modulate(frames, token)

    def encode_query(self, frames: Tensor, text: Tensor | None) -> Tensor:
        """``frames [Q, T, D]``, label-free ``text [Q, D]`` → ``V'_q [Q, T, D]`` (identity when disabled)."""
        if not self.config.enabled:
            return frames
        token = text if self.config.query_text_token == "label_free" else None
        if self.config.query_text_token == "label_free" and text is None:
            raise InputError("CTPC with query_text_token='label_free' needs the queries' label-free text")
        return self._modulate(frames, token)

    def prototypes(self, frames: Tensor, text: Tensor | None, text_free: Tensor | None) -> Prototypes:
        """Episode part: way-major support streams → prototypes.

        Args:
            frames: ``[N, K, T, D]`` support frames after ``encode_support``.
            text: ``[N, K, D]`` label-aware support text after MFEM, or None.
            text_free: ``[N, K, D]`` label-free support text after MFEM, or None.

        Returns:
            ``Prototypes`` with P_v ``[N, T, D]`` and unit-norm P_t ``[N, D]``.

        Raises:
            ValueError: neither text stream is given (there is no textual prototype to build).
        """
        if text is None and text_free is None:
            raise InputError("CTPC needs the support text (label-aware, label-free or both) to build P_t")
        if self.config.enabled and self.config.shot_merge == "before":
            merged_text = None if text is None else text.mean(1)  # [N, D]
            token = merged_text if self.config.text_token == "label_aware" else None
            visual = self._modulate(frames.mean(1), token)  # [N, T, D]
        else:
            visual = frames.mean(1)  # [N, T, D]
        if text is None:
            proto_text = _unit(_unit(text_free).mean(1))  # label-free text only
        elif text_free is None:
            proto_text = _unit(_unit(text).mean(1))  # β = 0 without label-free text
        else:
            beta = self.config.beta
            proto_text = _unit((1 - beta) * _unit(text).mean(1) + beta * _unit(text_free).mean(1))  # [N, D]
        if self.config.enabled and self.config.task_step in ("text", "both"):
            normed = self.text_task_norm(proto_text)[None]  # [1, N, D]
            proto_text = _unit(proto_text + self.text_task(normed, normed, normed, need_weights=False)[0][0])
        if self.config.enabled and self.config.task_step in ("visual", "both"):
            per_frame = self.visual_task_norm(
                rearrange(visual, "n t d -> t n d")
            )  # [T, N, D]: classes attend per frame
            attended = self.visual_task(per_frame, per_frame, per_frame, need_weights=False)[0]
            visual = visual + rearrange(attended, "t n d -> n t d")
        return Prototypes(visual=visual, text=proto_text)
