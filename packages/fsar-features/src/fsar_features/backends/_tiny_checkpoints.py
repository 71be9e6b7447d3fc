"""Tiny random checkpoints with the real -hf checkpoints' geometry, written with ``save_pretrained``.

The widths (decoder and vision tower sizes, layer counts) are tiny and come from the arguments; the
geometry copies the real checkpoints, so that code which loads a real checkpoint by path (token
counts, token ids, processor sizes, chat format) is tested offline on the same numbers. Weights are
random (seeded): the features mean nothing.

Values and where they come from ("hub" = the checkpoint's file on huggingface.co; "convert" = the
transformers conversion script ``models/<name>/convert_<name>_weights_to_hf.py``; "5.24" = the
installed transformers):

Video-LLaVA-7B-hf (``LanguageBind/Video-LLaVA-7B-hf``, ``model_type: video_llava``)

==========================  ============================  ==================================================
value                       here                          source
==========================  ============================  ==================================================
vision tower                CLIP ViT-L/14: image 224,     hub config.json (patch_size 14; no image_size, so
                            patch 14                      CLIPVisionConfig's 224); convert: openai/clip-vit-
                                                          large-patch14
tokens per frame (V)        257 = (224/14)² + CLS         5.24 VideoLlavaProcessor (num_additional_image_
                                                          tokens=1: the video path keeps CLS)
video tokens, 8 frames      2056 (``video_seq_length``)   5.24 VideoLlavaConfig default (hub config.json
                                                          does not set it)
vision_feature_layer        -2                            hub config.json
select strategy             "default"                     hub config.json (applies to images; videos keep
                                                          CLS)
image / video / pad ids     32000 / 32001 / 32002         hub added_tokens.json, config.json pad_token_id;
                                                          convert (``config.pad_token_id = 32002``)
<unk> / <s> / </s>          0 / 1 / 2                     vicuna-7b-v1.5 (Llama) tokenizer; text_config
                                                          pad_token_id 0
vocab (embedding rows)      32064                         hub config.json (32003 tokens padded to a
                                                          multiple of 64 by convert)
max_position_embeddings     4096                          hub config.json text_config
preprocessing               resize shortest edge 224,     convert (VideoLlavaImageProcessor from openai/
                            centre crop 224, CLIP mean/   clip-vit-large-patch14); not read from the hub
                            std, bicubic                  preprocessor_config.json itself (see below)
chat format                 ``USER: <video>\\n{p}          transformers VideoLlavaForConditionalGeneration
                            ASSISTANT:``                  docstring and the model card
==========================  ============================  ==================================================

LLaVA-NeXT-Video-7B-hf (``llava-hf/LLaVA-NeXT-Video-7B-hf``, ``model_type: llava_next_video``)

==========================  ============================  ==================================================
value                       here                          source
==========================  ============================  ==================================================
vision tower                CLIP ViT-L/14-336: image      hub config.json vision_config
                            336, patch 14
spatial pooling             "average", stride 2           hub config.json (spatial_pool_mode,
                                                          spatial_pool_stride)
tokens per frame (V)        144 = (336/14/2)²             5.24 LlavaNextVideoPooler (24×24 patches, CLS
                                                          dropped, 2×2 average pool); LlavaNextVideo
                                                          Processor (patches // 4 per frame)
video tokens, 8 frames      1152                          8 × 144
vision_feature_layer        -2                            hub config.json
select strategy             "default" (CLS dropped)       hub config.json
video / image ids           32000 / 32001                 hub config.json, tokenizer_config.json; convert
pad                         ``<unk>`` (id 0)              hub tokenizer_config.json (pad_token "<unk>"),
                                                          config.json text_config pad_token_id 0
<unk> / <s> / </s>          0 / 1 / 2                     hub tokenizer_config.json
vocab (embedding rows)      32064                         hub config.json text_config
max_position_embeddings     4096                          hub config.json text_config
preprocessing               resize shortest edge 336,     hub preprocessor_config.json (LlavaNextImage
                            centre crop 336, CLIP mean/   Processor), which the video processor reads when
                            std, bicubic                  there is no video_preprocessor_config.json
processor_config.json       patch_size 14, "default",     hub LLaVA-NeXT-Video-7B-DPO-hf processor_config.
                            num_additional_image_tokens 1 json (the 7B-hf file itself not read)
chat format                 ``USER: <video>\\n{p}          transformers tests/models/llava_next_video/test_
                            ASSISTANT:``                  processor_llava_next_video.py (chat template of
                                                          the 7B-hf checkpoint, and its token ids)
==========================  ============================  ==================================================

Not confirmed: the text of both hub ``chat_template.json`` files (the templates here are written to
render the confirmed format; a test checks that against ``fsar_prompts``); the hub
``preprocessor_config.json`` of Video-LLaVA-7B-hf itself (its values follow the conversion script's
source processor, and fine-tunes of the checkpoint ship the same values); whether LLaVA-NeXT-Video-7B-hf
has a ``video_preprocessor_config.json`` on its main branch (none in the file listings seen). Not
copied, because they are widths or do not change token geometry: hidden sizes, layer and head counts,
the 7B text config's linear RoPE scaling (factor 2.0), ``image_grid_pinpoints`` (the class default is
the hub value), ``spatial_pool_out_channels`` (used only by ``conv`` pooling).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from fsar_features.backends._families import get_family
from fsar_features.backends._hf import CLIP_MEAN, CLIP_STD, build_word_tokenizer, seeded_init, transformers_class
from fsar_metric.errors import InputError

if TYPE_CHECKING:
    from transformers import CLIPVisionConfig, LlamaConfig

__all__ = ["GEOMETRIES", "LLAVA_NEXT_VIDEO_7B", "VIDEO_LLAVA_7B", "CheckpointGeometry", "save_tiny_checkpoint"]

# The Vicuna-style turn, rendered from messages as the -hf processors' chat templates do:
# "USER: <video>\n{text} ASSISTANT:" for one user turn with a video and a text, then the generation prompt.
_VICUNA_VIDEO_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}{{ '<video>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' ' }}{% endfor %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

# Whole-word tokens of the tiny tokenizer: the chat turn's words; everything else is spelled.
_WORDS = ("USER: ASSISTANT:", "What is the person doing in this video?")


@dataclass(frozen=True)
class CheckpointGeometry:
    """What a tiny checkpoint copies from a real one (see the module docstring for the sources)."""

    model_id: str  # the real checkpoint
    model_type: str  # its config.json model_type
    image_size: int  # vision tower input side
    patch_size: int
    vision_feature_layer: int
    vision_feature_select_strategy: str
    tokens_per_frame: int  # V, video tokens per frame in the decoder input
    special_ids: dict[str, int]  # token → id, at the real ids
    pad_token: str
    vocab_size: int  # embedding rows (the tokenizer's size padded to a multiple of 64)
    max_position_embeddings: int
    shortest_edge: int  # frames are resized so that their short side is this ...
    crop_size: int  # ... then centre-cropped to this square
    processor_class: str
    chat_template: str
    image_processor_class: str  # the transformers class the hub preprocessor_config.json names (written with it)
    config_extra: Mapping[str, Any] = field(default_factory=dict)  # more of the family's config arguments

    def special_id(self, token: str) -> int:
        """The id of a special token (``<unk> <s> </s> <image> <video>``, and ``<pad>`` where there is one)."""
        return self.special_ids[token]


VIDEO_LLAVA_7B = CheckpointGeometry(
    model_id="LanguageBind/Video-LLaVA-7B-hf",
    model_type="video_llava",
    image_size=224,
    patch_size=14,
    vision_feature_layer=-2,
    vision_feature_select_strategy="default",
    tokens_per_frame=(224 // 14) ** 2 + 1,  # 257: CLS kept for videos
    special_ids={"<unk>": 0, "<s>": 1, "</s>": 2, "<image>": 32000, "<video>": 32001, "<pad>": 32002},
    pad_token="<pad>",
    vocab_size=32064,
    max_position_embeddings=4096,
    shortest_edge=224,
    crop_size=224,
    processor_class="VideoLlavaProcessor",
    chat_template=_VICUNA_VIDEO_TEMPLATE,
    image_processor_class="VideoLlavaImageProcessor",
    config_extra={"video_seq_length": 8 * ((224 // 14) ** 2 + 1), "pad_token_id": 32002},  # 2056; <pad>
)

LLAVA_NEXT_VIDEO_7B = CheckpointGeometry(
    model_id="llava-hf/LLaVA-NeXT-Video-7B-hf",
    model_type="llava_next_video",
    image_size=336,
    patch_size=14,
    vision_feature_layer=-2,
    vision_feature_select_strategy="default",
    tokens_per_frame=(336 // 14 // 2) ** 2,  # 144: 24×24 patches pooled 2×2, no CLS
    special_ids={"<unk>": 0, "<s>": 1, "</s>": 2, "<video>": 32000, "<image>": 32001},
    pad_token="<unk>",
    vocab_size=32064,
    max_position_embeddings=4096,
    shortest_edge=336,
    crop_size=336,
    processor_class="LlavaNextVideoProcessor",
    chat_template=_VICUNA_VIDEO_TEMPLATE,
    # LlavaNextImageProcessorPil is LlavaNextImageProcessor without torchvision and writes the same file.
    image_processor_class="LlavaNextImageProcessorPil",
    config_extra={"spatial_pool_mode": "average", "spatial_pool_stride": 2},
)

#: Family (``FAMILIES``) → the real checkpoint's geometry.
GEOMETRIES: dict[str, CheckpointGeometry] = {"video-llava": VIDEO_LLAVA_7B, "llava-next-video": LLAVA_NEXT_VIDEO_7B}


@dataclass(frozen=True)
class _Widths:
    hidden_size: int
    n_layers: int
    vision_hidden_size: int
    vision_layers: int


def _vision_config(g: CheckpointGeometry, w: _Widths) -> CLIPVisionConfig:
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=w.vision_hidden_size,
        intermediate_size=4 * w.vision_hidden_size,  # ViT-L's ratio (1024 → 4096)
        num_hidden_layers=w.vision_layers,
        num_attention_heads=2,
        image_size=g.image_size,
        patch_size=g.patch_size,
    )


def _text_config(g: CheckpointGeometry, w: _Widths) -> LlamaConfig:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=g.vocab_size,
        hidden_size=w.hidden_size,
        intermediate_size=2 * w.hidden_size,
        num_hidden_layers=w.n_layers,
        num_attention_heads=4,
        num_key_value_heads=4,  # Llama-2-7B (Vicuna) has no grouped-query attention
        max_position_embeddings=g.max_position_embeddings,
        rms_norm_eps=1e-5,
        pad_token_id=0,  # both hub text configs say 0 (<unk>)
        bos_token_id=g.special_id("<s>"),
        eos_token_id=g.special_id("</s>"),
    )


def _model(family: str, g: CheckpointGeometry, w: _Widths) -> nn.Module:
    spec = get_family(family)
    config = spec.config_class(
        vision_config=_vision_config(g, w),
        text_config=_text_config(g, w),
        image_token_index=g.special_id("<image>"),
        video_token_index=g.special_id("<video>"),
        vision_feature_layer=g.vision_feature_layer,
        vision_feature_select_strategy=g.vision_feature_select_strategy,
        image_seq_length=(g.image_size // g.patch_size) ** 2,  # images drop CLS: 256 and 576
        **g.config_extra,
    )
    return spec.model_class(config)


def _image_processor(g: CheckpointGeometry) -> object:
    return transformers_class(g.image_processor_class)(
        size={"shortest_edge": g.shortest_edge},
        crop_size={"height": g.crop_size, "width": g.crop_size},
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
    )


def save_tiny_checkpoint(
    family: str,
    out_dir: str | os.PathLike[str],
    *,
    hidden_size: int = 64,
    n_layers: int = 2,
    vision_hidden_size: int = 32,
    vision_layers: int = 2,
    seed: int = 0,
) -> Path:
    """Write a tiny random checkpoint of ``family`` with the real -hf checkpoint's geometry.

    The folder holds what ``save_pretrained`` writes for the model (``config.json``, safetensors),
    the tokenizer (built in code, special tokens at the real ids, with the chat template), the image
    processor (``preprocessor_config.json``) and a ``processor_config.json`` like the hub's (written
    directly: building the transformers processor object needs torchvision). It loads back with
    ``create_backend(family, model=folder)``; ``backend_for_model(folder)`` returns ``family``.

    Args:
        family: ``video-llava`` (geometry of ``LanguageBind/Video-LLaVA-7B-hf``) or
            ``llava-next-video`` (``llava-hf/LLaVA-NeXT-Video-7B-hf``).
        out_dir: the checkpoint folder (created).
        hidden_size: D_in, the decoder width.
        n_layers: L, decoder layers.
        vision_hidden_size: the vision tower width.
        vision_layers: vision tower layers.
        seed: weights are drawn from this seed; equal arguments write equal files.

    Returns:
        ``out_dir`` as a ``Path``.

    Raises:
        ValueError: an unknown family (the message lists them).

    Example:
        >>> import tempfile
        >>> folder = save_tiny_checkpoint("video-llava", tempfile.mkdtemp(), hidden_size=16, vision_hidden_size=8)
        >>> json.loads((folder / "config.json").read_text())["video_token_index"]
        32001
    """
    if family not in GEOMETRIES:
        raise InputError(f"no tiny checkpoint for family {family!r}; valid: {', '.join(sorted(GEOMETRIES))}")
    geometry = GEOMETRIES[family]
    widths = _Widths(hidden_size, n_layers, vision_hidden_size, vision_layers)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seeded_init(lambda: _model(family, geometry, widths), seed).save_pretrained(out)
    tokenizer = build_word_tokenizer(_WORDS, special_ids=geometry.special_ids, pad_token=geometry.pad_token)
    tokenizer.chat_template = geometry.chat_template
    tokenizer.save_pretrained(out)
    _image_processor(geometry).save_pretrained(out)
    processor = {
        "image_token": "<image>",
        "num_additional_image_tokens": 1,
        "patch_size": geometry.patch_size,
        "processor_class": geometry.processor_class,
        "video_token": "<video>",
        "vision_feature_select_strategy": geometry.vision_feature_select_strategy,
    }
    (out / "processor_config.json").write_text(json.dumps(processor, indent=2) + "\n", encoding="utf-8")
    return out
