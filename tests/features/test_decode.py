"""Hidden states → two streams: index convention, manual slicing oracle, layers and pooling choices."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from einops import rearrange

from fsar_features import (
    ExtractionConfig,
    FeatureBackend,
    FeatureExtractor,
    create_backend,
    find_video_span,
    pool_text,
    pool_visual,
    read_frames,
    resolve_layers,
)
from fsar_prompts import render_prompt

T = 8


def _manual_hidden_states(backend: FeatureBackend, frames: np.ndarray, prompt_text_role: str, label: str | None):
    """One full forward of the whole model (LM head included) on one video: ids, hidden states, logits."""
    prompt = render_prompt(backend.family, prompt_text_role, "generic", label=label)
    ids = torch.tensor([backend.tokenize(prompt, T)])
    with torch.inference_mode():
        out = backend.model(
            input_ids=ids, pixel_values_videos=backend.pixel_values(frames[None]), output_hidden_states=True
        )
    return ids[0], out.hidden_states, out.logits


@pytest.fixture
def clip(make_video):
    return read_frames(make_video("v.mp4", 40), T, size=32)


def test_hidden_states_follow_the_documented_index_convention(tiny_backend: FeatureBackend, clip) -> None:
    ids, hidden, logits = _manual_hidden_states(tiny_backend, clip.frames, "query", None)
    model = tiny_backend.model
    assert len(hidden) == tiny_backend.n_layers + 1  # 0 = embeddings, ℓ = layer ℓ, L = last
    text = ids != tiny_backend.video_token_id
    embeddings = model.get_input_embeddings()(ids)
    torch.testing.assert_close(hidden[0][0, text], embeddings[text])  # index 0: the input embeddings
    torch.testing.assert_close(model.lm_head(hidden[-1]), logits)  # index L: what the LM head reads


@pytest.mark.parametrize("reuse_prefix_cache", [False, True])
def test_per_frame_and_text_features_equal_manual_slicing_of_hidden_states(
    tiny_backend: FeatureBackend, clip, reuse_prefix_cache: bool
) -> None:
    extractor = FeatureExtractor(tiny_backend, ExtractionConfig(reuse_prefix_cache=reuse_prefix_cache))
    features = extractor.extract_clips([clip], ["v"], ["jumping jacks"])[0]
    v = tiny_backend.tokens_per_frame
    for role, label in (("query", None), ("support", "jumping jacks")):
        ids, hidden, _ = _manual_hidden_states(tiny_backend, clip.frames, role, label)
        h = hidden[-1][0]  # [S, D]
        video = h[ids == tiny_backend.video_token_id].view(T, v, -1)  # [T, V, D]
        last_video = int((ids == tiny_backend.video_token_id).nonzero().max())
        # The full path differs from one forward of the whole model only by kernel noise (other sequence
        # lengths); the cached path adds the split at the video.
        tol = {"atol": 1e-5, "rtol": 1e-5} if reuse_prefix_cache else {"atol": 1e-6, "rtol": 1e-5}
        torch.testing.assert_close(features.visual, video.mean(dim=1), **tol)
        torch.testing.assert_close(features.text[role], h[-1], **tol)
        assert last_video < h.shape[0] - 1
    assert features.layers == (tiny_backend.n_layers,)


def test_layer_mean_cls_and_text_mean_options_match_manual_slicing(tiny_backend: FeatureBackend, clip) -> None:
    config = ExtractionConfig(
        layers=(0, -1), visual_pooling="cls", text_pooling="mean", roles=("query",), reuse_prefix_cache=False
    )
    features = FeatureExtractor(tiny_backend, config).extract_clips([clip], ["v"])[0]
    ids, hidden, _ = _manual_hidden_states(tiny_backend, clip.frames, "query", None)
    h = (hidden[0][0] + hidden[-1][0]) / 2  # [S, D]
    mask = ids == tiny_backend.video_token_id
    video = rearrange(h[mask], "(t v) d -> t v d", t=T)
    after = h[int(mask.nonzero().max()) + 1 :]
    torch.testing.assert_close(features.visual, video[:, 0], atol=1e-6, rtol=0)
    torch.testing.assert_close(features.text["query"], after.mean(dim=0), atol=1e-6, rtol=0)
    assert features.layers == (0, 2)


def test_llava_next_video_features_equal_manual_slicing(make_video) -> None:
    backend = create_backend("tiny-llava-next-video")
    clip = read_frames(make_video("n.mp4", 30), T, size=32)
    features = FeatureExtractor(backend).extract_clips([clip], ["n"])[0]
    ids, hidden, _ = _manual_hidden_states(backend, clip.frames, "query", None)
    h = hidden[-1][0]
    video = h[ids == backend.video_token_id].view(T, 4, -1)
    torch.testing.assert_close(features.visual, video.mean(dim=1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(features.text["query"], h[-1], atol=1e-5, rtol=1e-5)
    assert set(features.text) == {"query"}


def test_cls_pooling_is_refused_for_a_family_without_cls_tokens() -> None:
    with pytest.raises(ValueError, match="needs a CLS token per frame, and backend 'tiny-llava-next-video' has none"):
        FeatureExtractor("tiny-llava-next-video", ExtractionConfig(visual_pooling="cls"))


def test_resolve_layers_normalises_indices_and_presets() -> None:
    assert resolve_layers(-1, 32) == (32,)
    assert resolve_layers(0, 32) == (0,)
    assert resolve_layers([-1, 24, 32], 32) == (24, 32)
    assert resolve_layers("last-4", 32) == (29, 30, 31, 32)
    assert resolve_layers("three-quarters", 32) == (24,)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (33, "layer 33 is outside the hidden states of a 32-layer decoder"),
        (-34, "layer -34 is outside"),
        ([], "empty layer list"),
        ("middle", "unknown layer preset 'middle'; presets: last, last-4, three-quarters"),
        (1.5, "layer 1.5 is outside"),
    ],
)
def test_bad_layer_choices_are_refused_with_the_valid_range(spec, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_layers(spec, 32)


def test_find_video_span_rejects_split_missing_and_miscounted_spans() -> None:
    assert find_video_span([1, 9, 9, 2], 9, 2) == (1, 3)
    with pytest.raises(ValueError, match="not one contiguous span"):
        find_video_span([9, 1, 9], 9, 2)
    with pytest.raises(ValueError, match="no video tokens"):
        find_video_span([1, 2], 9, 2)
    with pytest.raises(ValueError, match="expected T·V = 3 video tokens, found 2"):
        find_video_span([9, 9, 1], 9, 3)


def test_pooling_names_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown visual pooling 'max'; valid: cls, mean"):
        pool_visual(torch.zeros(16, 4), 8, "max")
    with pytest.raises(ValueError, match="unknown text pooling 'first'; valid: last, mean"):
        pool_text(torch.zeros(3, 4), "first")
    with pytest.raises(ValueError, match="does not split into T = 3"):
        pool_visual(torch.zeros(16, 4), 3)
    with pytest.raises(ValueError, match="no text tokens after the video"):
        pool_text(torch.zeros(0, 4))
