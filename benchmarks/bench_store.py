"""The LanceDB prototype store at scale: ANN-indexed query vs exact flat scan, recall, add and index times.

``--actions`` stored actions at D = 1024, T = 8, clustered so that top-5 is meaningful: ``--clusters``
centres ``[T, D]``, each action a centre plus noise (its text prototype the same centre's mean plus
noise); each query is a noisy copy of a stored action. Actions are written in batches of 2,000
generated on the fly (100,000 actions are 3.3 GB of frames: never all in memory). A query is two
cosine searches (pooled visual vector and text vector, ``--candidates`` rows each) then the MPMM
re-rank of the union, top 5.

Reported, in one run:

- query p50 / p95 with the exact flat scan (the baseline: ``query(..., exact=True)``) and with the
  IVF-PQ indexes (``IndexSettings``: nprobes, refine factor), and their ratio;
- recall@5: the share of the exact path's top 5 (after the re-rank) that the indexed path returns;
  top-1: the share of queries whose best match is the action they copy;
- the index build time, the time of adding one action to the indexed store (p50 / max over
  ``--adds`` adds) against adding one below the index threshold;
- the add that finds more than ``IndexSettings.max_unindexed`` rows outside the index: it starts the
  background refresh and returns; its time against the refresh's own (what that add took when the
  refresh ran inside it), and the indexed query latency while the refresh runs and after it.

Run: ``uv run python benchmarks/bench_store.py --actions 100000`` (the docs/benchmarks.md numbers;
4.4 GB of disk in a temporary folder; 4–4.5 minutes on the quiet 2-core machine, 2 of them the index
build); the default ``--actions 20000`` is the quick run (72 s).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from fsar_apps.store import IndexSettings, PrototypeStore, StoreRecipe
from fsar_features import FeatureRecipe

D, T = 1024, 8
BATCH = 2_000


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def actions(centres: torch.Tensor, lo: int, n: int, spread: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Actions ``lo .. lo + n``: visual ``[n, T, D]`` and text ``[n, D]``, reproducible per index."""
    gen = torch.Generator().manual_seed(lo)
    cluster = torch.arange(lo, lo + n) % len(centres)
    visual = centres[cluster] + spread * torch.randn(n, T, D, generator=gen)
    text = centres[cluster].mean(1) + spread * torch.randn(n, D, generator=gen)
    return visual, text


def run_queries(
    store: PrototypeStore, queries: list[tuple[int, torch.Tensor, torch.Tensor]], candidates: int, exact: bool
) -> tuple[list[float], list[list[str]], float]:
    """Latencies (ms), each query's top-5 names and the top-1 accuracy."""
    latencies, tops, correct = [], [], 0
    for i, frames, text in queries:
        start = time.perf_counter()
        result = store.query(frames, text, k=5, candidates=candidates, exact=exact)
        latencies.append((time.perf_counter() - start) * 1e3)
        tops.append([m.action for m in result.matches])
        correct += result.matches[0].action == f"action {i:06d}"
    return latencies, tops, correct / len(queries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--actions", type=int, default=20_000)
    parser.add_argument("--clusters", type=int, default=1_000)
    parser.add_argument("--spread", type=float, default=0.7, help="action noise around its cluster centre")
    parser.add_argument("--noise", type=float, default=0.5, help="query noise around its action")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument(
        "--exact-queries", type=int, default=30, help="queries timed on the flat scan (all 100 used for recall)"
    )
    parser.add_argument("--candidates", type=int, default=50)
    parser.add_argument("--nprobes", type=int, default=IndexSettings.nprobes)
    parser.add_argument("--refine-factor", type=int, default=IndexSettings.refine_factor)
    parser.add_argument("--adds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dir", default=None, help="where the temporary store goes (default: the system's)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    centres = torch.randn(args.clusters, T, D)

    features = FeatureRecipe(
        backend="video-llava", model_id="bench", family="video-llava", dim=D, n_layers=32, layers=(32,),
        visual_pooling="mean", text_pooling="last", n_frames=T, sampling="uniform", sampling_seed=None,
        frame_size=224, crop_size=224, scenario="generic", roles=("query", "support"),
    )  # fmt: skip
    settings = IndexSettings(nprobes=args.nprobes, refine_factor=args.refine_factor)
    folder = tempfile.mkdtemp(dir=args.dir)
    store = PrototypeStore.open(folder, StoreRecipe(features, "bench", dim=D, n_frames=T), index=settings)
    store.auto_index = False  # a bulk load: one index build at the end
    picks = set(torch.randperm(args.actions, generator=torch.Generator().manual_seed(1))[: args.queries].tolist())
    queries = []
    start = time.perf_counter()
    for lo in range(0, args.actions, BATCH):
        n = min(BATCH, args.actions - lo)
        visual, text = actions(centres, lo, n, args.spread)
        store.add_many([(f"action {lo + j:06d}", visual[j], text[j], [str(lo + j)]) for j in range(n)])
        for j in range(n):
            if lo + j in picks:
                queries.append(
                    (lo + j, visual[j] + args.noise * torch.randn(T, D), text[j] + args.noise * torch.randn(D))
                )
    load_s = time.perf_counter() - start
    store.optimize()
    print(f"stored {len(store):,} actions in {load_s:.0f} s ({time.perf_counter() - start:.0f} s with compaction)")

    one = actions(centres, args.actions + 10**6, args.adds + 1, args.spread)
    start = time.perf_counter()
    store.add("new flat", one[0][0], one[1][0], support_ids=["new"])  # below the threshold: a plain merge_insert
    add_flat_ms = (time.perf_counter() - start) * 1e3

    run_queries(store, queries[:2], args.candidates, exact=True)  # warm-up
    exact_lat, exact_top, exact_acc = run_queries(store, queries, args.candidates, exact=True)
    exact_lat = exact_lat[: args.exact_queries] if args.exact_queries else exact_lat

    start = time.perf_counter()
    store.create_indexes(min_rows=1)
    build_s = time.perf_counter() - start
    store.auto_index = True
    run_queries(store, queries[:2], args.candidates, exact=False)
    ann_lat, ann_top, ann_acc = run_queries(store, queries, args.candidates, exact=False)
    recall = statistics.mean(len(set(a) & set(e)) / len(e) for a, e in zip(ann_top, exact_top, strict=True))

    add_ms = []
    for j in range(1, args.adds + 1):
        start = time.perf_counter()
        store.add(f"new {j}", one[0][j], one[1][j], support_ids=["new"])
        add_ms.append((time.perf_counter() - start) * 1e3)
    after_lat, _, _ = run_queries(store, queries[:20], args.candidates, exact=False)

    visual, text = actions(centres, args.actions + 2 * 10**6, settings.max_unindexed, args.spread)
    store.auto_index = False
    store.add_many([(f"more {j}", visual[j], text[j], ["more"]) for j in range(len(visual))])
    store.auto_index = True
    start = time.perf_counter()
    store.add("new last", one[0][0], one[1][0], support_ids=["new"])  # past max_unindexed: starts the refresh
    trigger_ms = (time.perf_counter() - start) * 1e3
    during_lat, i = [], 0
    while store.refreshing():  # the store keeps answering while the worker refreshes in the background
        during_lat += run_queries(store, [queries[i % len(queries)]], args.candidates, exact=False)[0]
        i += 1
    record = store.index_status().last_refresh
    refreshed_lat, _, _ = run_queries(store, queries[:20], args.candidates, exact=False)
    print(
        f"{args.actions:,} actions in {args.clusters} clusters, D = {D}, T = {T}, top-5 after MPMM re-rank of "
        f"{args.candidates} + {args.candidates} candidates, {torch.get_num_threads()} threads, "
        f"IVF-PQ {settings.partitions(args.actions)} partitions, nprobes {settings.nprobes}, "
        f"refine factor {settings.refine_factor}"
    )
    print(f"{'path':<34} {'queries':>7} {'p50 ms':>8} {'p95 ms':>8} {'top-1':>6} {'recall@5':>9}")
    rows = [
        ("exact flat scan + re-rank (base)", exact_lat, exact_acc, 1.0),
        ("IVF-PQ search + re-rank", ann_lat, ann_acc, recall),
    ]
    for name, latencies, accuracy, rec in rows:
        print(
            f"{name:<34} {len(latencies):>7} {statistics.median(latencies):>8.1f} "
            f"{percentile(latencies, 0.95):>8.1f} {accuracy:>6.2f} {rec:>9.3f}"
        )
    print(f"IVF-PQ after {args.adds} unindexed adds: p50 {statistics.median(after_lat):.1f} ms (20 queries)")
    print(f"p50 ratio exact / indexed: {statistics.median(exact_lat) / statistics.median(ann_lat):.1f}x")
    print(f"index build (both columns): {build_s:.0f} s")
    print(
        f"add one action: {add_flat_ms:.0f} ms unindexed store (base); indexed p50 {statistics.median(add_ms):.0f} ms, "
        f"max {max(add_ms):.0f} ms over {args.adds} (ratio {statistics.median(add_ms) / add_flat_ms:.1f}x)"
    )
    print(
        f"the add past {settings.max_unindexed:,} unindexed rows: {trigger_ms:.0f} ms (starts the "
        f"{settings.refresh} refresh and returns); the refresh itself (the inline baseline): {record.describe()} "
        f"(ratio {record.seconds * 1e3 / trigger_ms:.0f}x)"
    )
    print(
        f"IVF-PQ query p50 while the refresh ran: {statistics.median(during_lat or [float('nan')]):.1f} ms "
        f"({len(during_lat)} queries); after it: {statistics.median(refreshed_lat):.1f} ms (20 queries)"
    )


if __name__ == "__main__":
    main()
