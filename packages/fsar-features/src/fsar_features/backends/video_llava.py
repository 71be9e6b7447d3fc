"""Video-LLaVA (Lin et al., "Video-LLaVA: Learning United Visual Representation by Alignment Before
Projection", arXiv 2311.10122) through transformers' ``VideoLlavaForConditionalGeneration``.

Video tokens: Video-LLaVA keeps the CLS token for videos, so each frame has
``(image_size / patch_size)² + 1`` tokens (257 at 224 px with patch 14), frame-major with the CLS
token first (docs/method.md §0, "Backbone"). The count is read from the checkpoint's config, never
assumed.

Backends:
- ``video-llava``: a checkpoint folder or hub id (``LanguageBind/Video-LLaVA-7B-hf``); bf16 on CUDA,
  fp32 on CPU by default. Creating it reads the config, tokenizer and processor settings; the weights
  load on first use (a complete cache never loads them).
- ``tiny-video-llava``: the same class built from a small config with seeded weights and a tokenizer
  built in code; deterministic, about 140 k parameters, about 0.05 s per video on a CPU. The offline
  default for tests and trials; its features carry no meaning.
"""

from __future__ import annotations

import os

import torch
from transformers import CLIPVisionConfig, LlamaConfig, VideoLlavaConfig, VideoLlavaForConditionalGeneration

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

__all__ = ["tiny_video_llava", "tiny_video_llava_config", "video_llava", "video_llava_tokens_per_frame"]

FAMILY = "video-llava"
DEFAULT_MODEL = "LanguageBind/Video-LLaVA-7B-hf"


def video_llava_tokens_per_frame(config: VideoLlavaConfig) -> int:
    """V = patches + CLS, from the vision config (the video path keeps CLS)."""
    vision = config.vision_config
    return (vision.image_size // vision.patch_size) ** 2 + 1


def tiny_video_llava_config(
    *,
    hidden_size: int = 64,
    n_layers: int = 2,
    image_size: int = 32,
    patch_size: int = 8,
    vocab_size: int = 262,
    vision_hidden_size: int = 32,
    vision_layers: int = 2,
    vision_feature_layer: int = -2,
) -> VideoLlavaConfig:
    """A small Video-LLaVA config: CLIP tower ``vision_hidden_size`` × ``vision_layers``, Llama decoder
    ``hidden_size`` × ``n_layers``, ``vocab_size`` tokens (262: ``build_tiny_tokenizer``).

    ``vision_feature_layer`` is the tower's hidden state the projector reads (Video-LLaVA: -2, the
    penultimate). With the defaults: 17 tokens per frame, 136 for 8 frames.
    """
    vision = CLIPVisionConfig(
        hidden_size=vision_hidden_size,
        intermediate_size=2 * vision_hidden_size,
        num_hidden_layers=vision_layers,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch_size,
    )
    text = LlamaConfig(
        vocab_size=vocab_size,
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
    return VideoLlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=TINY_SPECIAL_TOKENS.index("<image>"),
        video_token_index=TINY_SPECIAL_TOKENS.index("<video>"),
        vision_feature_layer=vision_feature_layer,
        video_seq_length=8 * ((image_size // patch_size) ** 2 + 1),
    )


register_model_type("video_llava", "video-llava")  # config.json model_type → this backend


@register_backend("video-llava")
def video_llava(
    model: str | os.PathLike[str] = DEFAULT_MODEL,
    *,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
    model_id: str | None = None,
    random_init_seed: int | None = None,
) -> HFVideoBackend:
    """Video-LLaVA from a checkpoint folder or a hub id (read from the local cache when offline).

    Only the config, tokenizer and processor settings are read here; the weights (or the seeded
    random ones) load on first use by a forward pass, ``pixel_values`` or ``.model``, so an
    extraction whose videos are all cached never loads them.

    Args:
        model: a folder written by ``save_pretrained`` or a hub id.
        dtype: default bf16 on CUDA, fp32 on CPU.
        device: default CUDA when available.
        model_id: what the cache recipe records (default: ``model`` as given).
        random_init_seed: keep the checkpoint's architecture and tokenizer but draw the weights from
            this seed (the "random-weight" baseline of a pretrained model); recorded in the model id.

    Raises:
        FileNotFoundError: the model cannot be found (one sentence naming it); at creation for a
            missing folder, config or tokenizer, on first use for missing weights.
    """
    dev, dt = default_device_dtype(device, dtype)
    parts = open_pretrained(
        VideoLlavaForConditionalGeneration,
        model,
        family=FAMILY,
        dtype=dt,
        device=dev,
        random_init_seed=random_init_seed,
    )
    model_id = model_id or str(model)
    if random_init_seed is not None:
        model_id = f"{model_id}+random-init(seed={random_init_seed})"
    return HFVideoBackend(
        name="video-llava",
        loader=parts.load,
        config=parts.config,
        device=dev,
        dtype=dt,
        tokenizer=parts.tokenizer,
        model_id=model_id,
        family=FAMILY,
        tokens_per_frame=video_llava_tokens_per_frame(parts.config),
        has_cls=True,
        preprocessing=read_preprocessing(parts.folder, parts.config.vision_config.image_size),
    )


@register_backend("tiny-video-llava")
def tiny_video_llava(
    *,
    seed: int = 0,
    hidden_size: int = 64,
    n_layers: int = 2,
    image_size: int = 32,
    patch_size: int = 8,
    device: str | torch.device = "cpu",
) -> HFVideoBackend:
    """A tiny random Video-LLaVA (``tiny_video_llava_config``), seeded; fp32.

    Example:
        >>> backend = tiny_video_llava()
        >>> backend.model_id
        'tiny-video-llava(seed=0,D=64,L=2,image=32,patch=8)'
    """
    config = tiny_video_llava_config(
        hidden_size=hidden_size, n_layers=n_layers, image_size=image_size, patch_size=patch_size
    )
    model = seeded_init(lambda: VideoLlavaForConditionalGeneration(config), seed).to(device)
    return HFVideoBackend(
        name="tiny-video-llava",
        model=model,
        tokenizer=build_tiny_tokenizer(),
        model_id=f"tiny-video-llava(seed={seed},D={hidden_size},L={n_layers},image={image_size},patch={patch_size})",
        family=FAMILY,
        tokens_per_frame=video_llava_tokens_per_frame(config),
        has_cls=True,
        preprocessing=Preprocessing(frame_size=image_size, crop_size=image_size, mean=CLIP_MEAN, std=CLIP_STD),
    )
