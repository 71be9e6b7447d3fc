"""Query latency of the LanceDB prototype store: vector search + MPMM re-rank vs brute force.

10,000 stored actions at D = 1024, T = 8 (random prototypes; queries are noisy copies of stored
actions, so top-1 accuracy checks that the candidate search finds the right row). Each query
returns the top 5 after MPMM re-ranking of the candidates found by two cosine searches (pooled
visual vector and text vector, ``--candidates`` rows each). The baseline, in the same run,
re-ranks every stored action with MPMM (brute force). Optionally with IVF-PQ indexes on both
vector columns (``--index``).

Run: ``uv run python benchmarks/bench_store.py`` (``--actions``, ``--queries``, ``--index``).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from fsar_apps.store import PrototypeStore, StoreRecipe
from fsar_features import FeatureRecipe

D, T = 1024, 8


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_queries(store, visual, text, picks, noise, candidates):
    latencies, correct = [], 0
    for i in picks.tolist():
        frames = visual[i] + noise * torch.randn(T, D)
        start = time.perf_counter()
        result = store.query(frames, text[i] + noise * torch.randn(D), k=5, candidates=candidates)
        latencies.append((time.perf_counter() - start) * 1e3)
        correct += result.best == f"action {i:05d}"
    return latencies, correct / len(picks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--actions", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--brute-queries", type=int, default=10)
    parser.add_argument("--candidates", type=int, default=50)
    parser.add_argument("--index", action="store_true", help="also build IVF-PQ indexes and time with them")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    visual = torch.randn(args.actions, T, D)
    text = torch.randn(args.actions, D)

    features = FeatureRecipe(
        backend="video-llava", model_id="bench", family="video-llava", dim=D, n_layers=32, layers=(32,),
        visual_pooling="mean", text_pooling="last", n_frames=T, sampling="uniform", sampling_seed=None,
        frame_size=224, crop_size=224, scenario="generic", roles=("query", "support"),
    )  # fmt: skip
    store = PrototypeStore.open(tempfile.mkdtemp(), StoreRecipe(features, "bench", dim=D, n_frames=T))
    start = time.perf_counter()
    for lo in range(0, args.actions, 1000):
        hi = min(lo + 1000, args.actions)
        store.add_many([(f"action {i:05d}", visual[i], text[i], [str(i)]) for i in range(lo, hi)])
    store.optimize()
    print(f"stored {len(store)} actions in {time.perf_counter() - start:.1f} s")

    picks = torch.randperm(args.actions)[: args.queries]
    rows = []
    for name, candidates, n in (
        ("search + MPMM re-rank", args.candidates, args.queries),
        ("brute-force MPMM re-rank", None, args.brute_queries),
    ):
        run_queries(store, visual, text, picks[:2], 0.3, candidates)  # warm-up
        latencies, accuracy = run_queries(store, visual, text, picks[:n], 0.3, candidates)
        rows.append((name, latencies, accuracy))
    if args.index:
        start = time.perf_counter()
        store.create_indexes()
        print(f"IVF-PQ indexes built in {time.perf_counter() - start:.1f} s")
        run_queries(store, visual, text, picks[:2], 0.3, args.candidates)
        latencies, accuracy = run_queries(store, visual, text, picks, 0.3, args.candidates)
        rows.append(("indexed search + MPMM re-rank", latencies, accuracy))

    print(f"{args.actions} actions, D = {D}, T = {T}, top-5, {torch.get_num_threads()} threads")
    print(f"{'path':<32} {'queries':>7} {'p50 ms':>8} {'p95 ms':>8} {'top-1':>6}")
    for name, latencies, accuracy in rows:
        print(
            f"{name:<32} {len(latencies):>7} {statistics.median(latencies):>8.1f} "
            f"{percentile(latencies, 0.95):>8.1f} {accuracy:>6.2f}"
        )
    base = statistics.median(rows[1][1])
    print(f"p50 ratio brute force / search: {base / statistics.median(rows[0][1]):.1f}x")


if __name__ == "__main__":
    main()
