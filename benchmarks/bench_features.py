"""fsar-features benchmarks: frame sampling, tiny-model extraction, cache reads, cache size, 7B memory.

Run: ``uv run python benchmarks/bench_features.py`` (``--repeats``, ``--threads``, ``--json PATH``).

1. Sampling 8 frames from a 10 s clip (250 frames, 320×240, H.264 with B-frames): fsar's seek
   decoding and sequential decoding against the decode-everything baseline (decode and convert every
   frame to RGB, then pick 8), each in the same run; for a short GOP (16) and x264's default (250).
2. Extraction rate of the tiny default backend on CPU, end to end (decode, forward, cache commit),
   in videos/s, on 48 synthetic 2 s clips (64×48).
3. Cache read rate: videos/s for stacked reads (visual [B, T, D] + query text [B, D]) from a cache
   of 2,048 videos at D = 4096, T = 8, fp16 (256 videos per shard), for random batches of 64 ids and
   for one full sequential pass.
4. Bytes per cached video on disk at D = 4096, T = 8, visual + two text vectors, fp16, manifest
   included (target < 100 KB).
5. Memory of Video-LLaVA-7B in bf16: parameters counted from the config built on the meta device,
   activations estimated per video, and the largest batch that fits a 24 GB GPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch

import fsar_features
from fsar_features import ExtractionConfig, FeatureCache, FeatureRecipe, VideoFeatures, extract_features, read_frames


def write_clip(path: Path, n_frames: int, width: int, height: int, gop: int | None, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    with av.open(str(path), mode="w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        s.options = {"preset": "veryfast", "crf": "23", **({"g": str(gop)} if gop else {})}
        for i in range(n_frames):
            img = np.roll(base, 3 * i, axis=1)
            img[:, :, 0] = (img[:, :, 0].astype(int) + 5 * i) % 256
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def decode_all_then_pick(path: Path, n_frames: int = 8) -> np.ndarray:
    """The baseline: decode and convert every frame, then pick T by linspace."""
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]
    idx = fsar_features.sample_indices(len(frames), n_frames, "uniform")
    return np.stack([frames[i] for i in idx])


def median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def bench_sampling(work: Path, repeats: int) -> list[dict]:
    rows = []
    for gop in (16, None):
        path = write_clip(work / f"ten_seconds_g{gop}.mp4", 250, 320, 240, gop)
        ref = decode_all_then_pick(path)
        for mode in ("seek", "sequential"):
            assert np.array_equal(read_frames(path, 8, decode=mode).frames, ref), "frames differ from the baseline"
        base = median_ms(lambda p=path: decode_all_then_pick(p), repeats)
        seek = median_ms(lambda p=path: read_frames(p, 8, decode="seek"), repeats)
        seq = median_ms(lambda p=path: read_frames(p, 8, decode="sequential"), repeats)
        rows.append(
            {
                "clip": f"10 s, 250 frames, 320×240, GOP {gop or 250}",
                "decode_all_ms": base,
                "seek_ms": seek,
                "sequential_ms": seq,
                "seek_speedup": base / seek,
                "sequential_speedup": base / seq,
            }
        )
    return rows


def bench_extraction(work: Path) -> dict:
    folder = work / "videos"
    folder.mkdir()
    items = [(f"v{k:03d}", write_clip(folder / f"v{k:03d}.mp4", 50, 64, 48, 16, seed=k), "jumping") for k in range(48)]
    backend = fsar_features.create_backend("tiny-video-llava")
    extract_features(items[:4], work / "warm", backend, progress=False)  # warm-up (allocator, kernels)
    t0 = time.perf_counter()
    summary = extract_features(items, work / "cache", backend, ExtractionConfig(batch_size=8), progress=False)
    seconds = time.perf_counter() - t0
    assert summary.ok
    assert summary.n_extracted == len(items)
    return {"videos": len(items), "seconds": seconds, "videos_per_s": len(items) / seconds, "roles": "query + support"}


def synthetic_features(video_id: str, dim: int, g: torch.Generator) -> VideoFeatures:
    return VideoFeatures(
        video_id=video_id,
        visual=torch.randn(8, dim, generator=g),
        text={"query": torch.randn(dim, generator=g), "support": torch.randn(dim, generator=g)},
        prompt_ids={"query": "p-0123456789abcdef", "support": "p-fedcba9876543210"},
        model_id="LanguageBind/Video-LLaVA-7B-hf",
        layers=(32,),
        visual_pooling="mean",
        text_pooling="last",
        sampling="uniform",
        frame_indices=(0, 35, 71, 106, 142, 177, 213, 249),
        label="Pushing something from left to right",
        n_source_frames=250,
    )


def bench_cache(work: Path, repeats: int) -> dict:
    recipe = FeatureRecipe(
        backend="video-llava",
        model_id="LanguageBind/Video-LLaVA-7B-hf",
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
        scenario="temporal",
        roles=("query", "support"),
        prompts={"query": "p-0123456789abcdef", "support": "support-temporal@1"},
    )
    root = work / "cache4096"
    cache = FeatureCache.create(root, recipe)
    writer = cache.writer("bench", videos_per_shard=256)
    g = torch.Generator().manual_seed(0)
    n = 2048
    t0 = time.perf_counter()
    for k in range(n):
        writer.add(synthetic_features(f"video-{k:05d}", 4096, g), f"/data/ssv2/{k}.webm")
    writer.flush()
    write_s = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    t0 = time.perf_counter()
    cache = FeatureCache.open(root)
    open_s = time.perf_counter() - t0
    ids = cache.video_ids
    rng = np.random.default_rng(0)
    batches = [[ids[i] for i in rng.choice(n, 64, replace=False)] for _ in range(20)]

    def random_reads() -> None:
        for b in batches:
            cache.visual(b)
            cache.text(b, "query")

    def full_pass() -> None:
        cache.visual(ids)
        cache.text(ids, "query")

    random_ms = median_ms(random_reads, repeats)
    full_ms = median_ms(full_pass, repeats)
    return {
        "videos": n,
        "bytes_per_video": size / n,
        "tensor_bytes_per_video": (8 + 2) * 4096 * 2,
        "write_videos_per_s": n / write_s,
        "open_s": open_s,
        "random_batch64_videos_per_s": 20 * 64 / (random_ms / 1000),
        "full_pass_videos_per_s": n / (full_ms / 1000),
    }


def bench_memory(gpu_gib: float = 24.0, overhead_gib: float = 1.0) -> dict:
    from transformers import VideoLlavaConfig, VideoLlavaForConditionalGeneration

    with torch.device("meta"):
        config = VideoLlavaConfig()
        model = VideoLlavaForConditionalGeneration(config)
    params = sum(p.numel() for p in model.parameters())
    text = config.text_config
    L, D, kv_heads, heads, ffn = (
        text.num_hidden_layers,
        text.hidden_size,
        text.num_key_value_heads,
        text.num_attention_heads,
        text.intermediate_size,
    )
    head_dim = D // heads
    vision = config.vision_config
    v = (vision.image_size // vision.patch_size) ** 2 + 1
    seq = 8 * v + 48  # 2056 video tokens + about 48 prompt tokens (support prompt, temporal scenario)
    bf16 = 2
    weights = params * bf16
    kv_cache = 2 * L * seq * kv_heads * head_dim * bf16  # keys and values of every layer
    hidden_states = (L + 1) * seq * D * bf16  # output_hidden_states keeps all L + 1 states
    layer_transient = seq * (3 * D + 3 * ffn) * bf16  # q/k/v and gate/up/act of one layer (SDPA: no S×S matrix)
    vision_tower = 8 * v * vision.hidden_size * (vision.num_hidden_layers + 1) * bf16 * 2  # two towers' states
    per_video_cached = kv_cache + hidden_states + layer_transient + vision_tower
    per_video_full = hidden_states + layer_transient + vision_tower
    budget = (gpu_gib - overhead_gib) * 2**30 - weights
    margin = 0.85  # allocator fragmentation and estimate error

    def fit(per_video: float) -> int:
        return max(0, int(budget * margin // per_video))

    return {
        "params": params,
        "weights_gib": weights / 2**30,
        "seq_len": seq,
        "kv_cache_gib_per_video": kv_cache / 2**30,
        "hidden_states_gib_per_video": hidden_states / 2**30,
        "transient_gib_per_video": (layer_transient + vision_tower) / 2**30,
        "per_video_gib_prefix_cache": per_video_cached / 2**30,
        "per_video_gib_full_forward": per_video_full / 2**30,
        "free_for_activations_gib": budget / 2**30,
        "batch_24gb_prefix_cache": fit(per_video_cached),
        "batch_24gb_full_forward": fit(per_video_full),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results: dict = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, av {av.__version__}",
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        results["sampling"] = bench_sampling(work, args.repeats)
        results["extraction"] = bench_extraction(work)
        results["cache"] = bench_cache(work, args.repeats)
    results["memory"] = bench_memory()

    print(f"machine: {results['machine']}")
    print("\nsampling 8 frames (median ms; speedup vs decode-all)")
    for r in results["sampling"]:
        print(
            f"  {r['clip']}: decode-all {r['decode_all_ms']:.1f}, seek {r['seek_ms']:.1f} "
            f"({r['seek_speedup']:.1f}×), sequential {r['sequential_ms']:.1f} ({r['sequential_speedup']:.1f}×)"
        )
    e = results["extraction"]
    print(
        f"\ntiny-video-llava extraction on CPU: {e['videos_per_s']:.1f} videos/s ({e['videos']} videos, {e['roles']})"
    )
    c = results["cache"]
    print(
        f"\ncache at D=4096, T=8, fp16: {c['bytes_per_video'] / 1000:.1f} kB per video on disk "
        f"({c['tensor_bytes_per_video'] / 1000:.1f} kB of tensors); write {c['write_videos_per_s']:.0f} videos/s; "
        f"open {c['open_s'] * 1000:.0f} ms; random batches of 64: {c['random_batch64_videos_per_s']:.0f} videos/s; "
        f"full pass: {c['full_pass_videos_per_s']:.0f} videos/s"
    )
    m = results["memory"]
    print(
        f"\nVideo-LLaVA-7B bf16: {m['params'] / 1e9:.2f} B params = {m['weights_gib']:.1f} GiB; S = {m['seq_len']}; "
        f"per video {m['per_video_gib_prefix_cache']:.2f} GiB with the prefix cache "
        f"(KV {m['kv_cache_gib_per_video']:.2f}, hidden states {m['hidden_states_gib_per_video']:.2f}, "
        f"transient {m['transient_gib_per_video']:.2f}), {m['per_video_gib_full_forward']:.2f} GiB with full forwards; "
        f"24 GB GPU: batch {m['batch_24gb_prefix_cache']} (prefix cache) / "
        f"{m['batch_24gb_full_forward']} (full forwards)"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
