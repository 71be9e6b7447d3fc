"""MFEM: the Multimodal Feature-Enhanced Module of FSAR-LLaVA (Xing et al., "Knowledge is Power:
Advancing Few-shot Action Recognition with Multimodal Semantics from MLLMs", arXiv:2603.26033).

The abstract says MFEM decouples the MLLM decoder's features into a visual and a textual stream
and enhances each. Its internals are not public; this is fsar's reconstruction (``docs/method.md``
§1, MFEM), in the lineage of CLIP-FSAR's one-layer temporal Transformer and MA-FSAR's light
adapters::

    V = LN(W_v v) + P_t          # [B, T, D]   W_v: D_in → D, P_t learned temporal embedding
    V = EncoderLayer(V)          # [B, T, D]   one pre-norm Transformer layer over the T frames
    E = LN(W_t t)                # [B, D]      W_t: D_in → D, separate from W_v ("decoupled")
    E = E + CrossAttn(E, V)      # [B, D]      optional: the text attends to its own video's frames

MFEM works per video, independent of the episode, so evaluation runs it once per video.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from fsar_metric.errors import InputError

__all__ = ["MFEM", "MFEMConfig"]


@dataclass(frozen=True)
class MFEMConfig:
    """Options of MFEM (the widths and frame count live in ``FSARLLaVAConfig``)."""

    # False is the "plain projection" ablation: V = LN(W_v v), E = LN(W_t t); no temporal
    # embedding, no Transformer layer, no cross-attention.
    enhance: bool = True
    # Text ↔ video cross-attention (the text token attends to its video's frames). Off by default
    # to keep the streams decoupled, as the abstract's wording suggests.
    cross_attention: bool = False


class MFEM(nn.Module):
    """Decouple and enhance: per-video visual ``[B, T, D]`` and textual ``[B, D]`` streams.

    Args:
        in_dim: D_in, the width of the visual features (the MLLM hidden width, 4096 for
            Video-LLaVA-7B; g²·D_in for a g×g spatial grid of patch states).
        dim: D, the head width.
        n_frames: the largest T the temporal embedding covers.
        n_heads: attention heads of the Transformer layer and the cross-attention.
        dropout: dropout inside the Transformer layer.
        config: ``MFEMConfig``.
        text_in_dim: D_t, the width of the text features; None = ``in_dim``.
    """

    def __init__(
        self,
        in_dim: int,
        dim: int,
        n_frames: int,
        n_heads: int,
        dropout: float,
        config: MFEMConfig,
        text_in_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.n_frames = n_frames
        self.visual_proj = nn.Linear(in_dim, dim)
        self.visual_norm = nn.LayerNorm(dim)
        self.text_proj = nn.Linear(in_dim if text_in_dim is None else text_in_dim, dim)
        self.text_norm = nn.LayerNorm(dim)
        if config.enhance:
            self.temporal_embedding = nn.Parameter(torch.zeros(n_frames, dim))
            nn.init.trunc_normal_(self.temporal_embedding, std=0.02)
            self.temporal = nn.TransformerEncoderLayer(
                dim,
                n_heads,
                dim_feedforward=4 * dim,
                dropout=dropout,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )
            if config.cross_attention:
                self.cross_norm = nn.LayerNorm(dim)
                self.cross = nn.MultiheadAttention(dim, n_heads, dropout=dropout, batch_first=True)

    def encode_visual(self, visual: Tensor) -> Tensor:
        """``visual [B, T, D_in]`` → ``[B, T, D]``."""
        if visual.shape[1] > self.n_frames:
            raise InputError(
                f"MFEM's temporal embedding covers {self.n_frames} frames, got visual features of shape "
                f"{list(visual.shape)}; build the head with n_frames >= {visual.shape[1]}"
            )
        frames = self.visual_norm(self.visual_proj(visual))  # [B, T, D]
        if not self.config.enhance:
            return frames
        frames = frames + self.temporal_embedding[: frames.shape[1]]
        return self.temporal(frames)  # [B, T, D]

    def project_text(self, text: Tensor) -> Tensor:
        """The decoupled text projection alone, ``[..., D_t]`` → ``[..., D]`` (class anchors use it)."""
        return self.text_norm(self.text_proj(text))

    def encode_text(self, text: Tensor, frames: Tensor | None = None) -> Tensor:
        """``text [B, D_t]`` (and the video's encoded ``frames [B, T, D]`` for cross-attention) → ``[B, D]``."""
        token = self.project_text(text)  # [B, D]
        if self.config.enhance and self.config.cross_attention:
            if frames is None:
                raise InputError("MFEM with cross_attention needs the video's frames to encode its text")
            attended, _ = self.cross(self.cross_norm(token)[:, None], frames, frames, need_weights=False)  # [B, 1, D]
            token = token + attended[:, 0]
        return token

    def forward(self, visual: Tensor, text: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """``visual [B, T, D_in]``, ``text [B, D_t]`` → ``(V [B, T, D], E [B, D])`` (E is None without text)."""
        frames = self.encode_visual(visual)
        return frames, (None if text is None else self.encode_text(text, frames))
