"""Extraction end to end with the tiny model: roles, batching, determinism, failures, bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from einops import rearrange

from fsar_features import (
    ExtractionConfig,
    FeatureBackend,
    FeatureCache,
    FeatureExtractor,
    FeatureRecipe,
    VideoItem,
    extract_features,
    find_video_span,
    resolve_shard,
)
from fsar_prompts import render_prompt

T = 8


def test_extraction_end_to_end_fills_a_readable_cache(
    tmp_path: Path, video_items: list[VideoItem], tiny_backend: FeatureBackend
) -> None:
    summary = extract_features(video_items, tmp_path / "cache", tiny_backend, progress=False, videos_per_shard=4)
    assert summary.ok
    assert summary.exit_code == 0
    assert (summary.n_items, summary.n_extracted, summary.n_skipped) == (6, 6, 0)
    cache = FeatureCache.open(tmp_path / "cache")
    ids = [it.video_id for it in video_items]
    assert cache.video_ids == ids
    assert cache.labels == {it.video_id: it.label for it in video_items}
    assert cache.visual(ids).shape == (6, 8, 64)
    assert cache.visual(ids).dtype == torch.float16
    assert cache.text(ids, role="query").shape == (6, 64)
    labelled = [it.video_id for it in video_items if it.label is not None]
    assert cache.text(labelled, role="support").shape == (4, 64)
    assert len(list((tmp_path / "cache" / "shards").glob("*.safetensors"))) == 2  # 4 + 2 videos
    recipe = cache.recipe
    assert recipe.model_id == tiny_backend.model_id
    assert recipe.layers == (2,)
    assert recipe.n_frames == 8
    assert recipe.prompts == {"query": render_prompt("video-llava", "query").id, "support": "support-generic@1"}
    entry = cache.entry("vid01")
    assert entry.prompt_ids["support"] == render_prompt("video-llava", "support", label=video_items[1].label).id
    assert entry.frame_indices == (0, 3, 7, 10, 14, 17, 21, 24)
    assert entry.n_source_frames == 25


def test_cached_features_equal_the_extractor_output_in_float32_storage(
    tmp_path: Path, video_items: list[VideoItem], tiny_extractor: FeatureExtractor
) -> None:
    config = ExtractionConfig(storage_dtype="float32", batch_size=1)  # batch 1: bitwise like extract()
    extract_features(video_items[:2], tmp_path / "c", tiny_extractor.backend, config, progress=False)
    cache = FeatureCache.open(tmp_path / "c")
    direct = tiny_extractor.extract(video_items[0].path, video_items[0].label, "vid00")
    assert torch.equal(cache.visual(["vid00"])[0], direct.visual)
    assert torch.equal(cache.text(["vid00"], "support")[0], direct.text["support"])
    assert torch.equal(cache.features("vid00").text["query"], direct.text["query"])
    assert direct.recipe == tiny_extractor.recipe
    assert cache.features("vid00").recipe == cache.recipe == FeatureExtractor(tiny_extractor.backend, config).recipe


def test_batched_equals_unbatched_within_tolerance(
    video_items: list[VideoItem], tiny_extractor: FeatureExtractor
) -> None:
    clips = [tiny_extractor.read(it.path, it.video_id) for it in video_items]
    ids, labels = [it.video_id for it in video_items], [it.label for it in video_items]
    batched = tiny_extractor.extract_clips(clips, ids, labels)  # mixed labelled / unlabelled, padded suffixes
    for clip, vid, label, b in zip(clips, ids, labels, batched, strict=True):
        single = tiny_extractor.extract_clips([clip], [vid], [label])[0]
        torch.testing.assert_close(b.visual, single.visual, atol=1e-5, rtol=1e-5)
        assert b.text.keys() == single.text.keys() == ({"query", "support"} if label else {"query"})
        for role in b.text:
            torch.testing.assert_close(b.text[role], single.text[role], atol=1e-5, rtol=1e-5)


def test_prefix_cache_reuse_matches_full_forwards(video_items: list[VideoItem], tiny_backend: FeatureBackend) -> None:
    cached = FeatureExtractor(tiny_backend, ExtractionConfig(reuse_prefix_cache=True))
    full = FeatureExtractor(tiny_backend, ExtractionConfig(reuse_prefix_cache=False))
    clips = [cached.read(it.path, it.video_id) for it in video_items]
    args = (clips, [it.video_id for it in video_items], [it.label for it in video_items])
    for a, b in zip(cached.extract_clips(*args), full.extract_clips(*args), strict=True):
        torch.testing.assert_close(a.visual, b.visual, atol=1e-5, rtol=1e-5)
        for role in a.text:
            torch.testing.assert_close(a.text[role], b.text[role], atol=1e-5, rtol=1e-5)


def test_the_same_video_gives_bitwise_identical_features_twice_on_cpu(video_items: list[VideoItem]) -> None:
    item = video_items[1]
    a = FeatureExtractor("tiny-video-llava").extract(item.path, item.label)
    b = FeatureExtractor("tiny-video-llava").extract(item.path, item.label)  # a fresh backend too
    assert torch.equal(a.visual, b.visual)
    assert all(torch.equal(a.text[r], b.text[r]) for r in ("query", "support"))


def test_visual_features_do_not_depend_on_the_prompt(
    video_items: list[VideoItem], tiny_backend: FeatureBackend
) -> None:
    item = video_items[0]
    query_only = FeatureExtractor(tiny_backend, ExtractionConfig(roles=("query",), reuse_prefix_cache=False))
    support_only = FeatureExtractor(tiny_backend, ExtractionConfig(roles=("support",), reuse_prefix_cache=False))
    a, b = query_only.extract(item.path, item.label), support_only.extract(item.path, item.label)
    torch.testing.assert_close(a.visual, b.visual, atol=1e-6, rtol=1e-5)
    assert set(a.text) == {"query"}
    assert set(b.text) == {"support"}


def test_broken_videos_are_reported_and_the_run_goes_on(
    tmp_path: Path, video_items: list[VideoItem], make_video, tiny_backend: FeatureBackend
) -> None:
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    truncated = make_video("truncated.mp4", 50)
    truncated.write_bytes(truncated.read_bytes()[:2000])
    items = [*video_items[:3], VideoItem("empty", empty, "run"), VideoItem("truncated", truncated, None)]
    summary = extract_features(items, tmp_path / "cache", tiny_backend, progress=False)
    assert not summary.ok
    assert summary.exit_code == 1
    assert {f.video_id for f in summary.failures} == {"empty", "truncated"}
    reasons = {f.video_id: f.reason for f in summary.failures}
    assert reasons["empty"] == "empty file (0 bytes)"
    assert "FAILED empty" in summary.describe()
    assert "FAILED truncated" in summary.describe()
    cache = FeatureCache.open(tmp_path / "cache")
    assert cache.video_ids == ["vid00", "vid01", "vid02"]
    assert {f.video_id for f in cache.failures} == {"empty", "truncated"}


def test_repeated_video_ids_are_refused(tmp_path: Path, video_items: list[VideoItem]) -> None:
    with pytest.raises(ValueError, match=r"video ids must be unique; repeated: \['vid00'\]"):
        extract_features([video_items[0], video_items[0]], tmp_path / "c", progress=False)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sampling": "dense"}, "unknown sampling 'dense'"),
        ({"visual_pooling": "max"}, "unknown visual pooling 'max'"),
        ({"text_pooling": "first"}, "unknown text pooling 'first'"),
        ({"roles": ("label",)}, "roles must be distinct names from"),
        ({"roles": ()}, "roles must be distinct names from"),
        ({"n_frames": 0}, "n_frames must be at least 1, got 0"),
        ({"batch_size": 0}, "batch_size must be at least 1, got 0"),
        ({"storage_dtype": "int8"}, "unknown storage dtype 'int8'"),
    ],
)
def test_bad_extraction_configs_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ExtractionConfig(**kwargs)


def test_an_unknown_scenario_is_refused_with_the_valid_ones(tiny_backend: FeatureBackend) -> None:
    with pytest.raises(ValueError, match="scenario"):
        FeatureExtractor(tiny_backend, ExtractionConfig(scenario="underwater"))


def test_clips_with_the_wrong_frame_count_are_refused(video_items: list[VideoItem], tiny_backend) -> None:
    clip = FeatureExtractor(tiny_backend, ExtractionConfig(n_frames=4)).read(video_items[0].path, "a")
    with pytest.raises(ValueError, match="has 4 frames, the config says T = 8"):
        FeatureExtractor(tiny_backend).extract_clips([clip], ["a"])


@pytest.mark.parametrize(
    ("shard", "message"), [("3/2", "invalid"), ("1of2", "must look like 'i/n'"), ((0, 0), "invalid")]
)
def test_bad_shards_are_refused(shard, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_shard(shard)


def test_torchrun_rank_and_world_size_pick_the_shard(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert resolve_shard(None) == (3, 4)
    assert resolve_shard("1/2") == (1, 2)  # an explicit shard wins
    monkeypatch.delenv("RANK")
    assert resolve_shard(None) == (0, 1)


def test_a_relabelled_video_is_extracted_again_and_its_support_text_changes(
    tmp_path: Path, video_items: list[VideoItem], tiny_backend: FeatureBackend
) -> None:
    cache_dir = tmp_path / "cache"
    first = extract_features(video_items, cache_dir, tiny_backend, progress=False)
    assert first.n_refreshed == 0
    labelled = [it for it in video_items if it.label is not None]
    old = FeatureCache.open(cache_dir)
    old_support = old.text([labelled[0].video_id], "support")[0].clone()
    old_query = old.text([labelled[0].video_id], "query")[0].clone()

    renamed = [it._replace(label="a renamed action") if it == labelled[0] else it for it in video_items]
    second = extract_features(renamed, cache_dir, tiny_backend, progress=False)
    assert (second.n_extracted, second.n_refreshed, second.n_skipped) == (1, 1, len(video_items) - 1)
    assert "extracted again" in second.describe()

    cache = FeatureCache.open(cache_dir)
    entry = cache.entry(labelled[0].video_id)
    assert entry.label == "a renamed action"
    assert entry.generation == 1
    assert entry.prompt_ids["support"] == render_prompt("video-llava", "support", label="a renamed action").id
    assert not torch.equal(cache.text([labelled[0].video_id], "support")[0], old_support)
    assert torch.equal(cache.text([labelled[0].video_id], "query")[0], old_query)  # the query prompt is label-free
    assert cache.duplicates == []
    assert len(cache) == len(video_items)

    third = extract_features(renamed, cache_dir, tiny_backend, progress=False)
    assert (third.n_extracted, third.n_refreshed) == (0, 0)  # the refreshed entry is reused from now on


def test_a_label_free_request_reuses_a_labelled_entry(
    tmp_path: Path, video_items: list[VideoItem], tiny_backend: FeatureBackend
) -> None:
    extract_features(video_items, tmp_path / "cache", tiny_backend, progress=False)
    unlabelled = [it._replace(label=None) for it in video_items]
    again = extract_features(unlabelled, tmp_path / "cache", tiny_backend, progress=False)
    assert (again.n_extracted, again.n_refreshed) == (0, 0)


def test_a_changed_scenario_prompt_is_refused_as_another_recipe(
    tmp_path: Path, video_items: list[VideoItem], tiny_backend: FeatureBackend
) -> None:
    extract_features(video_items[:2], tmp_path / "cache", tiny_backend, progress=False)
    with pytest.raises(ValueError, match="another recipe"):
        extract_features(
            video_items[:2], tmp_path / "cache", tiny_backend, ExtractionConfig(scenario="temporal"), progress=False
        )


# --- decoding options in the recipe -------------------------------------------------------------

#: The recipe.json keys of the first format: a cache made before the decoding options existed.
FIRST_FORMAT_KEYS = {
    "backend", "model_id", "family", "dim", "n_layers", "layers", "visual_pooling", "text_pooling", "n_frames",
    "sampling", "sampling_seed", "frame_size", "crop_size", "scenario", "roles", "prompts", "storage_dtype",
    "reuse_prefix_cache", "format_version",
}  # fmt: skip


def _first_format_features(backend: FeatureBackend, extractor: FeatureExtractor, item: VideoItem) -> dict:
    """The first format's extraction written out: prefix + video once; the mean of each frame's V tokens of
    the last layer; each role's suffix on the key/value cache of prefix + video, its last token's state."""
    clip = extractor.read(item.path, item.video_id)
    pixels = backend.pixel_values(clip.frames[None])
    n_video = T * backend.tokens_per_frame
    out = {}
    for role, label in (("query", None), ("support", item.label)):
        ids = backend.tokenize(render_prompt(backend.family, role, label=label), T)
        _, end = find_video_span(ids, backend.video_token_id, n_video)
        prefix = torch.tensor([ids[:end]])  # [1, P]
        first = backend.forward(prefix, torch.ones_like(prefix), pixels, use_cache=True)
        h = first.hidden_states[-1].float()[0]  # [P, D]
        out["visual"] = rearrange(h[end - n_video : end], "(t v) d -> t v d", t=T).mean(dim=1)  # [T, D]
        suffix = torch.tensor([ids[end:]])  # [1, S_t]
        step = backend.forward(suffix, torch.ones(1, len(ids)), cache=first.cache, use_cache=True)
        out[role] = step.hidden_states[-1].float()[0, -1]  # [D]
    return out


def test_default_options_give_bitwise_the_features_and_recipe_of_the_first_format(
    tmp_path: Path, video_items: list[VideoItem], tiny_backend: FeatureBackend
) -> None:
    items = [it for it in video_items if it.label is not None][:2]
    default = ExtractionConfig(batch_size=1)  # batch 1: the oracle runs one video at a time
    explicit = ExtractionConfig(
        batch_size=1,
        visual_pooling="mean",
        text_pooling="last",
        support_text_pooling="last",
        query_text_pooling="last",
        temporal_centring=False,
    )
    extract_features(items, tmp_path / "a", tiny_backend, default, progress=False)
    extract_features(items, tmp_path / "b", tiny_backend, explicit, progress=False)
    a, b = FeatureCache.open(tmp_path / "a"), FeatureCache.open(tmp_path / "b")
    assert (tmp_path / "a" / "recipe.json").read_bytes() == (tmp_path / "b" / "recipe.json").read_bytes()
    assert set(json.loads((tmp_path / "a" / "recipe.json").read_text())) == FIRST_FORMAT_KEYS
    assert a.recipe.visual_dim == a.visual_dim == a.text_dim == tiny_backend.hidden_size
    ids = a.video_ids
    assert torch.equal(a.visual(ids), b.visual(ids))
    extractor = FeatureExtractor(tiny_backend, default)
    for item in items:
        oracle = _first_format_features(tiny_backend, extractor, item)
        assert torch.equal(a.visual([item.video_id])[0], oracle["visual"].half())
        for role in ("query", "support"):
            assert torch.equal(a.text([item.video_id], role)[0], oracle[role].half())
            assert torch.equal(b.text([item.video_id], role)[0], oracle[role].half())


def test_a_cache_of_the_first_format_opens_and_resumes_with_the_default_options(
    tmp_path: Path, video_items: list[VideoItem], tiny_backend: FeatureBackend
) -> None:
    extract_features(video_items[:2], tmp_path / "c", tiny_backend, progress=False)
    recipe_file = tmp_path / "c" / "recipe.json"
    legacy = {k: v for k, v in json.loads(recipe_file.read_text()).items() if k in FIRST_FORMAT_KEYS}
    recipe_file.write_text(json.dumps(legacy, indent=2, sort_keys=True) + "\n")  # exactly the old file
    again = extract_features(video_items[:3], tmp_path / "c", tiny_backend, progress=False)
    assert (again.n_skipped, again.n_extracted) == (2, 1)
    cache = FeatureCache.open(tmp_path / "c")
    assert cache.recipe == FeatureExtractor(tiny_backend).recipe
    assert cache.recipe.text_pooling_for("support") == "last"
    assert not cache.recipe.temporal_centring


@pytest.mark.parametrize(
    ("option", "field"),
    [
        ({"visual_pooling": "grid2"}, "visual_pooling"),
        ({"visual_pooling": "grid4"}, "visual_dim"),
        ({"temporal_centring": True}, "temporal_centring"),
        ({"support_text_pooling": "label"}, "support_text_pooling"),
        ({"query_text_pooling": "mean"}, "query_text_pooling"),
    ],
)
def test_every_decoding_option_changes_the_recipe_and_a_cache_refuses_mixing(
    tmp_path: Path, video_items: list[VideoItem], tiny_backend: FeatureBackend, option: dict, field: str
) -> None:
    base, changed = (
        FeatureExtractor(tiny_backend).recipe,
        FeatureExtractor(tiny_backend, ExtractionConfig(**option)).recipe,
    )
    assert changed != base
    assert changed.hash != base.hash
    assert FeatureRecipe.from_json(changed.to_json()) == changed
    extract_features(video_items[:1], tmp_path / "c", tiny_backend, progress=False)
    with pytest.raises(ValueError, match=rf"never mixes recipes.*{field}: "):
        extract_features(video_items[:1], tmp_path / "c", tiny_backend, ExtractionConfig(**option), progress=False)


def test_grid_centred_label_features_are_cached_with_their_widths(
    tmp_path: Path, video_items: list[VideoItem], tiny_backend: FeatureBackend
) -> None:
    config = ExtractionConfig(
        visual_pooling="grid4", temporal_centring=True, support_text_pooling="label", query_text_pooling="mean"
    )
    summary = extract_features(video_items, tmp_path / "c", tiny_backend, config, progress=False)
    assert summary.ok
    cache = FeatureCache.open(tmp_path / "c")
    d = tiny_backend.hidden_size
    assert (cache.recipe.dim, cache.recipe.visual_dim, cache.visual_dim, cache.text_dim) == (d, 16 * d, 16 * d, d)
    ids = cache.video_ids
    visual = cache.visual(ids, dtype=torch.float32)
    assert visual.shape == (6, T, 16 * d)
    torch.testing.assert_close(visual.mean(dim=1), torch.zeros(6, 16 * d), rtol=0, atol=2e-3)  # fp16 storage
    labelled = [it.video_id for it in video_items if it.label is not None]
    assert cache.text(labelled, "support").shape == (4, d)
    assert cache.text(ids, "query").shape == (6, d)
    features = cache.features(labelled[0])
    assert features.visual_dim == 16 * d
    assert features.text_poolings == {"query": "mean", "support": "label"}
    assert features.recipe.temporal_centring
    assert features.recipe == cache.recipe == FeatureExtractor(tiny_backend, config).recipe
    recipe = json.loads((tmp_path / "c" / "recipe.json").read_text())
    assert {
        k: recipe[k] for k in ("visual_dim", "support_text_pooling", "query_text_pooling", "temporal_centring")
    } == {
        "visual_dim": 16 * d,
        "support_text_pooling": "label",
        "query_text_pooling": "mean",
        "temporal_centring": True,
    }


def test_label_pooling_for_the_query_role_is_refused() -> None:
    with pytest.raises(ValueError, match=r"query role's text pooling is 'label'.*set query_text_pooling='mean'"):
        ExtractionConfig(text_pooling="label")
    with pytest.raises(ValueError, match="query role's text pooling is 'label'"):
        ExtractionConfig(query_text_pooling="label")
    with pytest.raises(ValueError, match=r"unknown text pooling 'first' \(support_text_pooling\)"):
        ExtractionConfig(support_text_pooling="first")
    config = ExtractionConfig(text_pooling="label", query_text_pooling="mean")
    assert (config.text_pooling_for("support"), config.text_pooling_for("query")) == ("label", "mean")
    assert ExtractionConfig(text_pooling="label", roles=("support",)).text_pooling_for("support") == "label"
