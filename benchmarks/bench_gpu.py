"""GPU check: the full-width Video-LLaVA-7B through fsar-features' extractor, and the FSAR-LLaVA head's training rate.

1. **Model.** ``VideoLlavaForConditionalGeneration`` built from a config with the shapes of
   ``LanguageBind/Video-LLaVA-7B-hf`` (its ``config.json``): two CLIP ViT-L/14 towers at 224 px
   (width 1024, 24 layers, 16 heads, FFN 4096, patch 14, the projector reading layer -2) and a
   Llama-2-7B / Vicuna-7B decoder (width 4096, 32 layers, 32 heads, FFN 11008, RMSNorm ε 1e-5,
   4,096 positions, vocabulary 32,064; image and video tokens 32000 and 32001). The weights are
   seeded random (no checkpoint, no download) and created directly in bf16 on the GPU (default
   dtype bf16 under ``torch.device("cuda")``): the 7 B parameters never exist in fp32 or on the CPU.
   The tokenizer is ``build_word_tokenizer`` over the prompts' words, so the text around the video is
   about as many tokens as Llama's BPE makes of it (T·V = 8 × 257 = 2,056 video tokens dominate S).
2. **Extraction.** ``FeatureExtractor.extract_clips`` on synthetic decoded clips (uint8, T = 8
   frames of 224 × 224, already at the crop size, so no resizing), every video with a label (query
   and support prompts, as ``--labels folder`` extraction does), with and without the shared-prefix
   key/value reuse (``ExtractionConfig.reuse_prefix_cache``), for batch sizes 1, 2, 4, 8, 16: videos/s
   over ``--timed-batches`` batches after one warm-up batch, and the peak GPU memory
   (``torch.cuda.max_memory_allocated``, weights included). An out-of-memory batch is caught and
   ends that mode's sweep; the largest batch that ran is reported.
3. **Head training.** ``fsar_train.train`` with ``fsar_llava`` (D_in = 4096, D = 1024) on an in-memory
   pool of 64 classes × 20 videos (T = 8, fp16 visual, query and support text) on the GPU: 5-way
   1-shot, 5 queries per class, B = 16 episodes per step, AdamW; episodes/s between the first and
   the last optimiser step (as ``bench_train.py``), with autocast off and bf16.

Run: ``uv run python benchmarks/bench_gpu.py`` (needs CUDA; ``--json PATH``, ``--batch-sizes``,
``--timed-batches``, ``--steps``). ``--tiny`` runs the same code on the CPU at a tiny width (decoder
64 × 2, tower 32 × 2 at 32 px, head D_in 64), in about 20 s: ``tests/e2e/test_bench_gpu.py`` runs it.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table


@dataclass(frozen=True)
class Setting:
    """The sizes one run uses: the real ones on the GPU, tiny ones on the CPU (``--tiny``)."""

    name: str
    device: str
    dtype: torch.dtype
    text: dict[str, Any]  # LlamaConfig fields
    vision: dict[str, Any]  # CLIPVisionConfig fields
    head_dim: int  # D of the FSAR-LLaVA head (D_in is the decoder width)
    steps: int  # head-training optimiser steps
    val_episodes: int
    autocast: tuple[str, ...]  # head-training autocast modes


# LanguageBind/Video-LLaVA-7B-hf, config.json (text_config from lmsys/vicuna-7b-v1.5, a Llama-2-7B).
FULL = Setting(
    name="Video-LLaVA-7B (random weights)",
    device="cuda",
    dtype=torch.bfloat16,
    text={
        "vocab_size": 32064,
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5,
    },
    vision={
        "hidden_size": 1024,
        "intermediate_size": 4096,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "image_size": 224,
        "patch_size": 14,
        "projection_dim": 768,
    },
    head_dim=1024,
    steps=20,
    val_episodes=100,
    autocast=("off", "bf16"),
)
TINY = Setting(
    name="tiny Video-LLaVA (CPU smoke run)",
    device="cpu",
    dtype=torch.float32,
    text={
        "vocab_size": 32064,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5,
    },
    vision={
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": 32,
        "patch_size": 8,
        "projection_dim": 32,
    },
    head_dim=32,
    steps=3,
    val_episodes=10,
    autocast=("off",),
)
N_FRAMES = 8
LABELS = (
    "Pushing something from left to right",
    "Moving something up",
    "Turning the camera left while filming something",
    "Putting something on a surface",
)
GIB = 2**30


def build_backend(setting: Setting, seed: int):
    """The Video-LLaVA of ``setting`` with seeded random weights, behind fsar-features' backend class."""
    from transformers import CLIPVisionConfig, LlamaConfig, VideoLlavaConfig, VideoLlavaForConditionalGeneration

    from fsar_features.backends import (
        CLIP_MEAN,
        CLIP_STD,
        VIDEO_LLAVA,
        HFVideoBackend,
        Preprocessing,
        build_word_tokenizer,
    )
    from fsar_prompts import render_prompt

    vision = CLIPVisionConfig(**setting.vision)
    config = VideoLlavaConfig(
        vision_config=vision,
        text_config=LlamaConfig(**setting.text),
        image_token_index=32000,
        video_token_index=32001,
        vision_feature_layer=-2,
        video_seq_length=N_FRAMES * ((vision.image_size // vision.patch_size) ** 2 + 1),
    )
    # Parameters are allocated on the target device in the target dtype as the modules are built.
    previous = torch.get_default_dtype()
    torch.manual_seed(seed)
    started = time.perf_counter()
    torch.set_default_dtype(setting.dtype)
    try:
        with torch.device(setting.device):
            model = VideoLlavaForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    _sync(setting.device)
    build_s = time.perf_counter() - started
    prompts = [render_prompt("video-llava", "query", "generic")]
    prompts += [render_prompt("video-llava", "support", "generic", label=label) for label in LABELS]
    tokenizer = build_word_tokenizer([p.prefix + " " + p.suffix for p in prompts])
    backend = HFVideoBackend(
        name="video-llava",
        model=model,
        tokenizer=tokenizer,
        model_id=f"{setting.name}, seed {seed}",
        family="video-llava",
        tokens_per_frame=VIDEO_LLAVA.tokens_per_frame(config),
        has_cls=True,
        preprocessing=Preprocessing(vision.image_size, vision.image_size, CLIP_MEAN, CLIP_STD),
    )
    parameters = list(model.parameters())
    lengths = [len(backend.tokenize(p, N_FRAMES)) for p in prompts]  # S of each prompt's full sequence
    info = {
        "params": sum(p.numel() for p in parameters),
        "weights_gib": sum(p.numel() * p.element_size() for p in parameters) / GIB,
        "dtype": str(setting.dtype).removeprefix("torch."),
        "device": str(backend.device),
        "attention": model.config._attn_implementation,
        "build_s": build_s,
        "tokens_per_frame": backend.tokens_per_frame,
        "seq_len_query": lengths[0],
        "seq_len_support_max": max(lengths[1:]),
        "text": setting.text,
        "vision": setting.vision,
    }
    return backend, info


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _peak_gib(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / GIB if device == "cuda" else None


def _free(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def synthetic_clips(n: int, size: int, seed: int) -> list:
    """``n`` decoded clips: uint8 ``[T, size, size, 3]`` noise, as ``read_frames`` would return them."""
    from fsar_features import VideoClip

    rng = np.random.default_rng(seed)
    return [
        VideoClip(
            frames=rng.integers(0, 256, (N_FRAMES, size, size, 3), dtype=np.uint8),
            indices=tuple(range(0, 4 * N_FRAMES, 4)),
            n_source_frames=4 * N_FRAMES,
            strategy="uniform",
            padded=False,
            decode_mode="seek",
            size=size,
        )
        for _ in range(n)
    ]


def bench_extraction(backend, setting: Setting, batch_sizes: list[int], timed_batches: int) -> list[dict[str, Any]]:
    """videos/s and peak memory per (prefix reuse, batch size); a mode's sweep stops at its first OOM."""
    from fsar_features import ExtractionConfig, FeatureExtractor

    size = setting.vision["image_size"]
    rows: list[dict[str, Any]] = []
    for reuse in (True, False):
        failed = False
        for batch in batch_sizes:
            row: dict[str, Any] = {"reuse_prefix_cache": reuse, "batch_size": batch}
            if failed:
                rows.append({**row, "status": "skipped (a smaller batch ran out of memory)"})
                continue
            extractor = FeatureExtractor(backend, ExtractionConfig(n_frames=N_FRAMES, batch_size=batch,
                                                                   reuse_prefix_cache=reuse))  # fmt: skip
            clips = synthetic_clips(batch, size, seed=batch)
            ids = [f"v{k}" for k in range(batch)]
            labels = [LABELS[k % len(LABELS)] for k in range(batch)]
            _free(setting.device)
            if setting.device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            try:
                features = extractor.extract_clips(clips, ids, labels)  # warm-up: kernels, allocator
                started = time.perf_counter()
                for _ in range(timed_batches):
                    features = extractor.extract_clips(clips, ids, labels)  # returns CPU tensors: synchronised
                seconds = time.perf_counter() - started
            except torch.OutOfMemoryError:
                failed = True
            if failed:  # outside the except block, so the traceback no longer holds the activations
                features = None
                _free(setting.device)
                rows.append({**row, "status": "out of memory"})
                continue
            finite = all(bool(f.visual.isfinite().all()) and all(bool(t.isfinite().all()) for t in f.text.values())
                         for f in features)  # fmt: skip
            rows.append(
                {
                    **row,
                    "status": "ok",
                    "videos_per_s": batch * timed_batches / seconds,
                    "seconds": seconds,
                    "peak_gib": _peak_gib(setting.device),
                    "dim": int(features[0].visual.shape[-1]),
                    "finite": finite,
                }
            )
    return rows


def largest_batches(rows: list[dict[str, Any]]) -> dict[str, int | None]:
    out = {}
    for reuse, key in ((True, "prefix_cache"), (False, "full_forward")):
        ran = [r["batch_size"] for r in rows if r["reuse_prefix_cache"] is reuse and r["status"] == "ok"]
        out[key] = max(ran) if ran else None
    return out


def _pool(n_classes: int, per_class: int, dim: int, device: str, seed: int):
    from fsar_train import TensorFeatures

    gen = torch.Generator().manual_seed(seed)
    labels = [c for c in range(n_classes) for _ in range(per_class)]
    visual = torch.randn(len(labels), N_FRAMES, dim, generator=gen).half()  # fp16, like the feature cache
    text = [torch.randn(len(labels), dim, generator=gen).half() for _ in range(2)]
    return TensorFeatures(visual, labels, label_aware_text=text[0], label_free_text=text[1]).to(device)


def bench_head_training(setting: Setting, in_dim: int) -> list[dict[str, Any]]:
    """FSAR-LLaVA head training episodes/s through ``fsar_train.train`` (5-way 1-shot, 5 queries, B = 16)."""
    from fsar_train import ExperimentConfig, apply_overrides, train

    train_src = _pool(64, 20, in_dim, setting.device, seed=0)
    val_src = _pool(12, 20, in_dim, setting.device, seed=1)
    rows = []
    stamps: list[float] = []

    def stamp(*_: Any) -> None:
        _sync(setting.device)
        stamps.append(time.perf_counter())

    for autocast in setting.autocast:
        config = apply_overrides(
            ExperimentConfig(),
            [
                "metric.name=fsar_llava",
                f"metric.options.dim={setting.head_dim}",
                "episodes.n_way=5",
                "episodes.n_shot=1",
                "episodes.train_queries=5",
                f"train.steps={setting.steps}",
                "train.episodes_per_step=16",
                "train.warmup_steps=2",
                f"train.val_every={setting.steps}",
                f"train.val_episodes={setting.val_episodes}",
                f"train.checkpoint_every={setting.steps}",
                f"train.device={setting.device}",
                f"train.autocast={autocast}",
            ],
        )
        _free(setting.device)
        if setting.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        stamps.clear()
        with tempfile.TemporaryDirectory() as run_dir:
            result = train(config, train_src, val_src, run_dir, progress=False, on_step=stamp)
        episodes = (setting.steps - 1) * config.train.episodes_per_step
        seconds = stamps[-1] - stamps[0]
        rows.append(
            {
                "autocast": autocast,
                "in_dim": in_dim,
                "dim": setting.head_dim,
                "head_params": sum(p.numel() for p in result.metric.parameters() if p.requires_grad),
                "episodes": episodes,
                "seconds": seconds,
                "episodes_per_s": episodes / seconds,
                "peak_gib": _peak_gib(setting.device),
                "final_loss": result.history[-1]["loss"],
            }
        )
    return rows


def _gib(value: float | None) -> str:
    return "n/a (CPU)" if value is None else f"{value:.2f} GiB"


def results_table(results: dict[str, Any]) -> Table:
    """The one table: model, extraction per (mode, batch), largest batches, head training."""
    m = results["model"]
    table = Table(title=f"bench_gpu: {results['setting']} on {results['device_name']}")
    for column, justify in (("measure", "left"), ("setting", "left"), ("rate", "right"),
                            ("peak memory", "right"), ("note", "left")):  # fmt: skip
        table.add_column(column, justify=justify)
    table.add_row(
        "model",
        f"{m['dtype']}, {m['attention']}, V = {m['tokens_per_frame']}, S = {m['seq_len_query']} / "
        f"{m['seq_len_support_max']} (query / support)",
        "",
        f"{m['weights_gib']:.2f} GiB weights",
        f"{m['params'] / 1e9:.3f} B params, built in {m['build_s']:.1f} s",
    )
    for r in results["extraction"]:
        mode = "prefix cache" if r["reuse_prefix_cache"] else "full forward"
        if r["status"] == "ok":
            note = f"D_in = {r['dim']}, features finite" if r["finite"] else "NON-FINITE features"
            table.add_row("extraction", f"{mode}, batch {r['batch_size']}", f"{r['videos_per_s']:.2f} videos/s",
                          _gib(r["peak_gib"]), note)  # fmt: skip
        else:
            table.add_row("extraction", f"{mode}, batch {r['batch_size']}", "", "", r["status"])
    for key, label in (("prefix_cache", "prefix cache"), ("full_forward", "full forward")):
        largest = results["largest_batch"][key]
        table.add_row("largest batch", label, "none" if largest is None else str(largest), "",
                      f"of {', '.join(map(str, results['batch_sizes']))}")  # fmt: skip
    for r in results["head_training"]:
        table.add_row(
            "head training",
            f"fsar_llava D_in {r['in_dim']}, D {r['dim']}, B 16, autocast {r['autocast']}",
            f"{r['episodes_per_s']:.1f} episodes/s",
            _gib(r["peak_gib"]),
            f"{r['head_params'] / 1e6:.2f} M params, {r['episodes']} episodes",
        )
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny widths on the CPU (a smoke run of the same code)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--timed-batches", type=int, default=None, help="timed batches per point (3; --tiny: 2)")
    parser.add_argument("--steps", type=int, default=None, help="head-training steps (20; --tiny: 3)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="default: bench_gpu.json (--tiny: bench_gpu-tiny.json)")
    args = parser.parse_args(argv)
    setting = TINY if args.tiny else FULL
    if setting.device == "cuda" and not torch.cuda.is_available():
        print(
            "bench_gpu: no CUDA device is available, and this benchmark measures the 7B model on a GPU. "
            "Run it on a CUDA machine, or pass --tiny for the CPU smoke run of the same code.",
            file=sys.stderr,
        )
        return 2
    if args.steps is not None:
        setting = dataclasses.replace(setting, steps=args.steps)
    timed = args.timed_batches or (2 if args.tiny else 3)
    torch.set_num_threads(args.threads)
    device_name = torch.cuda.get_device_name() if setting.device == "cuda" else platform.processor() or "CPU"
    results: dict[str, Any] = {
        "setting": setting.name,
        "tiny": args.tiny,
        "device_name": device_name,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "batch_sizes": args.batch_sizes,
        "timed_batches": timed,
    }
    backend, results["model"] = build_backend(setting, args.seed)
    results["extraction"] = bench_extraction(backend, setting, args.batch_sizes, timed)
    results["largest_batch"] = largest_batches(results["extraction"])
    in_dim = backend.hidden_size
    del backend  # the head trains on its own
    _free(setting.device)
    results["head_training"] = bench_head_training(setting, in_dim)

    # Piped output (a log file) would wrap at rich's default 80 columns.
    (Console() if sys.stdout.isatty() else Console(width=150)).print(results_table(results))
    path = args.json or Path("bench_gpu-tiny.json" if args.tiny else "bench_gpu.json")
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"numbers written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
