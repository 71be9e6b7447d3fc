"""Extraction: videos → MLLM forwards → pooled features → the cache.

Per batch of B videos (docs/features.md, "Design": causality and the prefix cache):

1. ``prefix + video`` runs once, ``[B, P]`` tokens with the pixel values (no padding: the prefix is
   the same for every role and video). The visual features come from this pass; its key/value cache
   is kept.
2. For each role (``query`` always, ``support`` for videos with a label) the tokens after the video,
   right-padded to ``[B, S_t]``, run on top of that cache; the text features come from these passes,
   pooled with that role's text pooling (``label``: the class-name tokens, found per label once).
   Rows without a label run the query suffix in the support pass and their output is dropped.
3. With ``temporal_centring`` the pooled visual features ``[T, D_v]`` of each video lose their mean
   over T before they are stored.

With ``reuse_prefix_cache=False`` each role runs the full sequence instead (right-padded), which is
the reference the cached path is tested against. Right padding keeps every real token's position and
attention unchanged in a causal decoder, so padded rows equal unbatched ones up to kernel noise.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.text import Text
from torch import Tensor

from fsar_features._cache import STORAGE_DTYPES, CacheFailure, FeatureCache
from fsar_features._decode import (
    LayerSpec,
    VideoFeatures,
    find_video_span,
    list_text_poolings,
    list_visual_poolings,
    pool_text,
    pool_visual,
    resolve_layers,
    select_layers,
    temporal_centre,
    text_pooling_needs_label,
)
from fsar_features._label_span import label_token_positions
from fsar_features._recipe import FeatureRecipe
from fsar_features._registry import FeatureBackend, create_backend
from fsar_features._sampling import list_samplers
from fsar_features._video import VideoClip, VideoReadError, read_frames
from fsar_metric.errors import InputError, as_input_error
from fsar_prompts import PromptError, RenderedPrompt, render_prompt

__all__ = [
    "ExtractionConfig",
    "ExtractionSummary",
    "FeatureExtractor",
    "VideoItem",
    "extract_features",
    "resolve_shard",
    "shard_of",
]

log = logging.getLogger(__name__)

ROLES = ("query", "support")


@dataclass(frozen=True)
class ExtractionConfig:
    """What to extract; everything here is recorded in the cache recipe.

    Attributes:
        n_frames: T, frames per video.
        sampling: frame sampling strategy (``uniform`` or ``segments``, ``list_samplers()``).
        sampling_seed: None for deterministic sampling (segment centres); an int draws per-video
            random offsets from a generator seeded by (seed, video id), reproducible anywhere.
        layers: hidden-state index (0 = embeddings, ℓ = decoder layer ℓ, -1 = last), several
            indices (averaged), or a preset (``last``, ``last-4``, ``three-quarters``).
        visual_pooling: per-frame pooling over the frame's video tokens: ``mean`` (all V tokens,
            ``[T, D_in]``), ``cls`` (the CLS token, ``[T, D_in]``) or ``grid1``/``grid2``/``grid4``
            (a g × g average pooling of the patch grid, CLS dropped, ``[T, g²·D_in]``).
        text_pooling: pooling over the tokens after the video, for every role without its own
            choice below: ``last`` (the last token) or ``mean`` (all of them); ``label`` (the
            class-name tokens) only when the query role has its own choice or is not run.
        support_text_pooling: the support role's text pooling (None: ``text_pooling``); ``label``
            averages the class-name tokens of the label-aware prompt.
        query_text_pooling: the query role's text pooling (None: ``text_pooling``); ``last`` or
            ``mean`` (a query prompt has no class name).
        temporal_centring: store ``v - v.mean(over T)`` as each video's visual features ``[T, D_v]``:
            removes what is constant over the clip (background, colour, static objects) and keeps
            how the frames differ; the absolute appearance is lost.
        scenario: fsar-prompts scenario (``generic``; ``fsar_prompts.scenario_for(benchmark)``).
        roles: prompt roles: ``query`` (label-free, every video) and ``support`` (label-aware, videos
            with a label).
        batch_size: videos per forward.
        reuse_prefix_cache: run prefix + video once and each prompt on its key/value cache (faster;
            equal to full forwards up to numerical noise).
        storage_dtype: cache dtype: ``float16`` (default), ``bfloat16`` or ``float32``.
    """

    n_frames: int = 8
    sampling: str = "uniform"
    sampling_seed: int | None = None
    layers: LayerSpec = -1
    visual_pooling: str = "mean"
    text_pooling: str = "last"
    scenario: str = "generic"
    roles: tuple[str, ...] = ROLES
    batch_size: int = 4
    reuse_prefix_cache: bool = True
    storage_dtype: str = "float16"
    support_text_pooling: str | None = None
    query_text_pooling: str | None = None
    temporal_centring: bool = False

    def __post_init__(self) -> None:
        checks = [
            (self.sampling in list_samplers(), f"unknown sampling {self.sampling!r}; valid: {list_samplers()}"),
            (
                self.visual_pooling in list_visual_poolings(),
                f"unknown visual pooling {self.visual_pooling!r}; valid: {list_visual_poolings()}",
            ),
            *(
                (
                    pooling in list_text_poolings(),
                    f"unknown text pooling {pooling!r} ({name}); valid: {list_text_poolings()}",
                )
                for name, pooling in (
                    ("text_pooling", self.text_pooling),
                    ("support_text_pooling", self.support_text_pooling or self.text_pooling),
                    ("query_text_pooling", self.query_text_pooling or self.text_pooling),
                )
            ),
            (
                bool(self.roles) and all(r in ROLES for r in self.roles) and len(set(self.roles)) == len(self.roles),
                f"roles must be distinct names from {list(ROLES)}, got {self.roles!r}",
            ),
            (self.n_frames >= 1, f"n_frames must be at least 1, got {self.n_frames}"),
            (self.batch_size >= 1, f"batch_size must be at least 1, got {self.batch_size}"),
            (
                self.storage_dtype in STORAGE_DTYPES,
                f"unknown storage dtype {self.storage_dtype!r}; valid: {list(STORAGE_DTYPES)}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(message)
        if "query" in self.roles and text_pooling_needs_label(self.text_pooling_for("query")):
            raise InputError(
                f"the query role's text pooling is {self.text_pooling_for('query')!r}, which averages class-name "
                f"tokens, and a query prompt never carries a class name; set query_text_pooling='mean' (or 'last')"
            )

    def text_pooling_for(self, role: str) -> str:
        """The text pooling of ``role`` (``query`` or ``support``): its own choice, else ``text_pooling``.

        Raises:
            ValueError: an unknown role.
        """
        if role not in ROLES:
            raise InputError(f"unknown role {role!r}; valid: {list(ROLES)}")
        own = {"query": self.query_text_pooling, "support": self.support_text_pooling}[role]
        return own if own is not None else self.text_pooling


class VideoItem(NamedTuple):
    """One video to extract: its id, file and label (None: query role only)."""

    video_id: str
    path: str | os.PathLike[str]
    label: str | None = None


@dataclass(frozen=True)
class ExtractionSummary:
    """The outcome of one ``extract_features`` run.

    Attributes:
        cache_dir: the cache.
        shard: ``(i, n)`` this process handled.
        n_items: items given (all shards).
        n_assigned: items of this shard.
        n_skipped: of those, already in the cache with the label and prompts asked for (a resumed run).
        n_refreshed: of those extracted, videos that were cached under another label or prompt id and
            were extracted again (the cache serves the new features from now on).
        n_extracted: videos extracted and committed by this run.
        failures: videos that failed, with the reason.
        seconds: wall time.
    """

    cache_dir: str
    shard: tuple[int, int]
    n_items: int
    n_assigned: int
    n_skipped: int
    n_extracted: int
    failures: tuple[CacheFailure, ...] = field(default=())
    n_refreshed: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when no video failed."""
        return not self.failures

    @property
    def exit_code(self) -> int:
        """0 when every video succeeded, 1 when any failed (the CLI's exit status)."""
        return 0 if self.ok else 1

    def describe(self) -> str:
        """A few human-readable lines: counts, rate and each failure with its reason."""
        i, n = self.shard
        rate = self.n_extracted / self.seconds if self.seconds > 0 else 0.0
        lines = [
            f"shard {i}/{n}: {self.n_assigned} of {self.n_items} videos; {self.n_skipped} already cached, "
            f"{self.n_extracted} extracted ({rate:.2f} videos/s), {len(self.failures)} failed → {self.cache_dir}"
        ]
        if self.n_refreshed:
            lines.append(
                f"  {self.n_refreshed} cached videos were extracted again: their label or label-aware prompt changed"
            )
        lines += [f"  FAILED {f.video_id} ({f.path}): {f.reason}" for f in self.failures]
        return "\n".join(lines)


def shard_of(video_id: str, n_shards: int) -> int:
    """The shard (in ``[0, n_shards)``) that owns ``video_id``: a stable hash, the same on every machine.

    Example:
        >>> shard_of("v_ApplyEyeMakeup_g01_c01", 4)
        2
    """
    digest = hashlib.blake2b(video_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % n_shards


def resolve_shard(shard: tuple[int, int] | str | None = None) -> tuple[int, int]:
    """``(i, n)`` from an argument (``(i, n)`` or ``"i/n"``), else torchrun's ``RANK``/``WORLD_SIZE``, else ``(0, 1)``.

    Raises:
        ValueError: a malformed shard or ``i`` outside ``[0, n)``.

    Example:
        >>> resolve_shard("2/8")
        (2, 8)
    """
    if shard is None:
        if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
            shard = (int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]))
        else:
            return 0, 1
    if isinstance(shard, str):
        try:
            i_text, n_text = shard.split("/")
            shard = (int(i_text), int(n_text))
        except ValueError:
            raise InputError(f"shard must look like 'i/n' (e.g. '0/4'), got {shard!r}") from None
    i, n = shard
    if n < 1 or not 0 <= i < n:
        raise InputError(f"shard ({i}, {n}) is invalid: need n ≥ 1 and 0 ≤ i < n")
    return int(i), int(n)


def _generator_for(seed: int | None, video_id: str) -> np.random.Generator | None:
    if seed is None:
        return None
    digest = hashlib.blake2b(video_id.encode("utf-8"), digest_size=8).digest()
    return np.random.default_rng([seed, int.from_bytes(digest, "big")])


def _right_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """``[B, S_max]`` ids and the 0/1 mask of real tokens."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for b, row in enumerate(rows):
        ids[b, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[b, : len(row)] = 1
    return ids, mask


def _rewind(cache: Any, length: int) -> None:
    """Drop the tokens a continuation appended to a transformers cache, back to ``length``."""
    extra = cache.get_seq_length() - length
    if extra > 0:
        cache.crop(-extra)  # transformers ≥ 5: a negative value removes that many tokens
    if cache.get_seq_length() != length:
        raise RuntimeError(f"could not rewind the key/value cache to {length} tokens")


class FeatureExtractor:
    """Turns decoded clips into ``VideoFeatures`` with one backend and one config.

    Args:
        backend: a backend object or registered name (``list_backends()``).
        config: what to extract.

    Attributes:
        visual_dim: D_v, the width of the visual features (``hidden_size`` for ``mean``/``cls``,
            g²·``hidden_size`` for ``grid{g}``); text features are ``hidden_size`` wide.
        recipe: the ``FeatureRecipe`` of everything this extractor makes: its cache's, and the one
            every ``VideoFeatures`` it returns carries.

    Raises:
        ValueError: a config the backend cannot honour (e.g. ``cls`` pooling without a CLS token, a
            grid that does not divide the backend's patch grid, layers outside the decoder).

    Example:
        >>> extractor = FeatureExtractor("tiny-video-llava")
        >>> clip = read_frames(path, size=32)  # doctest: +SKIP
        >>> features = extractor.extract_clips([clip], ["v1"], ["ApplyEyeMakeup"])[0]  # doctest: +SKIP
        >>> features.visual.shape, sorted(features.text)  # doctest: +SKIP
        (torch.Size([8, 64]), ['query', 'support'])
    """

    def __init__(self, backend: str | FeatureBackend = "tiny-video-llava", config: ExtractionConfig | None = None):
        self.backend = create_backend(backend)
        self.config = config or ExtractionConfig()
        self.layers = resolve_layers(self.config.layers, self.backend.n_layers)
        if self.config.visual_pooling == "cls" and not self.backend.has_cls:
            raise InputError(
                f"visual pooling 'cls' needs a CLS token per frame, and backend {self.backend.name!r} has none; "
                f"use 'mean'"
            )
        with as_input_error(PromptError):  # an unknown scenario or chat family: the user's value
            self.query_prompt = render_prompt(self.backend.family, "query", self.config.scenario)
        self._n_video = self.config.n_frames * self.backend.tokens_per_frame
        query_ids = self.backend.tokenize(self.query_prompt, self.config.n_frames)
        _, self._prefix_len = find_video_span(query_ids, self.backend.video_token_id, self._n_video)
        self._prefix_ids = query_ids[: self._prefix_len]  # text before the video + the video tokens
        # D_v from a dry run of the pooling on zeros ([T·V, D_in] -> [T, D_v]); a grid that does not fit
        # the backend's patch grid fails here, before any video is read.
        probe = torch.zeros(self._n_video, self.backend.hidden_size)
        self.visual_dim = int(self._pool_visual(probe).shape[-1])
        self._label_positions: dict[str, tuple[int, ...]] = {}  # prompt id → class-name token positions
        if "support" in self.config.roles and text_pooling_needs_label(self.config.text_pooling_for("support")):
            # A tokenizer without character offsets fails here, not halfway through a dataset.
            probe_prompt = render_prompt(self.backend.family, "support", self.config.scenario, label="probe")
            label_token_positions(self.backend, probe_prompt, self.config.n_frames)
        self.recipe = self._make_recipe()

    def _make_recipe(self) -> FeatureRecipe:
        """The recipe of this extractor: its cache's, and the one every ``VideoFeatures`` it makes carries."""
        prompts = {}
        if "query" in self.config.roles:
            prompts["query"] = self.query_prompt.id
        if "support" in self.config.roles:
            probe = render_prompt(self.backend.family, "support", self.config.scenario, label="x")
            prompts["support"] = f"{probe.template_id}@{probe.version}"
        return FeatureRecipe(
            backend=self.backend.name,
            model_id=self.backend.model_id,
            family=self.backend.family,
            dim=self.backend.hidden_size,
            visual_dim_override=self.visual_dim,  # stored only where the pooling's width rule differs
            n_layers=self.backend.n_layers,
            layers=self.layers,
            visual_pooling=self.config.visual_pooling,
            text_pooling=self.config.text_pooling,
            support_text_pooling=self.config.text_pooling_for("support") if "support" in self.config.roles else None,
            query_text_pooling=self.config.text_pooling_for("query") if "query" in self.config.roles else None,
            temporal_centring=self.config.temporal_centring,
            n_frames=self.config.n_frames,
            sampling=self.config.sampling,
            sampling_seed=self.config.sampling_seed,
            frame_size=self.backend.frame_size,
            crop_size=self.backend.crop_size,
            scenario=self.config.scenario,
            roles=tuple(self.config.roles),
            prompts=prompts,
            storage_dtype=self.config.storage_dtype,
            reuse_prefix_cache=self.config.reuse_prefix_cache,
        )

    def read(self, path: str | os.PathLike[str], video_id: str) -> VideoClip:
        """Decode a video the way this extractor samples it (resized and cropped for the backend)."""
        return read_frames(
            path,
            self.config.n_frames,
            self.config.sampling,
            generator=_generator_for(self.config.sampling_seed, video_id),
            size=self.backend.frame_size,
            crop=self.backend.crop_size,
        )

    def _pool_visual(self, video_states: Tensor) -> Tensor:
        """``[T·V, D_in]`` -> ``[T, D_v]``: the configured pooling, then temporal centring when asked."""
        visual = pool_visual(
            video_states, self.config.n_frames, self.config.visual_pooling, has_cls=self.backend.has_cls
        )  # [T, D_v]
        return temporal_centre(visual) if self.config.temporal_centring else visual

    def _pool_text(self, role: str, text_states: Tensor, prompt: RenderedPrompt | None) -> Tensor | None:
        """``[S_t, D_in]`` -> ``[D_in]`` with ``role``'s pooling; None for a row without this role's prompt."""
        if prompt is None:
            return None  # a label-free row in the support pass: its output is dropped
        pooling = self.config.text_pooling_for(role)
        positions = None
        if text_pooling_needs_label(pooling):
            if prompt.id not in self._label_positions:
                self._label_positions[prompt.id] = label_token_positions(self.backend, prompt, self.config.n_frames)
            positions = self._label_positions[prompt.id]
        return pool_text(text_states, pooling, label_positions=positions)

    def _suffix(self, prompt: RenderedPrompt) -> list[int]:
        ids = self.backend.tokenize(prompt, self.config.n_frames)
        if ids[: self._prefix_len] != self._prefix_ids:
            # Visual features are shared across prompts only when the text before the video is.
            raise InputError(
                f"prompt {prompt.id} ({prompt.role}) does not share the text before the video with the query "
                f"prompt, so its visual features would differ; keep role wording after the video"
            )
        return ids[self._prefix_len :]

    def prompt_ids(self, label: str | None) -> dict[str, str]:
        """Role → id of the prompt this extractor runs for a video with ``label`` (None: query role only).

        A cached entry made with other ids (another label, template version or scenario) is stale.
        """
        return {role: row[0].id for role, row in self._prompts([label]).items() if row[0] is not None}

    def _prompts(self, labels: Sequence[str | None]) -> dict[str, list[RenderedPrompt | None]]:
        out: dict[str, list[RenderedPrompt | None]] = {}
        if "query" in self.config.roles:
            out["query"] = [self.query_prompt] * len(labels)
        if "support" in self.config.roles and any(label is not None for label in labels):
            with as_input_error(PromptError, context="a class label the support prompt cannot take: "):
                out["support"] = [
                    None
                    if label is None
                    else render_prompt(self.backend.family, "support", self.config.scenario, label=label)
                    for label in labels
                ]
        return out

    @torch.inference_mode()
    def extract_clips(
        self, clips: Sequence[VideoClip], video_ids: Sequence[str], labels: Sequence[str | None] | None = None
    ) -> list[VideoFeatures]:
        """Features of B decoded clips in one batch.

        Args:
            clips: B clips of T frames each (``read`` or ``read_frames``).
            video_ids: B ids.
            labels: B labels or None (label-free videos get the query role only).

        Returns:
            B ``VideoFeatures`` (float32, on the CPU): visual ``[T, D_v]``, text ``[D_in]`` per role.

        Raises:
            ValueError: lengths differ, or a clip with other than T frames.
        """
        labels = list(labels) if labels is not None else [None] * len(clips)
        if not len(clips) == len(video_ids) == len(labels) or not clips:
            raise InputError(f"need B ≥ 1 clips, ids and labels, got {len(clips)}, {len(video_ids)}, {len(labels)}")
        for vid, clip in zip(video_ids, clips, strict=True):
            if clip.frames.shape[0] != self.config.n_frames:
                raise InputError(
                    f"clip {vid!r} has {clip.frames.shape[0]} frames, the config says T = {self.config.n_frames}"
                )
        frames = np.stack([np.asarray(c.frames) for c in clips])  # [B, T, H, W, 3]
        pixels = self.backend.pixel_values(frames)  # [B, T, 3, S, S]
        prompts = self._prompts(labels)
        # Rows without a support prompt reuse the query suffix; their outputs are dropped.
        suffixes = {
            role: [self._suffix(p if p is not None else self.query_prompt) for p in row]
            for role, row in prompts.items()
        }
        n = len(clips)
        start, end = self._prefix_len - self._n_video, self._prefix_len
        texts: dict[str, list[Tensor | None]] = {}

        if self.config.reuse_prefix_cache:
            prefix = torch.tensor([self._prefix_ids] * n, dtype=torch.long)  # [B, P]
            out = self.backend.forward(prefix, torch.ones_like(prefix), pixels, use_cache=True)
            hidden = select_layers(out.hidden_states, self.layers)  # [B, P, D]
            visual = [self._pool_visual(hidden[b, start:end]) for b in range(n)]  # B × [T, D_v]
            cache = out.cache
            for role, rows in suffixes.items():
                ids, mask = _right_pad(rows, self.backend.pad_token_id)  # [B, S_t]
                full_mask = torch.cat([torch.ones(n, self._prefix_len, dtype=torch.long), mask], dim=1)
                step = self.backend.forward(ids, full_mask, cache=cache, use_cache=True)
                hidden_t = select_layers(step.hidden_states, self.layers)  # [B, S_t, D]
                texts[role] = [self._pool_text(role, hidden_t[b, : len(rows[b])], prompts[role][b]) for b in range(n)]
                _rewind(cache, self._prefix_len)
        else:
            visual = []
            for role, rows in suffixes.items():
                ids, mask = _right_pad([self._prefix_ids + r for r in rows], self.backend.pad_token_id)  # [B, S]
                step = self.backend.forward(ids, mask, pixels)
                hidden = select_layers(step.hidden_states, self.layers)  # [B, S, D]
                if not visual:
                    visual = [self._pool_visual(hidden[b, start:end]) for b in range(n)]  # B × [T, D_v]
                texts[role] = [
                    self._pool_text(role, hidden[b, end : end + len(rows[b])], prompts[role][b]) for b in range(n)
                ]
            if not visual:  # no role at all cannot happen (config checks), kept for clarity
                raise InputError("no prompt role to run")

        results = []
        for b in range(n):
            roles = [r for r in prompts if prompts[r][b] is not None]
            text = {r: texts[r][b] for r in roles}
            results.append(
                VideoFeatures(
                    video_id=video_ids[b],
                    visual=visual[b].cpu(),
                    text={r: t.cpu() for r, t in text.items() if t is not None},
                    prompt_ids={r: prompts[r][b].id for r in roles},
                    recipe=self.recipe,
                    frame_indices=clips[b].indices,
                    label=labels[b],
                    n_source_frames=clips[b].n_source_frames,
                )
            )
        return results

    def extract(
        self, path: str | os.PathLike[str], label: str | None = None, video_id: str | None = None
    ) -> VideoFeatures:
        """Features of one video file (decode + one forward per role).

        Raises:
            VideoReadError: the video cannot be read.
        """
        video_id = video_id or Path(path).stem
        return self.extract_clips([self.read(path, video_id)], [video_id], [label])[0]


class _RateColumn(ProgressColumn):
    """Videos per second."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-- videos/s" if speed is None else f"{speed:.2f} videos/s", style="progress.data.speed")


def _as_items(items: Iterable[VideoItem | tuple]) -> list[VideoItem]:
    out = [it if isinstance(it, VideoItem) else VideoItem(*it) for it in items]
    seen: set[str] = set()
    dups = sorted({it.video_id for it in out if it.video_id in seen or seen.add(it.video_id)})
    if dups:
        raise InputError(f"video ids must be unique; repeated: {dups[:10]}")
    return out


def _read_ahead(
    extractor: FeatureExtractor, items: Sequence[VideoItem], workers: int
) -> Iterator[tuple[VideoItem, VideoClip | VideoReadError]]:
    """Decode videos on worker threads, yielded in input order, a bounded number ahead."""

    def read(item: VideoItem) -> VideoClip | VideoReadError:
        try:
            return extractor.read(item.path, item.video_id)
        except VideoReadError as error:
            return error

    if workers <= 0:
        for item in items:
            yield item, read(item)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fsar-decode") as pool:
        window: list[tuple[VideoItem, Future]] = []
        ahead = 4 * workers + extractor.config.batch_size
        it = iter(items)
        for item in it:
            window.append((item, pool.submit(read, item)))
            if len(window) >= ahead:
                head, future = window.pop(0)
                yield head, future.result()
        for head, future in window:
            yield head, future.result()


def extract_features(
    items: Iterable[VideoItem | tuple[str, str | os.PathLike[str], str | None]],
    cache_dir: str | os.PathLike[str],
    backend: str | FeatureBackend = "tiny-video-llava",
    config: ExtractionConfig | None = None,
    *,
    shard: tuple[int, int] | str | None = None,
    videos_per_shard: int = 256,
    decode_workers: int = 2,
    progress: bool = True,
    backend_kwargs: dict[str, Any] | None = None,
) -> ExtractionSummary:
    """Extract the features of many videos into a cache; resumable, shardable, failure-tolerant.

    Every video gets the label-free ``query`` prompt; videos with a label also get the label-aware
    ``support`` prompt of their class (``config.roles`` selects). Videos already in the cache are
    skipped, so rerunning after a crash or kill completes the cache. A cached video is reused only if
    it was made for the same label and prompt ids (the recipe is the cache's own); otherwise it is
    extracted again and replaces the old entry (``ExtractionSummary.n_refreshed`` counts them).
    Deciding what to skip needs only the recipe and the prompt ids, not the model: when nothing is
    left to extract the backend never runs, so ``video-llava`` / ``llava-next-video`` (which load
    their weights on first use) never load them.

    Args:
        items: ``VideoItem`` or ``(video_id, path, label)`` tuples (label None: query role only).
        cache_dir: the cache folder (created; an existing cache must have the same recipe).
        backend: registered name (``tiny-video-llava`` by default) or a backend object.
        config: what to extract.
        shard: ``(i, n)`` or ``"i/n"``: this process takes the videos with ``shard_of(id, n) == i``.
            Default: torchrun's ``RANK``/``WORLD_SIZE`` when set, else everything.
        videos_per_shard: videos per committed shard file.
        decode_workers: threads decoding videos ahead of the model (0: decode inline).
        progress: show a progress bar with rate and ETA (rich, on stderr).
        backend_kwargs: arguments for ``create_backend`` when ``backend`` is a name.

    Returns:
        Counts, failures (with reasons) and ``exit_code`` (1 when anything failed).

    Raises:
        ValueError: repeated video ids, a bad shard, or a cache with another recipe.
        WriteError: the file system refused a write while committing (a full disk: an ``OSError``
            naming the file and the free space); what was committed before stays, and a rerun resumes.

    Example:
        >>> summary = extract_features([("v1", "v1.mp4", "jump")], "cache/", progress=False)  # doctest: +SKIP
        >>> summary.ok, FeatureCache.open("cache/").visual(["v1"]).shape  # doctest: +SKIP
        (True, torch.Size([1, 8, 64]))
    """
    started = time.perf_counter()
    all_items = _as_items(items)
    i, n = resolve_shard(shard)
    if isinstance(backend, str):
        backend = create_backend(backend, **(backend_kwargs or {}))
    elif backend_kwargs:
        raise InputError("backend_kwargs only apply when backend is a registered name")
    extractor = FeatureExtractor(backend, config)
    cache = FeatureCache.create(cache_dir, extractor.recipe)
    assigned = [it for it in all_items if shard_of(it.video_id, n) == i]
    generations: dict[str, int] = {}  # video id → generation of the replacing entry
    for it in assigned:
        if it.video_id in cache:
            entry = cache.entry(it.video_id)
            wanted = extractor.prompt_ids(it.label)
            if (it.label is None or entry.label == it.label) and all(
                entry.prompt_ids.get(role) == pid for role, pid in wanted.items()
            ):
                continue
            generations[it.video_id] = cache.next_generation(it.video_id)
    todo = [it for it in assigned if it.video_id not in cache or it.video_id in generations]
    if generations:
        log.warning(
            "%d cached videos were made for another label or prompt (e.g. %s) and are extracted again",
            len(generations),
            ", ".join(sorted(generations)[:3]),
        )
    writer = cache.writer(f"r{i:05d}of{n:05d}-{time.time_ns():x}-{os.getpid()}", videos_per_shard)
    failures: list[CacheFailure] = []
    batch: list[tuple[VideoItem, VideoClip]] = []
    columns = (
        TextColumn("[bold]features[/] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )

    def run_batch() -> None:
        feats = extractor.extract_clips(
            [clip for _, clip in batch], [it.video_id for it, _ in batch], [it.label for it, _ in batch]
        )
        for (item, _), feat in zip(batch, feats, strict=True):
            # A video of a damaged shard is not cached; its new commit goes above the damaged one.
            generation = generations.get(item.video_id, cache.next_generation(item.video_id))
            writer.add(feat, item.path, generation=generation)
        bar.advance(task, len(batch))
        batch.clear()

    with Progress(*columns, disable=not progress, transient=False) as bar:
        task = bar.add_task(f"shard {i}/{n}", total=len(todo))
        try:
            for item, result in _read_ahead(extractor, todo, decode_workers):
                if isinstance(result, VideoReadError):
                    log.warning("skipping %s: %s", item.video_id, result.reason)
                    failure = CacheFailure(item.video_id, str(item.path), result.reason)
                    failures.append(failure)
                    writer.add_failure(failure.video_id, failure.path, failure.reason)
                    bar.advance(task)
                    continue
                batch.append((item, result))
                if len(batch) >= extractor.config.batch_size:
                    run_batch()
            if batch:
                run_batch()
        finally:
            # Commit what is complete, also when interrupted: a rerun then skips it.
            writer.flush()
    summary = ExtractionSummary(
        cache_dir=str(cache_dir),
        shard=(i, n),
        n_items=len(all_items),
        n_assigned=len(assigned),
        n_skipped=len(assigned) - len(todo),
        n_extracted=writer.committed,
        failures=tuple(failures),
        n_refreshed=len(set(generations) - {f.video_id for f in failures}),
        seconds=time.perf_counter() - started,
    )
    log.info("%s", summary.describe())
    return summary
