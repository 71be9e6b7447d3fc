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
    temporal_centre,
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
    assert features.recipe.layers == (tiny_backend.n_layers,)


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
    assert features.recipe.layers == (0, 2)


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
        ("middle", "unknown layer preset 'middle'; registered layer presets: last, last-4, three-quarters"),
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
    with pytest.raises(
        ValueError, match="unknown visual pooling 'max'; registered visual poolings: cls, grid1, grid2, grid4, mean"
    ):
        pool_visual(torch.zeros(16, 4), 8, "max")
    with pytest.raises(ValueError, match="unknown text pooling 'first'; registered text poolings: label, last, mean"):
        pool_text(torch.zeros(3, 4), "first")
    with pytest.raises(ValueError, match="does not split into T = 3"):
        pool_visual(torch.zeros(16, 4), 3)
    with pytest.raises(ValueError, match="no text tokens after the video"):
        pool_text(torch.zeros(0, 4))


# --- decoding options: grid pooling, temporal centring, label pooling --------------------------


def _grid_loop(tokens: torch.Tensor, n_frames: int, cells: int, has_cls: bool) -> torch.Tensor:
    """The slow oracle: ``[T·V, D]`` → ``[T, cells²·D]``, one cell at a time, row-major cells."""
    frames = tokens.view(n_frames, -1, tokens.shape[-1])  # [T, V, D]
    patches = frames[:, 1:] if has_cls else frames
    side = round(patches.shape[1] ** 0.5)
    step = side // cells
    out = torch.zeros(n_frames, cells * cells * tokens.shape[-1], dtype=tokens.dtype)
    for t in range(n_frames):
        parts = []
        for row in range(cells):
            for col in range(cells):
                total = torch.zeros(tokens.shape[-1], dtype=tokens.dtype)
                for r in range(row * step, (row + 1) * step):
                    for c in range(col * step, (col + 1) * step):
                        total += patches[t, r * side + c]
                parts.append(total / step**2)
        out[t] = torch.cat(parts)
    return out


@pytest.mark.parametrize("has_cls", [True, False])
@pytest.mark.parametrize(("side", "cells"), [(4, 1), (4, 2), (4, 4), (8, 2), (8, 4), (12, 4)])
def test_grid_pooling_equals_a_float64_loop_over_the_patch_grid(has_cls: bool, side: int, cells: int) -> None:
    n_frames, dim = 3, 5
    tokens = torch.randn(n_frames * (side * side + has_cls), dim, dtype=torch.float64)
    pooled = pool_visual(tokens, n_frames, f"grid{cells}", has_cls=has_cls)
    assert pooled.shape == (n_frames, cells * cells * dim)
    torch.testing.assert_close(pooled, _grid_loop(tokens, n_frames, cells, has_cls), rtol=0, atol=1e-12)


def test_grid_pooling_drops_the_cls_token_and_keeps_every_patch() -> None:
    n_frames, v, dim = 2, 17, 4  # CLS + a 4×4 patch grid per frame

    def grid2(tokens: torch.Tensor) -> torch.Tensor:
        return pool_visual(tokens, n_frames, "grid2", has_cls=True)  # [T, 4·D]

    tokens = torch.randn(n_frames * v, dim, dtype=torch.float64)
    cls_changed = tokens.clone()
    cls_changed[::v] += 100.0  # each frame's first token
    assert torch.equal(grid2(cls_changed), grid2(tokens))
    patch_changed = tokens.clone()
    patch_changed[v - 1] += 1.0  # frame 0's last patch: row 3, column 3, in cell (1, 1)
    diff = grid2(patch_changed) - grid2(tokens)
    assert diff[1].abs().max() == 0  # frame 1 untouched
    assert diff[0, : 3 * dim].abs().max() == 0  # cells (0, 0), (0, 1), (1, 0) untouched
    torch.testing.assert_close(diff[0, 3 * dim :], torch.full((dim,), 1 / 4, dtype=torch.float64))


@pytest.mark.parametrize(
    ("v", "has_cls", "pooling", "message"),
    [
        (17, False, "grid2", r"17 patch tokens \(no CLS token\) are not a square grid"),
        (18, True, "grid2", "17 patch tokens after dropping the CLS token are not a square grid"),
        (37, True, "grid4", r"grid4 pooling needs the 6×6 patch grid to split into 4×4 equal cells"),
    ],
)
def test_bad_grid_sizes_are_refused_naming_the_grid(v: int, has_cls: bool, pooling: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pool_visual(torch.zeros(2 * v, 3), 2, pooling, has_cls=has_cls)


def test_a_grid_finer_than_the_backends_patch_grid_is_refused_before_any_video() -> None:
    # tiny LLaVA-NeXT-Video: 4 tokens per frame = a 2×2 grid, no CLS
    with pytest.raises(ValueError, match="grid4 pooling needs the 2×2 patch grid"):
        FeatureExtractor("tiny-llava-next-video", ExtractionConfig(visual_pooling="grid4"))


def test_temporal_centre_zeroes_the_mean_over_frames_and_keeps_frame_differences() -> None:
    visual = torch.randn(3, T, 6, dtype=torch.float64) + 5.0  # [B, T, D]
    centred = temporal_centre(visual)
    torch.testing.assert_close(centred.mean(dim=1), torch.zeros(3, 6, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(centred[:, 1:] - centred[:, :-1], visual[:, 1:] - visual[:, :-1], rtol=0, atol=1e-12)


@pytest.mark.parametrize("pooling", ["mean", "grid2"])
def test_temporal_centring_at_extraction_centres_each_video_and_leaves_the_text_alone(
    tiny_backend: FeatureBackend, clip, pooling: str
) -> None:
    plain = FeatureExtractor(tiny_backend, ExtractionConfig(visual_pooling=pooling))
    centred = FeatureExtractor(tiny_backend, ExtractionConfig(visual_pooling=pooling, temporal_centring=True))
    a = plain.extract_clips([clip], ["v"], ["jumping jacks"])[0]
    b = centred.extract_clips([clip], ["v"], ["jumping jacks"])[0]
    assert b.recipe.temporal_centring
    assert not a.recipe.temporal_centring
    torch.testing.assert_close(b.visual.mean(dim=0), torch.zeros(b.visual_dim), rtol=0, atol=1e-5)
    torch.testing.assert_close(b.visual[1:] - b.visual[:-1], a.visual[1:] - a.visual[:-1], rtol=0, atol=1e-5)
    assert all(torch.equal(a.text[role], b.text[role]) for role in ("query", "support"))


def test_grid_features_at_a_middle_layer_equal_manual_slicing(tiny_backend: FeatureBackend, clip) -> None:
    config = ExtractionConfig(layers=1, visual_pooling="grid4", roles=("query",), reuse_prefix_cache=False)
    extractor = FeatureExtractor(tiny_backend, config)
    features = extractor.extract_clips([clip], ["v"])[0]
    assert extractor.visual_dim == features.visual_dim == 16 * tiny_backend.hidden_size
    ids, hidden, _ = _manual_hidden_states(tiny_backend, clip.frames, "query", None)
    video = hidden[1][0][ids == tiny_backend.video_token_id].double()  # [T·V, D]: CLS + 4×4 patches per frame
    torch.testing.assert_close(features.visual.double(), _grid_loop(video, T, 4, True), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("reuse_prefix_cache", [True, False])
@pytest.mark.parametrize("label", ["jumping jacks", "Pushing [something] from left to right", "brush_hair"])
def test_label_pooling_is_the_mean_over_the_class_name_tokens_and_query_mean_over_the_suffix(
    tiny_backend: FeatureBackend, clip, reuse_prefix_cache: bool, label: str
) -> None:
    config = ExtractionConfig(
        support_text_pooling="label", query_text_pooling="mean", reuse_prefix_cache=reuse_prefix_cache
    )
    features = FeatureExtractor(tiny_backend, config).extract_clips([clip], ["v"], [label])[0]
    assert features.text_poolings == {"query": "mean", "support": "label"}
    tol = {"atol": 1e-5, "rtol": 1e-5}
    # support: the byte tokenizer gives one token per character, so the label's tokens are the
    # characters between the quotes of 'This video shows the action "<label>"'.
    ids, hidden, _ = _manual_hidden_states(tiny_backend, clip.frames, "support", label)
    h = hidden[-1][0]  # [S, D]
    after = h[int((ids == tiny_backend.video_token_id).nonzero().max()) + 1 :]  # [S_t, D]
    suffix = render_prompt(tiny_backend.family, "support", label=label).suffix
    start = suffix.index('"') + 1
    stop = suffix.index('"', start)
    assert suffix[start:stop] == render_prompt(tiny_backend.family, "support", label=label).label_text
    torch.testing.assert_close(features.text["support"], after[start:stop].mean(dim=0), **tol)
    ids, hidden, _ = _manual_hidden_states(tiny_backend, clip.frames, "query", None)
    h = hidden[-1][0]
    after = h[int((ids == tiny_backend.video_token_id).nonzero().max()) + 1 :]
    torch.testing.assert_close(features.text["query"], after.mean(dim=0), **tol)


def test_label_pooling_needs_label_positions() -> None:
    with pytest.raises(ValueError, match="text pooling 'label' averages the class-name tokens"):
        pool_text(torch.zeros(3, 4), "label")
    torch.testing.assert_close(
        pool_text(torch.arange(12.0).view(4, 3), "label", label_positions=[1, 3]), torch.tensor([6.0, 7.0, 8.0])
    )
