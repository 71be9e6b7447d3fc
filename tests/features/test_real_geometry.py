"""Checkpoints with the real -hf models' geometry: the backend comes from config.json, and tiny
checkpoints saved with Video-LLaVA-7B-hf's and LLaVA-NeXT-Video-7B-hf's token geometry load by path
and extract features with the real token counts.

The expected numbers are written out here, not read from ``fsar_features``: V = (224/14)² + CLS = 257
and 8 × 257 = 2056 video tokens for Video-LLaVA; V = (336/14/2)² = 144 and 8 × 144 = 1152 for
LLaVA-NeXT-Video (24×24 patches, CLS dropped, 2×2 average pooling).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import huggingface_hub
import pytest
import torch

import fsar_features
from fsar_features import (
    ExtractionConfig,
    FeatureExtractor,
    backend_for_model,
    create_backend,
    list_model_types,
    save_tiny_checkpoint,
)
from fsar_features.backends._hf import CLIP_MEAN, CLIP_STD, Preprocessing, build_word_tokenizer, read_preprocessing
from fsar_prompts import get_chat_format, render_prompt

# family → (V, video tokens at T = 8, frame side, video id, image id, pad id, tokenizer size)
REAL = {
    "video-llava": (257, 2056, 224, 32001, 32000, 32002, 32003),
    "llava-next-video": (144, 1152, 336, 32000, 32001, 0, 32002),
}
FAMILIES = sorted(REAL)


def _write_config(folder: Path, config: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One tiny checkpoint per family, saved once for the module (about 0.2 s each)."""
    root = tmp_path_factory.mktemp("checkpoints")
    return {family: save_tiny_checkpoint(family, root / family) for family in FAMILIES}


# --- backend_for_model -------------------------------------------------------------------------


def test_model_types_map_to_registered_backends() -> None:
    assert list_model_types() == {"llava_next_video": "llava-next-video", "video_llava": "video-llava"}
    assert set(list_model_types().values()) <= set(fsar_features.list_backends())
    with pytest.raises(ValueError, match="'video_llava' is already registered"):
        fsar_features.register_model_type("video_llava", "llava-next-video")


def test_the_backend_comes_from_config_json_not_from_the_name(tmp_path: Path) -> None:
    misleading = _write_config(tmp_path / "LLaVA-NeXT-Video-7B-hf", {"model_type": "video_llava"})
    assert backend_for_model(misleading) == "video-llava"
    assert backend_for_model(str(misleading)) == "video-llava"
    renamed = _write_config(tmp_path / "my-finetune", {"model_type": "llava_next_video"})
    assert backend_for_model(renamed) == "llava-next-video"


def test_an_unsupported_model_type_names_the_type_the_checkpoint_the_supported_types_and_the_override(
    tmp_path: Path,
) -> None:
    folder = _write_config(tmp_path / "qwen", {"model_type": "qwen2_vl"})
    with pytest.raises(ValueError, match="qwen2_vl") as info:
        backend_for_model(folder)
    message = str(info.value)
    assert str(folder) in message
    assert "llava_next_video → llava-next-video" in message
    assert "video_llava → video-llava" in message
    assert "--backend" in message
    # An old LLaVA-NeXT-Video-7B-hf snapshot said "llava_next", which also names image-only models.
    with pytest.raises(ValueError, match="'llava_next'"):
        backend_for_model(_write_config(tmp_path / "old", {"model_type": "llava_next"}))
    with pytest.raises(ValueError, match="no model_type"):
        backend_for_model(_write_config(tmp_path / "untyped", {"architectures": ["X"]}))


def test_a_checkpoint_without_config_json_gives_one_sentence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "empty").mkdir()
    cases = [
        (tmp_path / "missing", "does not exist"),
        (tmp_path / "empty", r"has no config\.json"),
        (
            "fsar-test/no-such-model",
            r"neither a local checkpoint folder nor in the Hugging Face cache.*HF_HUB_OFFLINE=1",
        ),
    ]
    for model, why in cases:
        with pytest.raises(FileNotFoundError, match=why) as info:
            backend_for_model(model)
        assert str(model) in str(info.value)
        assert str(info.value).count(". ") == 0


def test_a_hub_id_is_read_from_the_hugging_face_cache_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "hub" / "models--fsar-test--cached-video-llava"
    revision = "0" * 40
    _write_config(repo / "snapshots" / revision, {"model_type": "video_llava"})
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert backend_for_model("fsar-test/cached-video-llava") == "video-llava"


# --- tiny checkpoints with the real geometry ---------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_a_tiny_checkpoint_has_the_real_geometry_and_loads_by_path(checkpoints: dict[str, Path], family: str) -> None:
    v, n_video, side, video_id, image_id, pad_id, n_tokens = REAL[family]
    folder = checkpoints[family]
    assert backend_for_model(folder) == family
    backend = create_backend(family, model=str(folder), device="cpu")
    assert (backend.tokens_per_frame, backend.frame_size, backend.crop_size) == (v, side, side)
    assert (backend.video_token_id, backend.pad_token_id) == (video_id, pad_id)
    assert (backend.n_layers, backend.hidden_size, backend.dtype) == (2, 64, torch.float32)
    config = backend.model.config
    assert (config.image_token_id, config.vision_feature_layer, config.vision_feature_select_strategy) == (
        image_id,
        -2,
        "default",
    )
    assert (config.vision_config.image_size, config.vision_config.patch_size) == (side, 14)
    assert (config.text_config.vocab_size, config.text_config.max_position_embeddings) == (32064, 4096)
    tok = backend.tokenizer
    assert len(tok) == n_tokens
    assert tok.convert_tokens_to_ids(["<unk>", "<s>", "</s>", "<video>", "<image>"]) == [0, 1, 2, video_id, image_id]
    assert tok.pad_token_id == pad_id
    if family == "video-llava":
        assert config.video_seq_length == n_video
        assert config.pad_token_id == 32002
    else:
        assert (config.spatial_pool_mode, config.spatial_pool_stride) == ("average", 2)
    saved = json.loads((folder / "preprocessor_config.json").read_text())
    assert saved["size"] == {"shortest_edge": side}
    assert saved["crop_size"] == {"height": side, "width": side}
    assert (tuple(saved["image_mean"]), tuple(saved["image_std"])) == (CLIP_MEAN, CLIP_STD)
    processor = json.loads((folder / "processor_config.json").read_text())
    assert (processor["patch_size"], processor["vision_feature_select_strategy"]) == (14, "default")


@pytest.mark.parametrize("family", FAMILIES)
def test_the_chat_template_renders_the_fsar_prompts_format(checkpoints: dict[str, Path], family: str) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(checkpoints[family])
    text = "What is the person doing in this video?"
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": text}]}]
    rendered = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert rendered == get_chat_format(family).wrap(text) == f"USER: <video>\n{text} ASSISTANT:"


@pytest.mark.parametrize("family", FAMILIES)
def test_extraction_at_8_frames_gives_the_real_token_counts(
    checkpoints: dict[str, Path], make_video: Callable[..., Path], family: str
) -> None:
    _, n_video, side, video_id, *_ = REAL[family]
    backend = create_backend(family, model=str(checkpoints[family]), device="cpu")
    extractor = FeatureExtractor(backend, ExtractionConfig(n_frames=8))
    ids = backend.tokenize(render_prompt(family, "query", "generic"), 8)
    assert sum(i == video_id for i in ids) == n_video
    start, end = fsar_features.find_video_span(ids, video_id, n_video)
    assert ids[0] == 1  # <s>
    assert end - start == n_video

    clip = extractor.read(make_video("v.mp4", 30), "v")
    pixels = backend.pixel_values(clip.frames[None])  # [1, 8, 3, side, side]
    assert pixels.shape == (1, 8, 3, side, side)
    with torch.inference_mode():
        vision = backend.model.model.get_video_features(pixel_values_videos=pixels).pooler_output
    # Video-LLaVA: [B·T, V, D] with CLS first; LLaVA-NeXT-Video: [B, T·V, D] after pooling.
    assert vision.shape[:-1].numel() == n_video
    assert vision.shape[-1] == 64  # projected to D_in

    features = extractor.extract_clips([clip], ["v"], ["jumping jacks"])[0]
    assert features.visual.shape == (8, 64)
    assert sorted(features.text) == ["query", "support"]
    assert all(t.shape == (64,) and torch.isfinite(t).all() for t in features.text.values())
    assert torch.isfinite(features.visual).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_two_saves_with_one_seed_write_the_same_files(tmp_path: Path, family: str) -> None:
    kwargs = {"hidden_size": 32, "vision_hidden_size": 16}
    a = save_tiny_checkpoint(family, tmp_path / "a", **kwargs)
    b = save_tiny_checkpoint(family, tmp_path / "b", **kwargs)
    c = save_tiny_checkpoint(family, tmp_path / "c", seed=1, **kwargs)
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    assert {"config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json"} <= set(names)
    assert {"chat_template.jinja", "processor_config.json"} <= set(names)
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "model.safetensors").read_bytes() != (c / "model.safetensors").read_bytes()


def test_an_unknown_family_lists_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match="no tiny checkpoint for family 'qwen2-vl'; valid: llava-next-video, video-llava"
    ):
        save_tiny_checkpoint("qwen2-vl", tmp_path)


# --- pieces the real geometry needs ------------------------------------------------------------


def test_the_word_tokenizer_puts_special_tokens_at_given_ids_and_fills_the_gap() -> None:
    special = {"<unk>": 0, "<s>": 1, "</s>": 2, "<video>": 500, "<image>": 501}
    tok = build_word_tokenizer(["USER: ASSISTANT:"], special_ids=special, pad_token="<unk>")
    assert len(tok) == 502
    assert tok.pad_token_id == 0
    assert sorted(tok.get_vocab().values()) == list(range(502))  # contiguous ids
    ids = tok("USER: <video><video>\nup ASSISTANT:").input_ids
    assert tok.convert_ids_to_tokens(ids) == ["<s>", "USER", ":", "<video>", "<video>", "u", "##p", "ASSISTANT", ":"]
    assert not any(t.startswith("<unused") for t in tok.convert_ids_to_tokens(tok("<unused7> <unused 7>").input_ids))
    with pytest.raises(ValueError, match=r"missing: \['<pad>'\]"):
        build_word_tokenizer([], special_ids=special)
    with pytest.raises(ValueError, match="distinct"):
        build_word_tokenizer([], special_ids={**special, "<image>": 500}, pad_token="<unk>")


def test_processor_settings_are_read_from_a_transformers_5_nested_processor_config(tmp_path: Path) -> None:
    # transformers 5 saves a processor as one processor_config.json with nested entries and no
    # preprocessor_config.json; the video processor's entry wins, as in transformers.
    nested = {
        "image_processor": {"size": {"shortest_edge": 300}, "image_mean": [0.5] * 3, "image_std": [0.25] * 3},
        "video_processor": {"size": {"shortest_edge": 320}, "image_mean": [0.4] * 3, "image_std": [0.2] * 3},
        "patch_size": 14,
    }
    (tmp_path / "processor_config.json").write_text(json.dumps(nested))
    assert read_preprocessing(tmp_path, 336) == Preprocessing(320, 336, (0.4,) * 3, (0.2,) * 3)
    del nested["video_processor"]
    (tmp_path / "processor_config.json").write_text(json.dumps(nested))
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"size": {"shortest_edge": 224}}))
    assert read_preprocessing(tmp_path, 336).frame_size == 300  # nested before the legacy file
    (tmp_path / "processor_config.json").write_text(json.dumps({"patch_size": 14}))  # flat, as on the hub
    assert read_preprocessing(tmp_path, 336).frame_size == 224
