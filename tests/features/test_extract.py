"""Extraction end to end with the tiny model: roles, batching, determinism, failures, bad inputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fsar_features import (
    ExtractionConfig,
    FeatureBackend,
    FeatureCache,
    FeatureExtractor,
    VideoItem,
    extract_features,
    resolve_shard,
)
from fsar_prompts import render_prompt


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
