"""The transformers LLaVA-family backends: one spec per model family, one code path for all of them.

A ``VideoFamily`` says what differs between families (the transformers model and config classes,
the video tokens per frame, whether a frame starts with a CLS token, the tiny variant's defaults and
config extras, the default hub id); ``open_backend`` (a checkpoint folder or hub id, weights loaded
lazily) and ``tiny_backend`` (a small config with seeded weights, built in code) build an
``HFVideoBackend`` from any spec. Importing this module registers, for every family in
``FAMILIES``: the backend ``<family>``, the backend ``tiny-<family>`` and the ``config.json``
``model_type`` → ``<family>`` mapping. Both backends of every family take the same options.

Families:

- ``video-llava``: Video-LLaVA (Lin et al., "Video-LLaVA: Learning United Visual Representation by
  Alignment Before Projection", arXiv 2311.10122), ``VideoLlavaForConditionalGeneration``, default
  ``LanguageBind/Video-LLaVA-7B-hf``. The video path keeps the CLS token, so each frame has
  ``(image_size / patch_size)² + 1`` tokens (257 at 224 px with patch 14), frame-major with the CLS
  token first (docs/method.md §0, "Backbone").
- ``llava-next-video``: LLaVA-NeXT-Video (Zhang et al., "LLaVA-NeXT: A Strong Zero-shot Video
  Understanding Model", 2024), ``LlavaNextVideoForConditionalGeneration``, default
  ``llava-hf/LLaVA-NeXT-Video-7B-hf``. The CLIP tower's patch features (CLS dropped,
  ``vision_feature_select_strategy = "default"``) are pooled per frame on the patch grid with stride
  ``spatial_pool_stride``, so each frame has ``(⌊image_size / patch_size / stride⌋)²`` tokens (144 at
  336 px, patch 14, stride 2). There is no CLS token, so the ``cls`` visual pooling is refused.

Token counts are read from the checkpoint's config, never assumed. The tiny backends are about
140 k parameters, deterministic, about 0.05 s per video on a CPU: the offline default for tests and
trials; their features carry no meaning.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

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
    transformers_class,
)
from fsar_metric.errors import InputError
from fsar_metric.registry import NoDeclared, Registry

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedTokenizerBase

__all__ = [
    "FAMILIES",
    "LLAVA_NEXT_VIDEO",
    "VIDEO_LLAVA",
    "TinyShape",
    "VideoFamily",
    "get_family",
    "open_backend",
    "tiny_backend",
    "tiny_config",
]


@dataclass(frozen=True)
class TinyShape:
    """Sizes of a tiny model: a CLIP tower ``vision_hidden_size`` × ``vision_layers`` reading
    ``image_size`` px frames in ``patch_size`` patches, and a Llama decoder ``hidden_size`` × ``n_layers``.

    ``vision_feature_layer`` is the tower's hidden state the projector reads (-2: the penultimate).
    """

    hidden_size: int = 64  # D_in
    n_layers: int = 2  # L
    image_size: int = 32
    patch_size: int = 8
    vision_hidden_size: int = 32
    vision_layers: int = 2
    vision_feature_layer: int = -2

    def __post_init__(self) -> None:
        sizes = {f: getattr(self, f) for f in ("hidden_size", "n_layers", "image_size", "patch_size")}
        sizes |= {"vision_hidden_size": self.vision_hidden_size, "vision_layers": self.vision_layers}
        bad = {name: value for name, value in sizes.items() if not isinstance(value, int) or value < 1}
        if bad:
            raise InputError(f"tiny model sizes must be positive integers, got {bad}")


def _video_llava_tokens_per_frame(config: PretrainedConfig) -> int:
    """V = patches + CLS, from the vision config (the video path keeps CLS)."""
    vision = config.vision_config
    return (vision.image_size // vision.patch_size) ** 2 + 1


def _llava_next_video_tokens_per_frame(config: PretrainedConfig) -> int:
    """V = pooled patch grid, from the config.

    Raises:
        ValueError: a ``vision_feature_select_strategy`` other than ``default`` (the pooler needs a
            square patch grid without CLS).
    """
    if config.vision_feature_select_strategy != "default":
        raise InputError(
            f"LLaVA-NeXT-Video video features need vision_feature_select_strategy='default', "
            f"got {config.vision_feature_select_strategy!r}"
        )
    side = config.vision_config.image_size // config.vision_config.patch_size
    return (side // config.spatial_pool_stride) ** 2


@dataclass(frozen=True)
class VideoFamily:
    """What one transformers LLaVA-family model differs in; the rest is ``HFVideoBackend``.

    Attributes:
        name: the backend name and the fsar-prompts family (``video-llava``); the tiny backend is
            ``tiny-<name>``.
        model_type: the ``config.json`` ``model_type`` of its checkpoints (``backend_for_model``).
        model_class_name: the name of its transformers ``…ForConditionalGeneration`` class
            (``model_class`` imports it on first use, so ``import fsar_features`` does not load
            transformers' modeling code).
        config_class_name: the name of its config class (``config_class``; tiny configs are built with it).
        default_model: the hub id the ``<name>`` backend opens by default.
        tokens_per_frame: V from a config (raises ``ValueError`` for a config it cannot serve).
        has_cls: whether each frame's first video token is the CLS token.
        tiny: the tiny backend's default sizes.
        tiny_extra: more arguments of ``config_class`` for a tiny config (e.g. the pooling stride).
        tiny_video_seq_length: the tiny config records the video token count of ``n_frames`` frames
            in ``video_seq_length`` (Video-LLaVA's processor reads it).
        tiny_id_names_geometry: the tiny model id always names ``image`` and ``patch``; otherwise it
            names them only when they differ from ``tiny`` (so the ids already recorded in feature
            caches stay what they were).
    """

    name: str
    model_type: str
    model_class_name: str
    config_class_name: str
    default_model: str
    tokens_per_frame: Callable[[PretrainedConfig], int]
    has_cls: bool
    tiny: TinyShape = TinyShape()
    tiny_extra: Mapping[str, Any] = field(default_factory=dict)
    tiny_video_seq_length: bool = False
    tiny_id_names_geometry: bool = True

    @property
    def model_class(self) -> type[nn.Module]:
        """The transformers model class (imported on first use)."""
        return transformers_class(self.model_class_name)

    @property
    def config_class(self) -> type[PretrainedConfig]:
        """The transformers config class (imported on first use)."""
        return transformers_class(self.config_class_name)

    @property
    def tiny_name(self) -> str:
        """The tiny backend's registered name."""
        return f"tiny-{self.name}"


VIDEO_LLAVA = VideoFamily(
    name="video-llava",
    model_type="video_llava",
    model_class_name="VideoLlavaForConditionalGeneration",
    config_class_name="VideoLlavaConfig",
    default_model="LanguageBind/Video-LLaVA-7B-hf",
    tokens_per_frame=_video_llava_tokens_per_frame,
    has_cls=True,
    tiny_video_seq_length=True,
)

LLAVA_NEXT_VIDEO = VideoFamily(
    name="llava-next-video",
    model_type="llava_next_video",
    model_class_name="LlavaNextVideoForConditionalGeneration",
    config_class_name="LlavaNextVideoConfig",
    default_model="llava-hf/LLaVA-NeXT-Video-7B-hf",
    tokens_per_frame=_llava_next_video_tokens_per_frame,
    has_cls=False,
    tiny_extra={"spatial_pool_stride": 2},
    tiny_id_names_geometry=False,
)

#: The families, by name. A new family is one more entry (and its prompts in fsar-prompts).
FAMILIES: Registry[VideoFamily, NoDeclared] = Registry("model family", plural="model families")
for _spec in (VIDEO_LLAVA, LLAVA_NEXT_VIDEO):
    FAMILIES.register(_spec.name, _spec)
del _spec


def get_family(name: str) -> VideoFamily:
    """The family ``name`` (``FAMILIES``).

    Raises:
        ValueError: an unknown family (the message lists them).
    """
    return FAMILIES.get(name)


def tiny_config(
    family: VideoFamily,
    shape: TinyShape | None = None,
    *,
    vocab_size: int = len(TINY_SPECIAL_TOKENS) + 256,
    n_frames: int = 8,
) -> PretrainedConfig:
    """A small config of ``family``: ``shape`` (default ``family.tiny``), ``vocab_size`` tokens
    (262: ``build_tiny_tokenizer``), the special tokens at the tiny tokenizer's ids.

    ``n_frames`` sets ``video_seq_length`` where the family records it. With the defaults,
    Video-LLaVA has 17 tokens per frame (136 for 8 frames) and LLaVA-NeXT-Video 4.

    Example:
        >>> config = tiny_config(VIDEO_LLAVA)
        >>> VIDEO_LLAVA.tokens_per_frame(config), config.video_seq_length
        (17, 136)
    """
    from transformers import CLIPVisionConfig, LlamaConfig

    shape = shape or family.tiny
    vision = CLIPVisionConfig(
        hidden_size=shape.vision_hidden_size,
        intermediate_size=2 * shape.vision_hidden_size,
        num_hidden_layers=shape.vision_layers,
        num_attention_heads=2,
        image_size=shape.image_size,
        patch_size=shape.patch_size,
    )
    text = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=shape.hidden_size,
        intermediate_size=2 * shape.hidden_size,
        num_hidden_layers=shape.n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        pad_token_id=TINY_SPECIAL_TOKENS.index("<pad>"),
        bos_token_id=TINY_SPECIAL_TOKENS.index("<s>"),
        eos_token_id=TINY_SPECIAL_TOKENS.index("</s>"),
    )
    config = family.config_class(
        vision_config=vision,
        text_config=text,
        image_token_index=TINY_SPECIAL_TOKENS.index("<image>"),
        video_token_index=TINY_SPECIAL_TOKENS.index("<video>"),
        vision_feature_layer=shape.vision_feature_layer,
        **family.tiny_extra,
    )
    if family.tiny_video_seq_length:
        config.video_seq_length = n_frames * family.tokens_per_frame(config)
    return config


def tiny_backend(
    family: VideoFamily,
    shape: TinyShape | None = None,
    *,
    seed: int = 0,
    tokenizer: PreTrainedTokenizerBase | None = None,
    n_frames: int = 8,
    name: str | None = None,
    model_id: str | None = None,
    device: str | torch.device = "cpu",
) -> HFVideoBackend:
    """A tiny ``family`` model with weights drawn from ``seed``, fp32, behind an (eager) ``HFVideoBackend``.

    This is what the ``tiny-<family>`` backends build, and what training a tiny MLLM starts from
    (``fsar_train``'s pretraining): its ``.model`` is the transformers model (frozen and in eval
    mode, as every backend's; call ``requires_grad_(True).train()`` to train it).

    Args:
        family: the model family.
        shape: sizes (default ``family.tiny``).
        seed: the weights' seed; the global RNG is left alone.
        tokenizer: default ``build_tiny_tokenizer()``; the vocabulary is ``len(tokenizer)``, the special
            tokens must sit at the tiny tokenizer's ids (``build_word_tokenizer`` without ``special_ids``).
        n_frames: frames per video the config's ``video_seq_length`` is set for (``tiny_config``).
        name: the backend's name (default ``tiny-<family>``).
        model_id: what the cache recipe records (default: the ``tiny-<family>`` id of the seed and sizes).
        device: where the model runs.
    """
    shape = shape or family.tiny
    tokenizer = tokenizer if tokenizer is not None else build_tiny_tokenizer()
    config = tiny_config(family, shape, vocab_size=len(tokenizer), n_frames=n_frames)
    model = seeded_init(lambda: family.model_class(config), seed).to(device)
    return HFVideoBackend(
        name=name or family.tiny_name,
        model=model,
        tokenizer=tokenizer,
        model_id=model_id or _tiny_model_id(family, shape, seed),
        family=family.name,
        tokens_per_frame=family.tokens_per_frame(config),
        has_cls=family.has_cls,
        preprocessing=Preprocessing(
            frame_size=shape.image_size, crop_size=shape.image_size, mean=CLIP_MEAN, std=CLIP_STD
        ),
    )


def _tiny_model_id(family: VideoFamily, shape: TinyShape, seed: int) -> str:
    geometry = (shape.image_size, shape.patch_size)
    named = family.tiny_id_names_geometry or geometry != (family.tiny.image_size, family.tiny.patch_size)
    suffix = f",image={shape.image_size},patch={shape.patch_size}" if named else ""
    return f"{family.tiny_name}(seed={seed},D={shape.hidden_size},L={shape.n_layers}{suffix})"


def open_backend(
    family: VideoFamily,
    model: str | os.PathLike[str] | None = None,
    *,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
    model_id: str | None = None,
    random_init_seed: int | None = None,
) -> HFVideoBackend:
    """A ``family`` model from a checkpoint folder or a hub id (read from the local cache when offline).

    Only the config, tokenizer and processor settings are read here; the weights (or the seeded
    random ones) load on first use by a forward pass, ``pixel_values`` or ``.model``, so an
    extraction whose videos are all cached never loads them.

    Args:
        family: the model family.
        model: a folder written by ``save_pretrained`` or a hub id (default ``family.default_model``).
        dtype: default bf16 on CUDA, fp32 on CPU.
        device: default CUDA when available.
        model_id: what the cache recipe records (default: ``model`` as given).
        random_init_seed: keep the checkpoint's architecture and tokenizer but draw the weights from
            this seed (the "random-weight" baseline of a pretrained model); recorded in the model id.

    Raises:
        FileNotFoundError: the model cannot be found (one sentence naming it); at creation for a
            missing folder, config or tokenizer, on first use for missing weights.
        ValueError: a config the family cannot serve (e.g. LLaVA-NeXT-Video without the ``default``
            feature selection), or an unknown dtype.
    """
    model = family.default_model if model is None else model
    dev, dt = default_device_dtype(device, dtype)
    parts = open_pretrained(
        family.model_class, model, family=family.name, dtype=dt, device=dev, random_init_seed=random_init_seed
    )
    model_id = model_id or str(model)
    if random_init_seed is not None:
        model_id = f"{model_id}+random-init(seed={random_init_seed})"
    return HFVideoBackend(
        name=family.name,
        loader=parts.load,
        config=parts.config,
        device=dev,
        dtype=dt,
        tokenizer=parts.tokenizer,
        model_id=model_id,
        family=family.name,
        tokens_per_frame=family.tokens_per_frame(parts.config),
        has_cls=family.has_cls,
        preprocessing=read_preprocessing(parts.folder, parts.config.vision_config.image_size),
    )


def _register(family: VideoFamily) -> None:
    """Register ``family``'s two backends and its model type."""

    def pretrained(
        model: str | os.PathLike[str] = family.default_model,
        *,
        dtype: str | torch.dtype | None = None,
        device: str | torch.device | None = None,
        model_id: str | None = None,
        random_init_seed: int | None = None,
    ) -> HFVideoBackend:
        return open_backend(
            family, model, dtype=dtype, device=device, model_id=model_id, random_init_seed=random_init_seed
        )

    def tiny(
        *,
        seed: int = 0,
        hidden_size: int = family.tiny.hidden_size,
        n_layers: int = family.tiny.n_layers,
        image_size: int = family.tiny.image_size,
        patch_size: int = family.tiny.patch_size,
        device: str | torch.device = "cpu",
    ) -> HFVideoBackend:
        shape = replace(
            family.tiny, hidden_size=hidden_size, n_layers=n_layers, image_size=image_size, patch_size=patch_size
        )
        return tiny_backend(family, shape, seed=seed, device=device)

    pretrained.__name__ = pretrained.__qualname__ = family.name.replace("-", "_")
    pretrained.__doc__ = (
        f"The {family.name} backend: ``open_backend`` with this family (default {family.default_model})."
    )
    tiny.__name__ = tiny.__qualname__ = family.tiny_name.replace("-", "_")
    tiny.__doc__ = f"The {family.tiny_name} backend: ``tiny_backend`` with this family, seeded, fp32."
    register_model_type(family.model_type, family.name)  # config.json model_type → this backend
    register_backend(family.name)(pretrained)
    register_backend(family.tiny_name)(tiny)


for _family in FAMILIES:
    _register(FAMILIES.get(_family))
del _family
