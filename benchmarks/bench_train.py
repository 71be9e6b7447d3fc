"""Speed of fsar-train: training episodes per second, and the wall time of a 10,000-episode evaluation.

1. **Training** (CPU, in-memory features): ``fsar_train.train`` on a ``TensorFeatures`` pool of
   64 classes × 20 videos, T = 8, D_in = 4096 (Video-LLaVA-7B's width), stored in fp16 like the
   feature cache. Episodes follow the training protocol: 5-way 1-shot, 5 queries per class, 16
   episodes per optimiser step (AdamW, clipping). The metric is ``trx`` with ``key_dim`` 128 and
   cardinalities {2, 3}: TRX's own d_k = 1152 is a GPU setting. The rate is measured between the
   end of the first optimiser step and the last one, so start-up and the final meta-val pass
   (100 episodes) are left out; it includes gathering each episode from the pool.
2. **Evaluation**: ``evaluate_methods`` with ``proto``, ``otam`` and ``bimhm`` on one fixed list of
   10,000 test episodes (5-way, 1 query per class) drawn from 2,857 videos (SSv2-Full's test-split
   size) in 24 classes, T = 8, D = 1024, fp32, for K = 1 and K = 5. The time covers sampling-free
   episode assembly, scoring and bookkeeping (accuracies, confusion matrix).

Run: ``uv run python benchmarks/bench_train.py`` (``--threads``, ``--steps``, ``--episodes``,
``--json PATH``). About 1 minute on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time

import torch

from fsar_metric import create_metric
from fsar_train import EpisodeList, TensorFeatures, apply_overrides, evaluate_methods, load_preset, train


def pool(n_classes: int, per_class: int, n_frames: int, dim: int, dtype: torch.dtype, seed: int) -> TensorFeatures:
    gen = torch.Generator().manual_seed(seed)
    labels = [c for c in range(n_classes) for _ in range(per_class)][: n_classes * per_class]
    visual = torch.randn(len(labels), n_frames, dim, generator=gen).to(dtype)
    return TensorFeatures(visual, labels)


def bench_training(steps: int) -> dict[str, float]:
    train_src = pool(64, 20, 8, 4096, torch.float16, seed=0)
    val_src = pool(12, 20, 8, 4096, torch.float16, seed=1)
    config = apply_overrides(
        load_preset("synthetic-actions"),
        [
            "metric.name=trx",
            "metric.options.key_dim=128",
            f"train.steps={steps}",
            "train.episodes_per_step=16",
            "train.warmup_steps=2",
            f"train.val_every={steps}",
            "train.val_episodes=100",
            f"train.checkpoint_every={steps}",
            "train.device=cpu",
        ],
    )
    stamps: list[float] = []
    with tempfile.TemporaryDirectory() as run_dir:
        started = time.perf_counter()
        train(
            config, train_src, val_src, run_dir, progress=False, on_step=lambda *_: stamps.append(time.perf_counter())
        )
        total = time.perf_counter() - started
    # stamps[-1] is taken before the last step's validation and checkpoint.
    measured = (steps - 1) * config.train.episodes_per_step
    seconds = stamps[-1] - stamps[0]
    return {"episodes": measured, "seconds": seconds, "episodes_per_s": measured / seconds, "total_s": total}


def bench_evaluation(episodes: int, shots: list[int]) -> list[dict[str, float | int | str]]:
    source = pool(24, 120, 8, 1024, torch.float32, seed=2)  # 2,880 videos; trimmed to 2,857 below
    visual = source.visual(list(range(2857)))
    source = TensorFeatures(visual, source.labels[:2857])
    rows = []
    for k in shots:
        made = time.perf_counter()
        episode_list = EpisodeList.sample(
            source.labels, source.video_ids, count=episodes, n_way=5, n_shot=k, n_query=1, seed=0
        )
        sample_s = time.perf_counter() - made
        for name in ("proto", "otam", "bimhm"):
            result = evaluate_methods({name: create_metric(name)}, source, episode_list)[name]
            rows.append({"metric": name, "shots": k, "episodes": episodes, "seconds": result.seconds,
                         "ms_per_episode": 1000 * result.seconds / episodes, "sample_s": sample_s})  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--episodes", type=int, default=10_000)
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--json", help="also write the numbers here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    machine = f"{platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}"
    print(f"machine: {machine}")
    training = bench_training(args.steps)
    print("\n| training (trx, key_dim 128, D_in 4096, 5-way 1-shot, 5 queries/class, B = 16) | value |")
    print("|---|---:|")
    print(f"| episodes per second | **{training['episodes_per_s']:.1f}** |")
    print(f"| ms per episode (forward + backward + gather) | {1000 / training['episodes_per_s']:.0f} |")
    print(f"| optimiser steps per second | {training['episodes_per_s'] / 16:.2f} |")
    evaluation = bench_evaluation(args.episodes, args.shots)
    print(f"\n| evaluation: {args.episodes:,} episodes, 2,857 videos, T = 8, D = 1024 | K | wall s | ms / episode |")
    print("|---|---:|---:|---:|")
    for row in evaluation:
        print(f"| {row['metric']} | {row['shots']} | **{row['seconds']:.1f}** | {row['ms_per_episode']:.2f} |")
    print(f"\nsampling {args.episodes:,} episodes: {evaluation[0]['sample_s']:.2f} s")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"machine": machine, "training": training, "evaluation": evaluation}, handle, indent=2)


if __name__ == "__main__":
    main()
