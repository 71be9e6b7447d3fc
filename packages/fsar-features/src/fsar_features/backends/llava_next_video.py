"""LLaVA-NeXT-Video (Zhang et al., "LLaVA-NeXT: A Strong Zero-shot Video Understanding Model", 2024;
``llava-hf/LLaVA-NeXT-Video-7B-hf``) through transformers' ``LlavaNextVideoForConditionalGeneration``.

Video tokens: the CLIP tower's patch features (CLS dropped, ``vision_feature_select_strategy =
"default"``) are pooled per frame on the patch grid with stride ``spatial_pool_stride``, so each frame
has ``(⌊image_size / patch_size / stride⌋)²`` tokens (144 at 336 px, patch 14, stride 2), frame-major.
There is no CLS token, so the ``cls`` visual pooling is refused for this family.

Backends: ``llava-next-video`` (a checkpoint folder or hub id; the weights load on first use, see
``video_llava``) and ``tiny-llava-next-video`` (seeded,
built in code, 4 tokens per frame with the defaults).
"""

from __future__ import annotations

import os

import torch
from transformers import CLIPVisionConfig, LlamaConfig, LlavaNextVideoConfig, LlavaNextVideoForConditionalGeneration

from fsar_features._model_types import register_model_type
from fsar_features._registry import register_backend
from fsar_features.backends._hf import (
    CLIP_MEAN,
    CLIP_STD,
    TINY_SPECIAL_TOKENS,
    HFVideoBackend,
    Preprocessing,
    build_tiny_tokenizer,
    default_device_dtype,
    open_pretrained,
    read_preprocessing,
    seeded_init,
)

__all__ = ["llava_next_video", "llava_next_video_tokens_per_frame", "tiny_llava_next_video"]

FAMILY = "llava-next-video"
DEFAULT_MODEL = "llava-hf/LLaVA-NeXT-Video-7B-hf"


def llava_next_video_tokens_per_frame(config: LlavaNextVideoConfig) -> int:
    """V = pooled patch grid, from the config.

    Raises:
        ValueError: a ``vision_feature_select_strategy`` other than ``default`` (the pooler needs a
            square patch grid without CLS).
    """
    if config.vision_feature_select_strategy != "default":
        raise ValueError(
            f"LLaVA-NeXT-Video video features need vision_feature_select_strategy='default', "
            f"got {config.vision_feature_select_strategy!r}"
        )
    side = config.vision_config.image_size // config.vision_config.patch_size
    return (side // config.spatial_pool_stride) ** 2


register_model_type("llava_next_video", "llava-next-video")  # config.json model_type → this backend


@register_backend("llava-next-video")
def llava_next_video(
    model: str | os.PathLike[str] = DEFAULT_MODEL,
    *,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
    model_id: str | None = None,
) -> HFVideoBackend:
    """LLaVA-NeXT-Video from a checkpoint folder or a hub id (see ``video_llava`` for the arguments).

    Only the config, tokenizer and processor settings are read here; the weights load on first use.

    Raises:
        FileNotFoundError: the model cannot be found (one sentence naming it); at creation for a
            missing folder, config or tokenizer, on first use for missing weights.
    """
    dev, dt = default_device_dtype(device, dtype)
    parts = open_pretrained(LlavaNextVideoForConditionalGeneration, model, family=FAMILY, dtype=dt, device=dev)
    return HFVideoBackend(
        name="llava-next-video",
        loader=parts.load,
        config=parts.config,
        device=dev,
        dtype=dt,
        tokenizer=parts.tokenizer,
        model_id=model_id or str(model),
        family=FAMILY,
        tokens_per_frame=llava_next_video_tokens_per_frame(parts.config),
        has_cls=False,
        preprocessing=read_preprocessing(parts.folder, parts.config.vision_config.image_size),
    )


@register_backend("tiny-llava-next-video")
def tiny_llava_next_video(
    *, seed: int = 0, hidden_size: int = 64, n_layers: int = 2, device: str | torch.device = "cpu"
) -> HFVideoBackend:
    """A tiny random LLaVA-NeXT-Video (32 px frames, patch 8, pool stride 2: 4 tokens per frame), seeded."""
    vision = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8
    )
    text = LlamaConfig(
        vocab_size=262,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        pad_token_id=TINY_SPECIAL_TOKENS.index("<pad>"),
        bos_token_id=TINY_SPECIAL_TOKENS.index("<s>"),
        eos_token_id=TINY_SPECIAL_TOKENS.index("</s>"),
    )
    config = LlavaNextVideoConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=TINY_SPECIAL_TOKENS.index("<image>"),
        video_token_index=TINY_SPECIAL_TOKENS.index("<video>"),
        spatial_pool_stride=2,
    )
    model = seeded_init(lambda: LlavaNextVideoForConditionalGeneration(config), seed).to(device)
    return HFVideoBackend(
        name="tiny-llava-next-video",
        model=model,
        tokenizer=build_tiny_tokenizer(),
        model_id=f"tiny-llava-next-video(seed={seed},D={hidden_size},L={n_layers})",
        family=FAMILY,
        tokens_per_frame=llava_next_video_tokens_per_frame(config),
        has_cls=False,
        preprocessing=Preprocessing(frame_size=32, crop_size=32, mean=CLIP_MEAN, std=CLIP_STD),
    )
