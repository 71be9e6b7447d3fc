"""Command line: ``fsar-features extract VIDEO_DIR CACHE_DIR`` and ``fsar-features info CACHE_DIR``.

``extract`` walks ``VIDEO_DIR`` for video files (mp4, webm, avi, mkv, mov). A video's id is its path
relative to ``VIDEO_DIR`` without the extension; with ``--labels folder`` (the UCF101 / HMDB51
layout ``<class>/<video>``) its label is the name of its parent folder, otherwise it has none and
gets the query prompt only. The exit status is 0 when every video succeeded, 1 when any failed or
the disk filled (one sentence names the file), 2 for a usage error.

``info`` describes a cache and counts damaged shards (a size or header check); ``info --verify``
also re-hashes every shard, prints one line per damaged shard and a summary, and exits 1 when any
shard is damaged, 0 otherwise.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from fsar_features._atomic import WriteError
from fsar_features._cache import STORAGE_DTYPES, FeatureCache
from fsar_features._decode import list_text_poolings, list_visual_poolings
from fsar_features._extract import ROLES, ExtractionConfig, VideoItem, extract_features
from fsar_features._registry import list_backends
from fsar_features._sampling import list_samplers
from fsar_metric.errors import FsarError, InputError

__all__ = ["VIDEO_EXTENSIONS", "find_videos", "main"]

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".webm", ".avi", ".mkv", ".mov")
_TINY = ("tiny-video-llava", "tiny-llava-next-video")


def find_videos(root: str | Path, labels: str = "none") -> list[VideoItem]:
    """Video files under ``root`` as items, sorted by id.

    Args:
        root: a folder.
        labels: ``none`` (no labels) or ``folder`` (the parent folder's name is the label).

    Raises:
        ValueError: ``root`` is not a folder, or an unknown ``labels`` mode.
    """
    root = Path(root)
    if labels not in ("none", "folder"):
        raise InputError(f"unknown labels mode {labels!r}; valid: none, folder")
    if not root.is_dir():
        raise InputError(f"{str(root)!r} is not a folder of videos")
    named = sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS)
    # A folder named like a video, or a link to nothing: said, not skipped silently.
    odd = [p for p in named if not p.is_file()]
    if odd:
        shown = ", ".join(f"{p} ({'a folder' if p.is_dir() else 'a broken link'})" for p in odd[:5])
        more = f" and {len(odd) - 5} more" if len(odd) > 5 else ""
        log.warning("skipping %d path(s) named like videos that are not files: %s%s", len(odd), shown, more)
    items = []
    for path in (p for p in named if p.is_file()):
        rel = path.relative_to(root)
        label = rel.parent.name if labels == "folder" and rel.parent != Path(".") else None
        items.append(VideoItem(rel.with_suffix("").as_posix(), str(path), label))
    return items


def _layers(text: str) -> int | tuple[int, ...] | str:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        return text  # a preset name
    return values[0] if len(values) == 1 else values


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fsar-features", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("extract", help="extract features of a folder of videos into a cache")
    ex.add_argument("video_dir", type=Path)
    ex.add_argument("cache_dir", type=Path)
    ex.add_argument("--backend", default="tiny-video-llava", choices=list_backends())
    ex.add_argument("--model", help="checkpoint folder or hub id (video-llava, llava-next-video)")
    ex.add_argument("--device", help="e.g. cuda, cuda:1, cpu (default: CUDA when available)")
    ex.add_argument("--dtype", help="model dtype (default: bfloat16 on CUDA, float32 on CPU)")
    ex.add_argument("--labels", default="folder", choices=("folder", "none"))
    ex.add_argument("--roles", default=",".join(ROLES), help="comma-separated: query,support")
    ex.add_argument("--frames", type=int, default=8, help="T")
    ex.add_argument("--sampling", default="uniform", choices=list_samplers())
    ex.add_argument("--sampling-seed", type=int, default=None)
    ex.add_argument("--layers", default="-1", help="hidden-state index, comma list (averaged) or preset")
    ex.add_argument("--visual-pooling", default="mean", choices=list_visual_poolings())
    ex.add_argument("--text-pooling", default="last", choices=list_text_poolings(), help="every role's default")
    ex.add_argument("--support-text-pooling", default=None, choices=list_text_poolings(), help="e.g. label")
    ex.add_argument("--query-text-pooling", default=None, choices=list_text_poolings(), help="e.g. mean")
    ex.add_argument(
        "--temporal-centring", action="store_true", help="store visual features minus their mean over the T frames"
    )
    ex.add_argument("--scenario", default="generic", help="fsar-prompts scenario")
    ex.add_argument("--batch-size", type=int, default=4)
    ex.add_argument("--storage-dtype", default="float16", choices=list(STORAGE_DTYPES))
    ex.add_argument("--no-prefix-cache", action="store_true", help="run full sequences per prompt")
    ex.add_argument("--shard", default=None, help="i/n (default: torchrun's RANK/WORLD_SIZE, else 0/1)")
    ex.add_argument("--videos-per-shard", type=int, default=256)
    ex.add_argument("--decode-workers", type=int, default=2)
    ex.add_argument("--no-progress", action="store_true")
    info = sub.add_parser("info", help="describe a cache")
    info.add_argument("cache_dir", type=Path)
    info.add_argument(
        "--verify", action="store_true", help="re-hash every shard; exit 1 when any is damaged (truncated, changed)"
    )
    return parser


def _info(cache_dir: Path, verify: bool) -> int:
    """``info``: the recipe and counts; with ``verify``, every shard re-hashed (1 when any is damaged)."""
    cache = FeatureCache.open(cache_dir)
    problems = cache.verify(full=verify)
    print(cache)
    for key, value in cache.recipe.as_dict().items():
        print(f"  {key}: {value}")
    print(f"  failures: {len(cache.failures)}, duplicates: {len(cache.duplicates)}, damaged shards: {len(problems)}")
    if not verify:
        return 0
    for problem in problems:
        print(problem.describe())
    if problems:
        lost = sum(not p.superseded for p in problems)
        print(
            f"verify: {len(problems)} of {cache.n_shards} shards damaged ({lost} with videos not cached elsewhere); "
            "their videos are not cached and the next extraction run extracts them again"
        )
        return 1
    print(f"verify: all {cache.n_shards} shards intact ({len(cache)} videos, sizes and SHA-256 checked)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 some videos failed, a full disk or a damaged
    shard under ``info --verify``, 2 usage error)."""
    args = _parser().parse_args(argv)
    # Warnings (skipped videos) go to stderr as they happen; the summary is printed once at the end.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "info":
            return _info(args.cache_dir, args.verify)
        backend_kwargs = {}
        if args.backend in _TINY:
            if args.model or args.dtype:
                raise InputError(f"--model and --dtype do not apply to {args.backend}")
            if args.device:
                backend_kwargs["device"] = args.device
        else:
            backend_kwargs = {
                k: v for k, v in {"model": args.model, "device": args.device, "dtype": args.dtype}.items() if v
            }
        config = ExtractionConfig(
            n_frames=args.frames,
            sampling=args.sampling,
            sampling_seed=args.sampling_seed,
            layers=_layers(args.layers),
            visual_pooling=args.visual_pooling,
            text_pooling=args.text_pooling,
            support_text_pooling=args.support_text_pooling,
            query_text_pooling=args.query_text_pooling,
            temporal_centring=args.temporal_centring,
            scenario=args.scenario,
            roles=tuple(r.strip() for r in args.roles.split(",") if r.strip()),
            batch_size=args.batch_size,
            reuse_prefix_cache=not args.no_prefix_cache,
            storage_dtype=args.storage_dtype,
        )
        items = find_videos(args.video_dir, args.labels)
        summary = extract_features(
            items,
            args.cache_dir,
            args.backend,
            config,
            shard=args.shard,
            videos_per_shard=args.videos_per_shard,
            decode_workers=args.decode_workers,
            progress=not args.no_progress,
            backend_kwargs=backend_kwargs,
        )
    except WriteError as error:  # a full disk, a read-only folder: committed work is kept, a rerun resumes
        print(f"fsar-features: error: {error}", file=sys.stderr)
        return 1
    except FsarError as error:  # what fsar raises on purpose; anything else is a bug and keeps its traceback
        print(f"fsar-features: error: {error}", file=sys.stderr)
        return 2
    print(summary.describe())
    return summary.exit_code
