"""The feature cache: recipes, atomic commits, kill-and-resume, sharded filling, the read API, size;
integrity: damaged shards, ``verify`` and ``info --verify``, stray temporary files, full disks."""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import fsar_features._atomic as atomic_module
import fsar_features._cache as cache_module
from fsar_features import (
    ExtractionConfig,
    FeatureBackend,
    FeatureCache,
    FeatureRecipe,
    VideoFeatures,
    VideoItem,
    WriteError,
    extract_features,
    shard_of,
)
from fsar_features._cli import main


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


def _features(video_id: str, recipe: FeatureRecipe, scale: float = 1.0, *, seed: int = 0) -> VideoFeatures:
    g = torch.Generator().manual_seed(seed)
    return VideoFeatures(
        video_id=video_id,
        visual=scale * torch.randn(recipe.n_frames, recipe.visual_dim, generator=g),
        text={"query": torch.randn(recipe.dim, generator=g), "support": torch.randn(recipe.dim, generator=g)},
        prompt_ids={"query": "p-0", "support": "p-1"},
        recipe=recipe,
        frame_indices=tuple(range(recipe.n_frames)),
        label="jump",
        n_source_frames=100,
    )


def test_a_cached_video_at_d4096_t8_with_two_texts_takes_under_100_kb_on_disk(tmp_path: Path) -> None:
    cache = FeatureCache.create(tmp_path, _recipe())
    writer = cache.writer("w", videos_per_shard=64)
    for k in range(64):
        writer.add(_features(f"v{k:03d}", _recipe()), f"/videos/v{k:03d}.mp4")
    writer.flush()
    size = sum(p.stat().st_size for p in tmp_path.rglob("*") if p.is_file())
    assert size / 64 < 100_000, f"{size / 64:.0f} bytes per video"
    assert FeatureCache.open(tmp_path).visual(["v000"]).dtype == torch.float16


def test_features_beyond_float16_range_are_refused_not_stored_as_inf(tmp_path: Path) -> None:
    writer = FeatureCache.create(tmp_path, _recipe(dim=16)).writer("w")
    writer.add(_features("big", _recipe(dim=16), scale=1e6), "big.mp4")
    with pytest.raises(ValueError, match=r"overflow float16.*use storage_dtype='bfloat16'"):
        writer.flush()


def test_the_writer_refuses_features_of_another_recipe_naming_the_difference(tmp_path: Path) -> None:
    writer = FeatureCache.create(tmp_path, _recipe(dim=16)).writer("w")
    other = _recipe(dim=16, layers=(24,))
    with pytest.raises(
        ValueError, match=r"'v' was extracted with another recipe.*layers: \(32,\) \(cache\) vs \(24,\)"
    ):
        writer.add(_features("v", other), "v.mp4")
    assert list(writer.pending()) == []
    writer.add(_features("v", _recipe(dim=16)), "v.mp4")  # an equal recipe (another object) is the cache's
    assert list(writer.pending()) == ["v"]


def test_features_read_back_from_a_cache_carry_the_cache_recipe(tmp_path: Path) -> None:
    recipe = _recipe(dim=16, support_text_pooling="mean")
    writer = FeatureCache.create(tmp_path, recipe).writer("w")
    written = _features("v", recipe)
    writer.add(written, "v.mp4")
    writer.flush()
    read = FeatureCache.open(tmp_path).features("v")
    assert read.recipe == recipe == written.recipe
    assert read.text_poolings == {"query": "last", "support": "mean"}
    assert (read.frame_indices, read.label, read.n_source_frames) == (written.frame_indices, "jump", 100)
    torch.testing.assert_close(read.visual.float(), written.visual, rtol=1e-3, atol=1e-3)


# ----------------------------------------------------------------------------- integrity
DIM = 16


def _small_recipe() -> FeatureRecipe:
    return _recipe(dim=DIM, n_layers=2, layers=(2,), frame_size=32, crop_size=32)


def _small_features(video_id: str, seed: int) -> VideoFeatures:
    return _features(video_id, _small_recipe(), seed=seed)


def _build(root: Path, n_videos: int = 6, per_shard: int = 2) -> FeatureCache:
    """A cache of ``n_videos`` videos ``v000…`` in shards ``w-000000…`` of ``per_shard`` videos."""
    writer = FeatureCache.create(root, _small_recipe()).writer("w", videos_per_shard=per_shard)
    for k in range(n_videos):
        writer.add(_small_features(f"v{k:03d}", k), f"/videos/v{k:03d}.mp4")
    writer.flush()
    return FeatureCache.open(root)


def _shard(root: Path, seq: int) -> Path:
    return root / "shards" / f"w-{seq:06d}.safetensors"


def _truncate(path: Path, cut: int = 100) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:-cut])


def test_a_truncated_shard_is_reported_on_open_and_its_videos_are_not_cached(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reference = _build(tmp_path)
    kept = ["v000", "v001", "v004", "v005"]
    visual, text = reference.visual(kept), reference.text(kept, "support")
    redone = reference.visual(["v002"])
    _truncate(_shard(tmp_path, 1))  # v002, v003
    with caplog.at_level(logging.WARNING, logger="fsar_features._cache"):
        cache = FeatureCache.open(tmp_path)
    assert f"shard {_shard(tmp_path, 1)} is damaged" in caplog.text
    assert "truncated or torn" in caplog.text
    assert "v002" not in cache
    assert "v003" not in cache
    assert cache.video_ids == kept
    assert torch.equal(cache.visual(kept), visual)  # the other shards read bit for bit
    assert torch.equal(cache.text(kept, "support"), text)
    problems = cache.verify()
    assert [p.path for p in problems] == [_shard(tmp_path, 1)]
    assert "records" in problems[0].problem
    assert not problems[0].superseded

    # Extracting the videos again commits them above the damaged generation; then nothing is lost.
    assert cache.next_generation("v002") == 1
    writer = cache.writer("redo")
    for k in (2, 3):
        writer.add(
            _small_features(f"v{k:03d}", k), f"/videos/v{k:03d}.mp4", generation=cache.next_generation(f"v{k:03d}")
        )
    writer.flush()
    cache.refresh()
    assert cache.video_ids == [f"v{k:03d}" for k in range(6)]
    assert torch.equal(cache.visual(["v002"]), redone)
    assert [p.superseded for p in cache.verify()] == [True]
    removed = cache.clean()
    assert set(removed) == {_shard(tmp_path, 1), tmp_path / "manifest" / "w-000001.json"}
    assert cache.verify(full=True) == []
    assert len(FeatureCache.open(tmp_path)) == 6


def test_a_rerun_of_extraction_redoes_the_videos_of_a_truncated_shard(
    tmp_path: Path, video_items: list[VideoItem], tiny_backend: FeatureBackend
) -> None:
    items = video_items[:4]
    extract_features(items, tmp_path / "c", tiny_backend, progress=False, videos_per_shard=2)
    first = sorted((tmp_path / "c" / "shards").glob("*.safetensors"))[0]
    _truncate(first)
    summary = extract_features(items, tmp_path / "c", tiny_backend, progress=False, videos_per_shard=2)
    assert (summary.n_skipped, summary.n_extracted) == (2, 2)
    cache = FeatureCache.open(tmp_path / "c")
    assert cache.video_ids == [it.video_id for it in items]
    assert cache.duplicates == []
    assert cache.visual(cache.video_ids).shape[0] == 4


def test_a_flipped_byte_is_found_only_by_the_full_verify(tmp_path: Path) -> None:
    _build(tmp_path)
    path = _shard(tmp_path, 2)
    data = bytearray(path.read_bytes())
    data[len(data) - 200] ^= 0xFF  # inside the tensor data, same size
    path.write_bytes(bytes(data))
    cache = FeatureCache.open(tmp_path)
    assert cache.verify() == []
    assert "v004" in cache
    problems = cache.verify(full=True)
    assert [p.path for p in problems] == [path]
    assert "SHA-256" in problems[0].problem
    assert "v004" not in cache  # no longer served
    assert "v005" not in cache
    cache.refresh()
    assert "v004" not in cache  # the mismatch holds while the file is unchanged
    assert cache.next_generation("v004") == 1


def test_info_verify_exits_0_when_intact_and_1_with_one_line_per_damaged_shard(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _build(tmp_path)
    assert main(["info", str(tmp_path), "--verify"]) == 0
    out = capsys.readouterr().out
    assert "damaged shards: 0" in out
    assert "verify: all 3 shards intact (6 videos, sizes and SHA-256 checked)" in out

    _truncate(_shard(tmp_path, 0))
    data = bytearray(_shard(tmp_path, 2).read_bytes())
    data[-50] ^= 1
    _shard(tmp_path, 2).write_bytes(bytes(data))
    assert main(["info", str(tmp_path)]) == 0  # without --verify: the cheap check counts, status 0
    assert "damaged shards: 1" in capsys.readouterr().out
    assert main(["info", str(tmp_path), "--verify"]) == 1
    lines = capsys.readouterr().out.splitlines()
    damaged = [line for line in lines if line.startswith("damaged shard ")]
    assert damaged == [
        f"damaged shard {_shard(tmp_path, 0)}: {damaged[0].split(': ', 1)[1]}",
        f"damaged shard {_shard(tmp_path, 2)}: {damaged[1].split(': ', 1)[1]}",
    ]
    assert "truncated or torn" in damaged[0]
    assert "SHA-256" in damaged[1]
    assert lines[-1].startswith("verify: 2 of 3 shards damaged (2 with videos not cached elsewhere)")


def _strip_new_fields(root: Path) -> None:
    for path in (root / "manifest").glob("*.json"):
        fragment = json.loads(path.read_text())
        assert {"shard_bytes", "shard_sha256"} <= set(fragment)
        del fragment["shard_bytes"], fragment["shard_sha256"]
        path.write_text(json.dumps(fragment) + "\n")


def test_old_fragments_without_size_or_hash_open_and_verify_by_the_header(tmp_path: Path) -> None:
    reference = _build(tmp_path)
    _strip_new_fields(tmp_path)
    cache = FeatureCache.open(tmp_path)
    assert cache.video_ids == reference.video_ids
    assert torch.equal(cache.visual(cache.video_ids), reference.visual(reference.video_ids))
    assert cache.verify() == []
    assert cache.verify(full=True) == []
    _truncate(_shard(tmp_path, 0), cut=10)
    _shard(tmp_path, 1).write_bytes(b"\xff" * 64)  # a header length beyond the file
    (_shard(tmp_path, 2)).write_bytes(_shard(tmp_path, 2).read_bytes() + b"extra")
    problems = {p.path.name: p.problem for p in FeatureCache.open(tmp_path).verify()}
    assert set(problems) == {"w-000000.safetensors", "w-000001.safetensors", "w-000002.safetensors"}
    assert "its header says" in problems["w-000000.safetensors"]
    assert "its header claims" in problems["w-000001.safetensors"]
    assert "its header says" in problems["w-000002.safetensors"]
    assert len(FeatureCache.open(tmp_path)) == 0


@pytest.mark.parametrize(
    ("code", "words"), [(errno.ENOSPC, "no space left on the device"), (errno.EDQUOT, "the disk quota is exceeded")]
)
@pytest.mark.parametrize("target", [".safetensors.tmp-", ".json.tmp-"])
def test_a_full_disk_names_the_file_leaves_no_temp_file_and_keeps_committed_entries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, full_disk_open, code: int, words: str, target: str
) -> None:
    cache = _build(tmp_path, n_videos=2)
    writer = cache.writer("late", videos_per_shard=10)
    writer.add(_small_features("new", 9), "/videos/new.mp4")
    monkeypatch.setattr(atomic_module, "open", full_disk_open(code, target), raising=False)
    with pytest.raises(WriteError) as caught:
        writer.flush()
    monkeypatch.delattr(atomic_module, "open")
    error = caught.value
    written = tmp_path / ("shards/late-000000.safetensors" if "safetensors" in target else "manifest/late-000000.json")
    assert isinstance(error, OSError)
    assert error.errno == code
    assert error.filename == str(written)
    assert str(error).startswith(f"cannot write {written}: {words} (")
    assert "MiB free); free some space and run the same command again" in str(error)
    assert "\n" not in str(error)
    assert not list(tmp_path.rglob("*.tmp-*"))
    reopened = FeatureCache.open(tmp_path)
    assert reopened.video_ids == ["v000", "v001"]
    assert torch.equal(reopened.visual(["v000", "v001"]), cache.visual(["v000", "v001"]))
    writer.flush()  # space is back: the buffered video commits
    assert "new" in FeatureCache.open(tmp_path)


def test_extract_on_a_full_disk_exits_1_with_one_sentence_naming_the_file(
    make_video, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], full_disk_open
) -> None:
    folder = tmp_path / "videos"
    make_video(folder / "jumping" / "clip0.mp4", n_frames=12)
    monkeypatch.setattr(atomic_module, "open", full_disk_open(errno.ENOSPC, ".safetensors.tmp-"), raising=False)
    assert main(["extract", str(folder), str(tmp_path / "cache"), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"fsar-features: error: cannot write {tmp_path / 'cache'}/")
    assert "no space left on the device" in err[0]
    assert "run folder" not in err[0]


def _age(path: Path, seconds: float) -> Path:
    then = time.time() - seconds
    os.utime(path, (then, then))
    return path


def test_starting_a_writer_removes_stale_debris_and_keeps_a_live_writers_files(tmp_path: Path) -> None:
    cache = _build(tmp_path, n_videos=2)
    shards, manifest = tmp_path / "shards", tmp_path / "manifest"
    stale = [
        shards / ".dead-000003.safetensors.tmp-111",
        manifest / ".dead-000002.json.tmp-111",
        shards / "dead-000002.safetensors",  # committed shard of a writer killed before its fragment
        tmp_path / ".recipe.json.tmp-111",
    ]
    live = [shards / ".live-000000.safetensors.tmp-222", shards / "live-000000.safetensors"]
    for path in stale + live:
        path.write_bytes(b"\x00" * 64)
    for path in stale:
        _age(path, 2 * cache_module.STALE_AFTER_S)
    _age(live[0], cache_module.STALE_AFTER_S / 2)
    cache.writer("next")
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in live)
    assert FeatureCache.open(tmp_path).video_ids == ["v000", "v001"]
    cache.writer("keep", clean_older_than=None)  # cleaning off: everything stays
    assert all(p.exists() for p in live)
    assert set(cache.clean()) == set(live)  # clean() with no writer running takes it all
    assert FeatureCache.open(tmp_path).verify(full=True) == []


def test_new_fragments_record_the_shard_size_and_hash(tmp_path: Path) -> None:
    _build(tmp_path, n_videos=2)
    fragment = json.loads((tmp_path / "manifest" / "w-000000.json").read_text())
    data = _shard(tmp_path, 0).read_bytes()
    assert fragment["shard_bytes"] == len(data)
    assert fragment["shard_sha256"] == cache_module.hashlib.sha256(data).hexdigest()
    assert dataclasses.asdict(FeatureCache.open(tmp_path).recipe) == dataclasses.asdict(_small_recipe())
