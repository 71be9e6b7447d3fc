"""Backends: registry, tiny models, tokenisation, preprocessing, loading from a folder offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import VideoLlavaImageProcessor

import fsar_features
from fsar_features import FeatureBackend, FeatureExtractor, create_backend, list_backends, save_tiny_checkpoint
from fsar_features.backends import (
    CLIP_MEAN,
    CLIP_STD,
    FAMILIES,
    LLAVA_NEXT_VIDEO,
    VIDEO_LLAVA,
    TinyShape,
    get_family,
    tiny_config,
)
from fsar_features.backends._hf import default_device_dtype
from fsar_features.backends._tiny_checkpoints import GEOMETRIES
from fsar_prompts import render_prompt


def feature_checksum(backend: FeatureBackend) -> list[float]:
    """Sum, absolute sum and the first 4 values of the last token's last hidden state, for a fixed
    ``[1, 2, 40, 50, 3]`` clip and the support prompt of "jump"."""
    frames = np.random.default_rng(0).integers(0, 256, (1, 2, 40, 50, 3), dtype=np.uint8)
    ids = backend.tokenize(render_prompt(backend.family, "support", "temporal", label="jump"), 2)
    out = backend.forward(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long), backend.pixel_values(frames))
    last = out.hidden_states[-1].float()  # [1, N, D]
    return [float(last.sum()), float(last.abs().sum()), *map(float, last[0, -1, :4])]


# Computed with the code before the backends became one table (two copied family modules): the
# tiny seeded models must keep their weights, ids and features bit for bit (feature caches record
# the ids; tests and trials rely on the weights).
TINY_REGRESSION = [
    ("tiny-video-llava", {}, "d8ceb63f54bedc0d", "tiny-video-llava(seed=0,D=64,L=2,image=32,patch=8)", 17,
     [-1075.3313, 10770.1426, 0.982381, -0.010384, 0.14448, 0.089275]),
    ("tiny-video-llava", {"seed": 3, "hidden_size": 32, "n_layers": 1, "image_size": 48, "patch_size": 8},
     "76d4b635f128382c", "tiny-video-llava(seed=3,D=32,L=1,image=48,patch=8)", 37,
     [-175.4076, 6379.9341, -0.578925, -0.54696, 0.102801, 1.093233]),
    ("tiny-llava-next-video", {}, "e6615b8dc774c85f", "tiny-llava-next-video(seed=0,D=64,L=2)", 4,
     [298.4016, 9496.4473, -0.16559, -0.654154, 0.694958, 1.55742]),
    ("tiny-llava-next-video", {"seed": 2, "hidden_size": 32, "n_layers": 3}, "2ec4248afc3e62a7",
     "tiny-llava-next-video(seed=2,D=32,L=3)", 4, [-289.7985, 4795.5068, -2.151244, -2.248377, 0.824135, 1.463025]),
]  # fmt: skip


@pytest.mark.parametrize(("name", "options", "weights", "model_id", "tokens_per_frame", "checksum"), TINY_REGRESSION)
def test_tiny_backends_keep_the_weights_ids_and_features_of_the_two_family_modules(
    name: str, options: dict, weights: str, model_id: str, tokens_per_frame: int, checksum: list[float], state_hash
) -> None:
    backend = create_backend(name, **options)
    assert (state_hash(backend.model), backend.model_id, backend.tokens_per_frame) == (
        weights,
        model_id,
        tokens_per_frame,
    )
    torch.testing.assert_close(feature_checksum(backend), checksum, rtol=1e-4, atol=1e-4)


def test_checkpoints_open_with_the_weights_they_had(tmp_path: Path, state_hash) -> None:
    """``<family>`` backends over ``save_tiny_checkpoint`` folders (hashes from the two-module code)."""
    expected = {
        ("video-llava", None): "a33ebedf9901d9c5",
        ("video-llava", 5): "70fd88165293ec96",
        ("llava-next-video", None): "c0051471fa6df3bf",
    }
    for (family, seed), weights in expected.items():
        folder = save_tiny_checkpoint(family, tmp_path / family, hidden_size=16, vision_hidden_size=8, seed=1)
        backend = create_backend(family, model=folder, device="cpu", random_init_seed=seed)
        assert state_hash(backend.model) == weights, (family, seed)


def test_every_family_registers_its_backends_and_model_type_and_unknown_names_are_refused() -> None:
    assert FAMILIES.names() == ["llava-next-video", "video-llava"]
    assert list_backends() == ["llava-next-video", "tiny-llava-next-video", "tiny-video-llava", "video-llava"]
    with pytest.raises(
        ValueError, match="unknown feature backend 'clip'; registered feature backends: llava-next-video, "
    ):
        create_backend("clip")
    assert fsar_features.list_model_types() == {FAMILIES.get(f).model_type: f for f in FAMILIES}
    assert get_family("video-llava") is VIDEO_LLAVA
    assert sorted(GEOMETRIES) == FAMILIES.names()  # every family has a real geometry for save_tiny_checkpoint
    with pytest.raises(
        ValueError, match="unknown model family 'qwen2-vl'; registered model families: llava-next-video, video-llava"
    ):
        get_family("qwen2-vl")


def test_both_tiny_backends_take_the_same_options() -> None:
    # LLaVA-NeXT-Video's tiny backend took no image or patch size before; its id names them only off
    # the default, so the ids recorded in existing caches stay valid.
    backend = create_backend("tiny-llava-next-video", image_size=48, patch_size=8, seed=1)
    assert (backend.tokens_per_frame, backend.crop_size) == (9, 48)  # 6×6 patches pooled by stride 2
    assert backend.model_id == "tiny-llava-next-video(seed=1,D=64,L=2,image=48,patch=8)"
    assert create_backend("tiny-video-llava", device="cpu").device == torch.device("cpu")
    with pytest.raises(TypeError, match="unexpected keyword argument 'image'"):
        create_backend("tiny-llava-next-video", image=48)


def test_tiny_shapes_and_configs_are_checked_and_follow_the_family() -> None:
    with pytest.raises(ValueError, match=r"tiny model sizes must be positive integers, got \{'n_layers': 0\}"):
        TinyShape(n_layers=0)
    config = tiny_config(VIDEO_LLAVA, n_frames=4)
    assert (config.video_seq_length, VIDEO_LLAVA.tokens_per_frame(config)) == (68, 17)
    next_config = tiny_config(LLAVA_NEXT_VIDEO, TinyShape(image_size=64, patch_size=8))
    assert (next_config.spatial_pool_stride, LLAVA_NEXT_VIDEO.tokens_per_frame(next_config)) == (2, 16)
    next_config.vision_feature_select_strategy = "full"
    with pytest.raises(ValueError, match="need vision_feature_select_strategy='default', got 'full'"):
        LLAVA_NEXT_VIDEO.tokens_per_frame(next_config)


def test_create_backend_passes_a_backend_object_through(tiny_backend: FeatureBackend) -> None:
    assert create_backend(tiny_backend) is tiny_backend
    assert isinstance(tiny_backend, FeatureBackend)
    with pytest.raises(ValueError, match="keyword arguments"):
        create_backend(tiny_backend, seed=1)


def test_duplicate_backend_registration_is_refused() -> None:
    with pytest.raises(ValueError, match="already registered"):
        fsar_features.register_backend("video-llava")(lambda: None)


@pytest.mark.parametrize("name", ["tiny-video-llava", "tiny-llava-next-video"])
def test_tiny_backends_are_seeded_and_leave_the_global_rng_alone(name: str) -> None:
    state = torch.random.get_rng_state()
    a, b, c = create_backend(name), create_backend(name), create_backend(name, seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)
    for (key, pa), pb in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), key
    assert not torch.equal(
        a.model.model.language_model.embed_tokens.weight, c.model.model.language_model.embed_tokens.weight
    )


@pytest.mark.parametrize("name", ["tiny-video-llava", "tiny-llava-next-video"])
def test_tokenize_expands_the_placeholder_into_one_span_of_t_times_v_tokens(name: str) -> None:
    backend = create_backend(name)
    prompt = render_prompt(backend.family, "support", "temporal", label="Pushing [something] left")
    ids = backend.tokenize(prompt, 8)
    start, end = fsar_features.find_video_span(ids, backend.video_token_id, 8 * backend.tokens_per_frame)
    assert backend.tokenizer.decode(ids[end:]) == prompt.suffix
    assert backend.tokenizer.decode(ids[1:start]) == prompt.prefix  # ids[0] is <s>
    assert ids[0] == backend.tokenizer.bos_token_id


def test_tokenize_refuses_a_prompt_of_another_family(tiny_backend: FeatureBackend) -> None:
    with pytest.raises(ValueError, match="takes video prompts of the 'video-llava' family, got a 'qwen2-vl'"):
        tiny_backend.tokenize(render_prompt("qwen2-vl", "query"), 8)


def test_pixel_values_match_the_video_llava_image_processor_per_frame(tiny_backend: FeatureBackend) -> None:
    frames = np.random.default_rng(0).integers(0, 256, (2, 3, 45, 70, 3), dtype=np.uint8)  # [B, T, H, W, 3]
    processor = VideoLlavaImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, image_mean=CLIP_MEAN, image_std=CLIP_STD
    )
    ours = tiny_backend.pixel_values(frames)  # [B, T, 3, 32, 32]
    for b in range(2):
        ref = processor(images=list(frames[b]), return_tensors="pt", return_legacy_image_output=False)
        torch.testing.assert_close(ours[b], ref["pixel_values"], atol=1e-5, rtol=0)


def test_default_device_and_dtype_are_bf16_on_cuda_and_fp32_on_cpu() -> None:
    assert default_device_dtype("cpu", None) == (torch.device("cpu"), torch.float32)
    assert default_device_dtype("cuda", None) == (torch.device("cuda"), torch.bfloat16)
    assert default_device_dtype("cpu", "bfloat16")[1] == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype 'half-ish'"):
        default_device_dtype("cpu", "half-ish")


def _save_tiny(backend: FeatureBackend, folder: Path, *, mean: tuple[float, ...] = CLIP_MEAN) -> Path:
    backend.model.save_pretrained(folder)
    backend.tokenizer.save_pretrained(folder)
    VideoLlavaImageProcessor(
        size={"shortest_edge": backend.frame_size},
        crop_size={"height": backend.crop_size, "width": backend.crop_size},
        image_mean=list(mean),
        image_std=list(CLIP_STD),
    ).save_pretrained(folder)
    return folder


@pytest.mark.parametrize(
    ("tiny", "real"), [("tiny-video-llava", "video-llava"), ("tiny-llava-next-video", "llava-next-video")]
)
def test_from_pretrained_round_trip_offline_gives_the_same_features(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_video, tiny: str, real: str
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    saved = create_backend(tiny)
    folder = _save_tiny(saved, tmp_path / "checkpoint")
    loaded = create_backend(real, model=str(folder), device="cpu")
    assert (loaded.model_id, loaded.dtype, loaded.tokens_per_frame) == (
        str(folder),
        torch.float32,
        saved.tokens_per_frame,
    )
    assert (loaded.frame_size, loaded.crop_size, loaded.video_token_id) == (32, 32, saved.video_token_id)
    video = make_video("v.mp4", 30)
    a = FeatureExtractor(saved).extract(video, label="jump")
    b = FeatureExtractor(loaded).extract(video, label="jump")
    assert torch.equal(a.visual, b.visual)
    assert all(torch.equal(a.text[r], b.text[r]) for r in a.text)
    assert a.prompt_ids == b.prompt_ids


def test_from_pretrained_reads_normalisation_from_the_processor_config(tmp_path: Path) -> None:
    folder = _save_tiny(create_backend("tiny-video-llava"), tmp_path / "ckpt", mean=(0.5, 0.5, 0.5))
    loaded = create_backend("video-llava", model=folder, device="cpu", model_id="tiny-saved")
    white = np.full((1, 1, 32, 32, 3), 255, np.uint8)
    expected = (1.0 - 0.5) / torch.tensor(CLIP_STD)
    torch.testing.assert_close(loaded.pixel_values(white)[0, 0, :, 0, 0], expected)
    assert loaded.model_id == "tiny-saved"


def test_a_missing_local_model_gives_one_sentence_naming_the_folder(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-checkpoint"
    with pytest.raises(FileNotFoundError, match=rf"the folder '{missing}' does not exist") as info:
        create_backend("video-llava", model=missing, device="cpu")
    assert str(info.value).count(". ") == 0
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"has no config\.json"):
        create_backend("video-llava", model=tmp_path / "empty", device="cpu")


def test_an_uncached_hub_id_offline_names_the_id_and_the_offline_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match=r"'fsar-test/no-such-model'.*HF_HUB_OFFLINE=1"):
        create_backend("video-llava", model="fsar-test/no-such-model", device="cpu")


@pytest.mark.parametrize(
    ("tiny", "real"), [("tiny-video-llava", "video-llava"), ("tiny-llava-next-video", "llava-next-video")]
)
def test_random_init_keeps_the_architecture_and_tokenizer_but_not_the_weights(
    tmp_path: Path, tiny: str, real: str
) -> None:
    saved = create_backend(tiny, seed=3)
    folder = _save_tiny(saved, tmp_path / "ckpt")
    trained = create_backend(real, model=folder, device="cpu", model_id="m")
    random_a = create_backend(real, model=folder, device="cpu", model_id="m", random_init_seed=0)
    random_b = create_backend(real, model=folder, device="cpu", model_id="m", random_init_seed=0)
    assert random_a.model_id == "m+random-init(seed=0)"
    assert random_a.model.config.to_diff_dict().keys() == trained.model.config.to_diff_dict().keys()
    assert (random_a.n_layers, random_a.hidden_size, random_a.tokens_per_frame) == (2, 64, saved.tokens_per_frame)
    assert [p.shape for p in random_a.model.parameters()] == [p.shape for p in trained.model.parameters()]
    assert random_a.tokenizer.get_vocab() == trained.tokenizer.get_vocab()
    a, b, t = (dict(x.model.named_parameters()) for x in (random_a, random_b, trained))
    assert a.keys() == t.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)  # seeded
    assert not torch.equal(a["lm_head.weight"], t["lm_head.weight"])


def test_the_word_tokenizer_keeps_known_words_whole_and_spells_the_rest(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from fsar_features.backends import build_word_tokenizer

    tok = build_word_tokenizer(["moving something up", "USER: ASSISTANT:"])
    ids = tok("USER: <video><video>\nmoving something up-ward ASSISTANT:").input_ids
    tokens = tok.convert_ids_to_tokens(ids)
    assert tokens == ["<s>", "USER", ":", "<video>", "<video>", "moving", "something", "up", "-",
                      "w", "##a", "##r", "##d", "ASSISTANT", ":"]  # fmt: skip
    assert tok.convert_tokens_to_ids("<video>") == 5
    assert tok("héllo").input_ids[1] == tok.unk_token_id  # outside printable ASCII: one <unk> for the word
    tok.save_pretrained(tmp_path / "tok")
    loaded = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert loaded("moving something upward").input_ids == tok("moving something upward").input_ids
    assert build_word_tokenizer(["b a", "a"]).get_vocab() == build_word_tokenizer(["a", "b"]).get_vocab()
