"""Speed of fsar-metric's metrics against the per-cell loop form of public FSAR code.

Episode: 5-way 5-shot, 25 queries, T = 8, D = 1024, float32, CPU. Each metric is timed as a whole
call (frame similarities included) against a baseline measured in the same run:

- ``otam``: the few-shot-action-recognition library's ``OTAM_cum_dist`` form (also in CLIP-FSAR):
  a Python double loop over the T × (T+2) padded grid, batched over queries and support videos,
  with its ``log(exp + exp)`` soft-min, run in both directions;
- ``bimhm``: a double loop over the T × T grid filling cosine distances, batched over queries and
  support videos, then the nearest-frame means;
- ``trx``: the reference TRX structure: tuples gathered one by one in a Python loop and the
  attention run class by class. Timed for the forward pass and for a training step (forward,
  cross-entropy, backward to the weights), and its peak memory is compared: the growth of the
  resident set's high-water mark (``VmHWM``, Linux) during one call, each in a fresh process.

The row "otam DP vs einsum" times the recursion alone (both directions, ``fsar ms``) against the
frame-similarity einsum alone (``loop ms`` column); a ratio above 1 means the recursion is cheaper.

Run: ``uv run python benchmarks/bench_metrics.py`` (``--repeats``, ``--threads``, ``--json PATH``).
Ratios are baseline time / fsar time (higher = fsar faster); "max |diff|" compares the logits (for
the trx training step: the weight gradients).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import multiprocessing
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from fsar_metric import TRX, create_metric, otam_distance

N_WAY, N_SHOT, N_QUERY, N_FRAMES, DIM = 5, 5, 25, 8, 1024


# ----------------------------------------------------------------------------- baselines
def public_cos_sim(query: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """``[Q, T, D]``, ``[S, T, D]`` → ``[Q, S, T, T]`` exact cosine (no 0.01 offset, to compare values)."""
    q = F.normalize(query, dim=-1)
    s = F.normalize(support, dim=-1)
    return torch.einsum("qtd,sud->qstu", q, s)


def public_otam_cum_dist(dists: torch.Tensor, lbda: float = 0.1) -> torch.Tensor:
    """The per-cell loop of the public re-implementation, ``[Q, S, T, U]`` → ``[Q, S]``."""
    dists = F.pad(dists, (1, 1), "constant", 0)
    cum = torch.zeros(dists.shape, dtype=dists.dtype)
    for m in range(1, dists.shape[3]):
        cum[:, :, 0, m] = dists[:, :, 0, m] + cum[:, :, 0, m - 1]
    for l in range(1, dists.shape[2]):
        cum[:, :, l, 1] = dists[:, :, l, 1] - lbda * torch.log(
            torch.exp(-cum[:, :, l - 1, 0] / lbda)
            + torch.exp(-cum[:, :, l - 1, 1] / lbda)
            + torch.exp(-cum[:, :, l, 0] / lbda)
        )
        for m in range(2, dists.shape[3] - 1):
            cum[:, :, l, m] = dists[:, :, l, m] - lbda * torch.log(
                torch.exp(-cum[:, :, l - 1, m - 1] / lbda) + torch.exp(-cum[:, :, l, m - 1] / lbda)
            )
        cum[:, :, l, -1] = dists[:, :, l, -1] - lbda * torch.log(
            torch.exp(-cum[:, :, l - 1, -2] / lbda)
            + torch.exp(-cum[:, :, l - 1, -1] / lbda)
            + torch.exp(-cum[:, :, l, -2] / lbda)
        )
    return cum[:, :, -1, -1]


def baseline_otam(support: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    n_way, n_shot = support.shape[:2]
    dists = 1 - public_cos_sim(query, support.flatten(0, 1))  # [Q, N*K, T, T]
    total = public_otam_cum_dist(dists) + public_otam_cum_dist(dists.transpose(-1, -2))
    return -total.view(-1, n_way, n_shot).mean(-1)


def baseline_bimhm(support: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    n_way, n_shot, n_frames = support.shape[:3]
    s = F.normalize(support.flatten(0, 1), dim=-1)  # [S, T, D]
    q = F.normalize(query, dim=-1)  # [Q, T, D]
    dists = torch.zeros(q.shape[0], s.shape[0], n_frames, n_frames)
    for i in range(n_frames):
        for j in range(n_frames):
            dists[:, :, i, j] = 1 - q[:, i] @ s[:, j].T
    total = dists.amin(-1).mean(-1) + dists.amin(-2).mean(-1)
    return -total.view(-1, n_way, n_shot).mean(-1)


def baseline_trx(metric: TRX, support: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """The reference code's structure: per-tuple gathering and a loop over classes."""
    n_way, n_shot, n_frames, dim = support.shape
    pe = torch.zeros(n_frames, dim)
    position = torch.arange(n_frames).unsqueeze(1)
    div = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
    pe[:, 0::2], pe[:, 1::2] = torch.sin(position * div), torch.cos(position * div)
    all_logits = []
    for head, w in zip(metric.heads, metric.cardinalities, strict=True):
        tuples = list(itertools.combinations(range(n_frames), w))
        s = support.flatten(0, 1) + 0.1 * pe
        q = query + 0.1 * pe
        s_tuples = torch.stack([torch.cat([s[:, i] for i in p], -1) for p in tuples], 1)  # [S, P, w*D]
        q_tuples = torch.stack([torch.cat([q[:, i] for i in p], -1) for p in tuples], 1)  # [Q, P, w*D]
        s_k, s_v = head.key_norm(head.key(s_tuples)), head.value(s_tuples)
        q_k, q_v = head.key_norm(head.key(q_tuples)), head.value(q_tuples)
        labels = torch.arange(n_way).repeat_interleave(n_shot)
        dists = torch.zeros(query.shape[0], n_way)
        for c in range(n_way):
            idx = torch.nonzero(labels == c).squeeze(1)
            k_c = s_k[idx].flatten(0, 1)  # [K*P, d_k]
            v_c = s_v[idx].flatten(0, 1)
            att = torch.softmax(torch.einsum("qpe,je->qpj", q_k, k_c) / math.sqrt(k_c.shape[-1]), -1)
            proto = torch.einsum("qpj,je->qpe", att, v_c)
            dists[:, c] = (q_v - proto).pow(2).sum(-1).mean(-1)
        all_logits.append(-dists)
    return torch.stack(all_logits).mean(0)


def otam_parts_row(support: torch.Tensor, query: torch.Tensor, repeats: int) -> dict[str, float | str]:
    """The OTAM recursion alone (both directions) against the frame-similarity einsum alone.

    In the row, ``fsar_ms`` is the recursion and ``baseline_ms`` the einsum, so ``ratio`` above 1
    means the recursion costs less than the einsum.
    """
    otam = create_metric("otam")
    with torch.no_grad():
        dist = 1.0 - otam.frame_similarity(query, support)  # [Q, N, K, T, T]
        t_dp = time_call(lambda: otam_distance(dist), repeats)
        t_sim = time_call(lambda: otam.frame_similarity(query, support), repeats)
    return {
        "metric": "otam",
        "mode": "DP vs einsum",
        "fsar_ms": t_dp,
        "baseline_ms": t_sim,
        "ratio": t_sim / t_dp,
        "max_abs_diff": float("nan"),
    }


def trx_training_step(fn: Callable[[], torch.Tensor], metric: TRX, labels: torch.Tensor) -> Callable[[], None]:
    """One training step of ``fn``'s logits: cross-entropy, backward to the weights (features are fixed)."""

    def step() -> None:
        metric.zero_grad(set_to_none=True)
        F.cross_entropy(fn(), labels).backward()

    return step


def trx_gradients(step: Callable[[], None], metric: TRX) -> torch.Tensor:
    """All parameter gradients of one ``step``, flattened."""
    step()
    return torch.cat([p.grad.flatten() for p in metric.parameters()])


def _rss_kb(field: str) -> int:
    """``VmRSS`` / ``VmHWM`` of this process in kB (Linux ``/proc/self/status``)."""
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(field + ":"))


def trx_peak_rss_mb(which: str, training: bool, threads: int) -> float:
    """Peak growth of the resident set (MB) during one trx call, run in this (fresh) process.

    The high-water mark is reset to the current RSS just before the call (``clear_refs`` 5), so
    setup (imports, the weights, the episode) is excluded.
    """
    torch.set_num_threads(threads)
    support, query, metric, labels = trx_episode()
    fn = (lambda: metric(support, query)) if which == "fsar" else (lambda: baseline_trx(metric, support, query))
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    before = _rss_kb("VmRSS")
    if training:
        trx_training_step(fn, metric, labels)()
    else:
        with torch.no_grad():
            fn()
    return (_rss_kb("VmHWM") - before) / 1024


def trx_episode() -> tuple[torch.Tensor, torch.Tensor, TRX, torch.Tensor]:
    """The benchmark episode and the default TRX (d_k = 1152, Ω = {2, 3}) in eval mode, seeded."""
    gen = torch.Generator().manual_seed(0)
    support = torch.randn(N_WAY, N_SHOT, N_FRAMES, DIM, generator=gen)
    query = torch.randn(N_QUERY, N_FRAMES, DIM, generator=gen)
    torch.manual_seed(0)
    labels = torch.arange(N_WAY).repeat_interleave(N_QUERY // N_WAY)  # [Q]
    return support, query, TRX(in_dim=DIM).eval(), labels


def trx_training_row(metric: TRX, support: torch.Tensor, query: torch.Tensor, repeats: int) -> dict[str, object]:
    """The forward + backward row: times, ratio, and the largest difference of the weight gradients."""
    labels = torch.arange(N_WAY).repeat_interleave(N_QUERY // N_WAY)
    fast = trx_training_step(lambda: metric(support, query), metric, labels)
    slow = trx_training_step(lambda: baseline_trx(metric, support, query), metric, labels)
    diff = (trx_gradients(fast, metric) - trx_gradients(slow, metric)).abs().max().item()
    t_fast, t_slow = time_call(fast, repeats), time_call(slow, repeats)
    return {
        "metric": "trx",
        "mode": "forward+backward",
        "fsar_ms": t_fast,
        "baseline_ms": t_slow,
        "ratio": t_slow / t_fast,
        "max_abs_diff": diff,
    }


def trx_memory_rows(threads: int) -> list[dict[str, object]]:
    """Peak RSS growth of one call, fsar and baseline, forward and training step, each in a fresh process."""
    rows = []
    context = multiprocessing.get_context("spawn")
    for training in (False, True):
        peaks = {}
        for which in ("fsar", "baseline"):
            with context.Pool(1) as pool:
                peaks[which] = pool.apply(trx_peak_rss_mb, (which, training, threads))
        rows.append({"mode": "forward+backward" if training else "forward", **peaks})
    return rows


# ----------------------------------------------------------------------------- timing
def time_call(fn: Callable[[], object], repeats: int, warmup: int = 3) -> float:
    """Median wall time in milliseconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    gen = torch.Generator().manual_seed(0)
    support = torch.randn(N_WAY, N_SHOT, N_FRAMES, DIM, generator=gen)
    query = torch.randn(N_QUERY, N_FRAMES, DIM, generator=gen)
    torch.manual_seed(0)
    trx = TRX(in_dim=DIM).eval()
    otam, bimhm = create_metric("otam"), create_metric("bimhm")

    cases: list[tuple[str, Callable[[], torch.Tensor], Callable[[], torch.Tensor], bool]] = [
        ("otam", lambda: otam(support, query), lambda: baseline_otam(support, query), True),
        ("bimhm", lambda: bimhm(support, query), lambda: baseline_bimhm(support, query), True),
        ("trx", lambda: trx(support, query), lambda: baseline_trx(trx, support, query), True),
    ]
    rows = []
    for name, fast, slow, no_grad in cases:
        with torch.no_grad() if no_grad else torch.enable_grad():
            diff = (fast() - slow()).abs().max().item()
            t_fast = time_call(fast, args.repeats)
            t_slow = time_call(slow, args.repeats)
        rows.append(
            {
                "metric": name,
                "mode": "forward",
                "fsar_ms": t_fast,
                "baseline_ms": t_slow,
                "ratio": t_slow / t_fast,
                "max_abs_diff": diff,
            }
        )

    # Training cost: forward + backward through the OTAM recursion.
    s_req, q_req = support.clone().requires_grad_(True), query.clone().requires_grad_(True)

    def fwd_bwd(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Callable[[], None]:
        return lambda: fn(s_req, q_req).sum().backward()

    t_fast = time_call(fwd_bwd(lambda s, q: otam(s, q)), args.repeats)
    t_slow = time_call(fwd_bwd(baseline_otam), args.repeats)
    rows.append(
        {
            "metric": "otam",
            "mode": "forward+backward",
            "fsar_ms": t_fast,
            "baseline_ms": t_slow,
            "ratio": t_slow / t_fast,
            "max_abs_diff": float("nan"),
        }
    )
    rows.append(trx_training_row(trx, support, query, args.repeats))
    trx_memory = trx_memory_rows(args.threads)

    rows.append(otam_parts_row(support, query, args.repeats))

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print(
        f"episode: {N_WAY}-way {N_SHOT}-shot, Q={N_QUERY}, T={N_FRAMES}, D={DIM}, float32, CPU; median of "
        f"{args.repeats}"
    )
    header = f"{'metric':<7} {'mode':<17} {'fsar ms':>9} {'loop ms':>9} {'ratio':>7} {'max |diff|':>11}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['metric']:<7} {r['mode']:<17} {r['fsar_ms']:>9.2f} {r['baseline_ms']:>9.2f} {r['ratio']:>6.1f}x "
            f"{r['max_abs_diff']:>11.2e}"
        )
    print("trx peak memory, growth of the resident set during one call (fresh process each):")
    for m in trx_memory:
        print(
            f"  {m['mode']:<17} fsar {m['fsar']:7.1f} MB   baseline {m['baseline']:7.1f} MB   "
            f"ratio {m['fsar'] / m['baseline']:.2f}"
        )
    rows.extend(
        {"metric": "trx", "mode": f"peak RSS, {m['mode']}", "fsar_mb": m["fsar"], "baseline_mb": m["baseline"]}
        for m in trx_memory
    )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
