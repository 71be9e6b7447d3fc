"""The feature cache: recipes, atomic commits, kill-and-resume, sharded filling, the read API, size."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import fsar_features._cache as cache_module
from fsar_features import (
    ExtractionConfig,
    FeatureBackend,
    FeatureCache,
    FeatureRecipe,
    VideoFeatures,
    VideoItem,
    extract_features,
    shard_of,
)


def _recipe(**changes) -> FeatureRecipe:
    base = FeatureRecipe(
        backend="tiny-video-llava",
        model_id="m",
        family="video-llava",
        dim=4096,
        n_layers=32,
        layers=(32,),
        visual_pooling="mean",
        text_pooling="last",
        n_frames=8,
        sampling="uniform",
        sampling_seed=None,
        frame_size=224,
        crop_size=224,
        scenario="generic",
        roles=("query", "support"),
        prompts={"query": "p-0", "support": "support-generic@1"},
    )
    return dataclasses.replace(base, **changes)


def _assert_complete(cache_dir: Path, items: list[VideoItem]) -> FeatureCache:
    cache = FeatureCache.open(cache_dir)
    assert cache.video_ids == sorted(it.video_id for it in items)
    assert cache.duplicates == []
    ids = cache.video_ids
    assert cache.visual(ids).shape[0] == len(ids)
    return cache


def test_a_cache_refuses_a_second_recipe_and_names_both(tmp_path: Path) -> None:
    FeatureCache.create(tmp_path, _recipe())
    FeatureCache.create(tmp_path, _recipe())  # the same recipe reopens
    with pytest.raises(ValueError, match=r"another recipe.*layers: \(32,\) \(cache\) vs \(24,\) \(this run\)"):
        FeatureCache.create(tmp_path, _recipe(layers=(24,)))


def test_extracting_with_another_layer_into_an_existing_cache_is_refused(
    tmp_path: Path, video_items: list[VideoItem], tiny_backend: FeatureBackend
) -> None:
    extract_features(video_items[:1], tmp_path / "c", tiny_backend, progress=False)
    with pytest.raises(ValueError, match=r"never mixes recipes.*layers"):
        extract_features(video_items[:1], tmp_path / "c", tiny_backend, ExtractionConfig(layers=1), progress=False)


def test_recipe_round_trips_through_json_and_rejects_unknown_fields() -> None:
    recipe = _recipe()
    assert FeatureRecipe.from_json(recipe.to_json()) == recipe
    with pytest.raises(ValueError, match="unknown recipe fields"):
        FeatureRecipe.from_json({**recipe.to_json(), "colour": "blue"})


def test_open_on_a_folder_without_a_recipe_says_so(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"is not a feature cache: it has no recipe\.json"):
        FeatureCache.open(tmp_path)


class _FailingBackend:
    """Delegates to a backend and raises on the n-th forward (a crash in the middle of a run)."""

    def __init__(self, inner: FeatureBackend, fail_at: int) -> None:
        self._inner, self._fail_at, self.calls = inner, fail_at, 0

    def __getattr__(self, name: str):
        return getattr(self._inner, name)

    def forward(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self._fail_at:
            raise RuntimeError("injected crash")
        return self._inner.forward(*args, **kwargs)


def test_a_crash_mid_run_then_a_rerun_completes_the_cache_without_duplicates(
    tmp_path: Path, video_items: list[VideoItem], tiny_backend: FeatureBackend
) -> None:
    config = ExtractionConfig(batch_size=2)  # 3 forwards per batch (prefix, query, support)
    with pytest.raises(RuntimeError, match="injected crash"):
        extract_features(
            video_items,
            tmp_path / "c",
            _FailingBackend(tiny_backend, fail_at=5),
            config,
            progress=False,
            videos_per_shard=1,
        )
    assert FeatureCache.open(tmp_path / "c").video_ids == ["vid00", "vid01"]  # the first batch committed
    summary = extract_features(video_items, tmp_path / "c", tiny_backend, config, progress=False)
    assert (summary.n_skipped, summary.n_extracted) == (2, 4)
    _assert_complete(tmp_path / "c", video_items)


class _Killed(BaseException):
    """Stands for SIGKILL: raised by every file operation from the kill point on."""


@pytest.mark.parametrize("kill_at", [1, 2, 3, 4, 5])
def test_a_kill_at_any_commit_step_leaves_a_cache_that_a_rerun_completes(
    tmp_path: Path,
    video_items: list[VideoItem],
    tiny_backend: FeatureBackend,
    monkeypatch: pytest.MonkeyPatch,
    kill_at: int,
) -> None:
    """os.replace is each commit's last step: shard (odd calls) then fragment (even calls)."""
    calls = {"n": 0}
    real_replace = os.replace

    def dying_replace(src, dst):
        calls["n"] += 1
        if calls["n"] >= kill_at:  # the process is gone: this and every later rename never happen
            raise _Killed
        return real_replace(src, dst)

    monkeypatch.setattr(cache_module.os, "replace", dying_replace)
    with pytest.raises(_Killed):
        extract_features(video_items, tmp_path / "c", tiny_backend, progress=False, videos_per_shard=2)
    monkeypatch.setattr(cache_module.os, "replace", real_replace)

    partial = FeatureCache.open(tmp_path / "c")
    assert len(partial) == 2 * ((kill_at - 1) // 2)  # only fully committed shards are visible
    summary = extract_features(video_items, tmp_path / "c", tiny_backend, progress=False, videos_per_shard=2)
    assert summary.n_skipped == len(partial)
    cache = _assert_complete(tmp_path / "c", video_items)
    clean = extract_features(video_items, tmp_path / "clean", tiny_backend, progress=False, videos_per_shard=2)
    assert clean.ok
    reference = FeatureCache.open(tmp_path / "clean")
    assert torch.equal(cache.visual(cache.video_ids), reference.visual(cache.video_ids))
    removed = cache.clean()  # the killed writer's temp files and orphan shard
    assert all(".tmp-" in p.name or p.suffix == ".safetensors" for p in removed)
    assert not list((tmp_path / "c").rglob(".*.tmp-*"))
    _assert_complete(tmp_path / "c", video_items)


def test_torn_and_orphan_files_are_ignored_by_readers(
    tmp_path: Path, video_items: list[VideoItem], tiny_backend
) -> None:
    extract_features(video_items[:2], tmp_path / "c", tiny_backend, progress=False)
    (tmp_path / "c" / "shards" / ".r00000of00001-x-1-000000.safetensors.tmp-99").write_bytes(b"\x00" * 100)
    (tmp_path / "c" / "manifest" / ".r00000of00001-x-1-000000.json.tmp-99").write_bytes(b'{"entries": [')
    (tmp_path / "c" / "shards" / "r00000of00001-x-1-000000.safetensors").write_bytes(b"torn")
    cache = FeatureCache.open(tmp_path / "c")
    assert cache.video_ids == ["vid00", "vid01"]
    assert len(cache.clean()) == 3


@pytest.mark.slow
@pytest.mark.parametrize("kill_after_renames", [1, 2, 3])
def test_sigkill_of_a_real_process_then_rerun_completes_the_cache(
    tmp_path: Path, video_items: list[VideoItem], kill_after_renames: int
) -> None:
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        import fsar_features, fsar_features._cache as c
        real, n = os.replace, [0]
        def replace(src, dst):
            n[0] += 1
            if n[0] > {kill_after_renames}:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(src, dst)
        c.os.replace = replace
        items = [tuple(line.split("\\t")) for line in sys.stdin.read().splitlines()]
        items = [(i, p, None if l == "-" else l) for i, p, l in items]
        fsar_features.extract_features(items, sys.argv[1], progress=False, videos_per_shard=2)
        """
    )
    lines = "\n".join(f"{it.video_id}\t{it.path}\t{it.label or '-'}" for it in video_items)
    run = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "c")], input=lines, text=True, capture_output=True, check=False
    )
    assert run.returncode == -signal.SIGKILL, run.stderr
    assert len(FeatureCache.open(tmp_path / "c")) == 2 * (kill_after_renames // 2)
    extract_features(video_items, tmp_path / "c", progress=False, videos_per_shard=2)
    _assert_complete(tmp_path / "c", video_items)


@pytest.mark.parametrize("n_shards", [1, 3, 7])
def test_shards_partition_the_videos(n_shards: int) -> None:
    ids = [f"video-{k}" for k in range(500)]
    parts = [{v for v in ids if shard_of(v, n_shards) == i} for i in range(n_shards)]
    assert set().union(*parts) == set(ids)
    assert sum(len(p) for p in parts) == len(ids)  # disjoint
    assert all(len(p) > 500 / n_shards / 2 for p in parts)  # roughly balanced


def test_shard_assignment_is_stable_across_runs_and_machines() -> None:
    assert [shard_of(f"v{k}", 4) for k in range(8)] == [shard_of(f"v{k}", 4) for k in range(8)]
    assert shard_of("v_ApplyEyeMakeup_g01_c01", 4) == 2  # a fixed hash, not Python's salted hash()


def test_several_shards_fill_one_cache_without_collisions(
    tmp_path: Path, video_items: list[VideoItem], tiny_backend: FeatureBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    summaries = [
        extract_features(video_items, tmp_path / "c", tiny_backend, shard=(i, 3), progress=False) for i in range(2)
    ]
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "3")
    summaries.append(extract_features(video_items, tmp_path / "c", tiny_backend, progress=False))
    assert [s.shard for s in summaries] == [(0, 3), (1, 3), (2, 3)]
    assert sum(s.n_assigned for s in summaries) == len(video_items)
    writers = {p.name.split("-")[0] for p in (tmp_path / "c" / "manifest").glob("*.json")}
    assert writers <= {"r00000of00003", "r00001of00003", "r00002of00003"}
    _assert_complete(tmp_path / "c", video_items)


def test_stacked_reads_follow_the_requested_order_across_shards(
    tmp_path: Path, video_items: list[VideoItem], tiny_backend: FeatureBackend
) -> None:
    extract_features(video_items, tmp_path / "c", tiny_backend, progress=False, videos_per_shard=2)
    cache = FeatureCache.open(tmp_path / "c")
    order = ["vid05", "vid00", "vid03", "vid04", "vid01"]
    stacked = cache.visual(order, dtype=torch.float32)
    assert stacked.dtype == torch.float32
    for row, vid in zip(stacked, order, strict=True):
        assert torch.equal(row, cache.features(vid).visual.float())
    assert torch.equal(cache.text(order, "query")[1], cache.text(["vid00"], "query")[0])


def test_reading_unknown_videos_or_roles_names_them(tmp_path: Path, video_items: list[VideoItem], tiny_backend) -> None:
    config = ExtractionConfig(roles=("query", "support"))
    extract_features(video_items[:3], tmp_path / "c", tiny_backend, config, progress=False)
    cache = FeatureCache.open(tmp_path / "c")
    with pytest.raises(KeyError, match="video 'nope' is not in the feature cache"):
        cache.visual(["vid00", "nope"])
    with pytest.raises(ValueError, match=r"without a 'support' text feature \(no label\?\): \['vid02'\]"):
        cache.text(["vid00", "vid02"], role="support")
    with pytest.raises(ValueError, match="unknown role 'label'"):
        cache.text(["vid00"], role="label")
    assert "vid00" in cache
    assert "nope" not in cache
    assert len(cache) == 3


def _features(video_id: str, dim: int, scale: float = 1.0) -> VideoFeatures:
    g = torch.Generator().manual_seed(0)
    return VideoFeatures(
        video_id=video_id,
        visual=scale * torch.randn(8, dim, generator=g),
        text={"query": torch.randn(dim, generator=g), "support": torch.randn(dim, generator=g)},
        prompt_ids={"query": "p-0", "support": "p-1"},
        model_id="m",
        layers=(32,),
        visual_pooling="mean",
        text_pooling="last",
        sampling="uniform",
        frame_indices=tuple(range(8)),
        label="jump",
        n_source_frames=100,
    )


def test_a_cached_video_at_d4096_t8_with_two_texts_takes_under_100_kb_on_disk(tmp_path: Path) -> None:
    cache = FeatureCache.create(tmp_path, _recipe())
    writer = cache.writer("w", videos_per_shard=64)
    for k in range(64):
        writer.add(_features(f"v{k:03d}", 4096), f"/videos/v{k:03d}.mp4")
    writer.flush()
    size = sum(p.stat().st_size for p in tmp_path.rglob("*") if p.is_file())
    assert size / 64 < 100_000, f"{size / 64:.0f} bytes per video"
    assert FeatureCache.open(tmp_path).visual(["v000"]).dtype == torch.float16


def test_features_beyond_float16_range_are_refused_not_stored_as_inf(tmp_path: Path) -> None:
    writer = FeatureCache.create(tmp_path, _recipe(dim=16, visual_dim=16)).writer("w")
    writer.add(_features("big", 16, scale=1e6), "big.mp4")
    with pytest.raises(ValueError, match=r"overflow float16.*use storage_dtype='bfloat16'"):
        writer.flush()
