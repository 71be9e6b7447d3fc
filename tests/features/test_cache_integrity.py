"""Cache integrity: damaged shards, ``verify`` and ``info --verify``, stray temporary files, full disks."""

from __future__ import annotations

import builtins
import dataclasses
import errno
import json
import logging
import os
import time
from pathlib import Path

import pytest
import torch

import fsar_features._cache as cache_module
from fsar_features import (
    CacheDiskFullError,
    FeatureBackend,
    FeatureCache,
    FeatureRecipe,
    VideoFeatures,
    VideoItem,
    extract_features,
)
from fsar_features._cli import main

DIM = 16


def _recipe() -> FeatureRecipe:
    return FeatureRecipe(
        backend="tiny-video-llava",
        model_id="m",
        family="video-llava",
        dim=DIM,
        n_layers=2,
        layers=(2,),
        visual_pooling="mean",
        text_pooling="last",
        n_frames=8,
        sampling="uniform",
        sampling_seed=None,
        frame_size=32,
        crop_size=32,
        scenario="generic",
        roles=("query", "support"),
        prompts={"query": "p-0", "support": "support-generic@1"},
    )


def _features(video_id: str, seed: int) -> VideoFeatures:
    g = torch.Generator().manual_seed(seed)
    return VideoFeatures(
        video_id=video_id,
        visual=torch.randn(8, DIM, generator=g),
        text={"query": torch.randn(DIM, generator=g), "support": torch.randn(DIM, generator=g)},
        prompt_ids={"query": "p-0", "support": "p-1"},
        model_id="m",
        layers=(2,),
        visual_pooling="mean",
        text_pooling="last",
        sampling="uniform",
        frame_indices=tuple(range(8)),
        label="jump",
        n_source_frames=100,
    )


def _build(root: Path, n_videos: int = 6, per_shard: int = 2) -> FeatureCache:
    """A cache of ``n_videos`` videos ``v000…`` in shards ``w-000000…`` of ``per_shard`` videos."""
    writer = FeatureCache.create(root, _recipe()).writer("w", videos_per_shard=per_shard)
    for k in range(n_videos):
        writer.add(_features(f"v{k:03d}", k), f"/videos/v{k:03d}.mp4")
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
        writer.add(_features(f"v{k:03d}", k), f"/videos/v{k:03d}.mp4", generation=cache.next_generation(f"v{k:03d}"))
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


def _full_disk_open(code: int, target: str):
    """``open`` that lets writing a file whose temp name contains ``target`` fail half-way with ``code``."""

    class _Half:
        def __init__(self, f) -> None:
            self._f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self._f.close()

        def write(self, data: bytes) -> int:
            self._f.write(data[: len(data) // 2])
            raise OSError(code, os.strerror(code))

        def __getattr__(self, name: str):
            return getattr(self._f, name)

    def fake_open(file, mode="r", *args, **kwargs):
        f = builtins.open(file, mode, *args, **kwargs)  # noqa: SIM115 - closed by the caller's with
        return _Half(f) if target in str(file) and "w" in mode else f

    return fake_open


@pytest.mark.parametrize(
    ("code", "words"), [(errno.ENOSPC, "no space left on device"), (errno.EDQUOT, "disk quota exceeded")]
)
@pytest.mark.parametrize("target", [".safetensors.tmp-", ".json.tmp-"])
def test_a_full_disk_names_the_file_leaves_no_temp_file_and_keeps_committed_entries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, words: str, target: str
) -> None:
    cache = _build(tmp_path, n_videos=2)
    writer = cache.writer("late", videos_per_shard=10)
    writer.add(_features("new", 9), "/videos/new.mp4")
    monkeypatch.setattr(cache_module, "open", _full_disk_open(code, target), raising=False)
    with pytest.raises(CacheDiskFullError) as caught:
        writer.flush()
    monkeypatch.delattr(cache_module, "open")
    error = caught.value
    written = tmp_path / ("shards/late-000000.safetensors" if "safetensors" in target else "manifest/late-000000.json")
    assert isinstance(error, OSError)
    assert error.errno == code
    assert error.filename == str(written)
    assert str(error).startswith(f"{words} while writing {written} (")
    assert "MiB free there now" in str(error)
    assert "\n" not in str(error)
    assert not list(tmp_path.rglob("*.tmp-*"))
    reopened = FeatureCache.open(tmp_path)
    assert reopened.video_ids == ["v000", "v001"]
    assert torch.equal(reopened.visual(["v000", "v001"]), cache.visual(["v000", "v001"]))
    writer.flush()  # space is back: the buffered video commits
    assert "new" in FeatureCache.open(tmp_path)


def test_extract_on_a_full_disk_exits_1_with_one_sentence_naming_the_file(
    make_video, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "videos"
    make_video(folder / "jumping" / "clip0.mp4", n_frames=12)
    monkeypatch.setattr(cache_module, "open", _full_disk_open(errno.ENOSPC, ".safetensors.tmp-"), raising=False)
    assert main(["extract", str(folder), str(tmp_path / "cache"), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"fsar-features: error: no space left on device while writing {tmp_path / 'cache'}/")
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
    assert dataclasses.asdict(FeatureCache.open(tmp_path).recipe) == dataclasses.asdict(_recipe())
