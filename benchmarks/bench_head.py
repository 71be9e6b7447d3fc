"""Evaluation-path speed of the FSAR-LLaVA head: per-video work once vs recomputing per episode.

Setting (issue 3): 10,000 5-way 1-shot episodes (one query per class) drawn from a pool of 2,857
videos (the size of the SSv2-Full test split, 24 classes), D_in = 4096, D = 1024, T = 8, float32,
the default head in eval mode, on the CPU.

- pool path: ``encode_pool`` runs MFEM and CTPC's per-video Enc_p once per video, then
  ``score_pool`` builds prototypes and runs MPMM per episode;
- baseline: the plain ``forward`` per episode, which re-encodes its 10 videos every time. It is
  timed on a prefix of the same episode list (``--baseline-episodes``) and extrapolated to the full
  count; the logits of both paths are compared on that prefix.

Run: ``uv run python benchmarks/bench_head.py`` (``--episodes``, ``--baseline-episodes``, ``--threads``).
"""

from __future__ import annotations

import argparse
import time

import torch

from fsar_metric import FSARLLaVA

POOL, N_CLASSES, T, D_IN, D = 2857, 24, 8, 4096, 1024
N_WAY, N_SHOT, N_QUERY = 5, 1, 1


def sample_episodes(labels: torch.Tensor, n_episodes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded episodes: support ``[E, N, K]`` and query ``[E, N * n_query]`` pool indices."""
    gen = torch.Generator().manual_seed(seed)
    by_class = [torch.nonzero(labels == c).squeeze(1) for c in range(N_CLASSES)]
    supports, queries = [], []
    for _ in range(n_episodes):
        classes = torch.randperm(N_CLASSES, generator=gen)[:N_WAY]
        support, query = [], []
        for c in classes.tolist():
            members = by_class[c][torch.randperm(len(by_class[c]), generator=gen)[: N_SHOT + N_QUERY]]
            support.append(members[:N_SHOT])
            query.append(members[N_SHOT:])
        supports.append(torch.stack(support))
        queries.append(torch.cat(query))
    return torch.stack(supports), torch.stack(queries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=10_000)
    parser.add_argument("--baseline-episodes", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=256, help="videos per encode_pool call")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    gen = torch.Generator().manual_seed(0)
    visual = torch.randn(POOL, T, D_IN, generator=gen)
    support_text = torch.randn(POOL, D_IN, generator=gen)
    query_text = torch.randn(POOL, D_IN, generator=gen)
    labels = torch.arange(POOL) % N_CLASSES
    support_idx, query_idx = sample_episodes(labels, args.episodes, seed=1)
    torch.manual_seed(0)
    head = FSARLLaVA(in_dim=D_IN, dim=D).eval()
    print(f"head: {head.n_parameters():,} trainable parameters; pool {POOL} videos, {args.episodes} episodes")

    with torch.inference_mode():
        start = time.perf_counter()
        pool = head.encode_pool(visual, support_text, query_text, chunk_size=args.chunk)
        t_encode = time.perf_counter() - start
        start = time.perf_counter()
        pool_logits = [head.score_pool(pool, support_idx[e], query_idx[e]) for e in range(args.episodes)]
        t_episodes = time.perf_counter() - start
        accuracy = torch.stack(
            [(lg.argmax(-1) == torch.arange(N_WAY).repeat_interleave(N_QUERY)).float().mean() for lg in pool_logits]
        ).mean()

        n_base = min(args.baseline_episodes, args.episodes)
        start = time.perf_counter()
        max_diff = 0.0
        for e in range(n_base):
            s, q = support_idx[e], query_idx[e]
            full = head(
                visual[s],
                visual[q],
                support_text=support_text[s],
                query_text=query_text[q],
                support_text_free=query_text[s],
            )
            max_diff = max(max_diff, (full - pool_logits[e]).abs().max().item())
        t_base = (time.perf_counter() - start) / n_base

    total = t_encode + t_episodes
    extrapolated = t_base * args.episodes
    print(
        f"pool path: encode {t_encode:.1f} s + {args.episodes} episodes {t_episodes:.1f} s "
        f"({1e3 * t_episodes / args.episodes:.2f} ms each) = {total:.1f} s"
    )
    print(
        f"per-episode recompute: {1e3 * t_base:.0f} ms/episode over {n_base} episodes "
        f"→ {extrapolated:.0f} s for {args.episodes} (extrapolated)"
    )
    print(
        f"ratio recompute / pool: {extrapolated / total:.1f}x; max |logit diff| {max_diff:.2e}; "
        f"accuracy on random features {accuracy:.3f} (chance 0.2)"
    )


if __name__ == "__main__":
    main()
