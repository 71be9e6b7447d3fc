"""OTAM against a float64 loop oracle written straight from the recursion in docs/protocol.md ("`otam`")."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fsar_metric import OTAM, create_metric, otam_cumulative_distance, otam_distance


def _soft_min(values: list[float], smoothing: float) -> float:
    low = min(values)  # shifted for stability; the same value as the textbook formula
    return low - smoothing * math.log(sum(math.exp(-(v - low) / smoothing) for v in values))


def otam_loop(dist: list[list[float]], smoothing: float, first_row: str) -> float:
    """One direction, one cell at a time, on the zero-padded matrix [0 | Δ | 0]."""
    n_rows, n_cols = len(dist), len(dist[0])
    padded = [[0.0, *row, 0.0] for row in dist]
    cum = [[0.0] * (n_cols + 2) for _ in range(n_rows)]
    first = 0
    if first_row == "sum":
        for m in range(1, n_cols + 2):
            cum[0][m] = padded[0][m] + cum[0][m - 1]
        first = 1
    for l in range(first, n_rows):
        prev = cum[l - 1] if l > 0 else [0.0] * (n_cols + 2)
        cum[l][1] = padded[l][1] + _soft_min([prev[0], prev[1], cum[l][0]], smoothing)
        for m in range(2, n_cols + 1):
            cum[l][m] = padded[l][m] + _soft_min([prev[m - 1], cum[l][m - 1]], smoothing)
        cum[l][n_cols + 1] = padded[l][n_cols + 1] + _soft_min(
            [prev[n_cols], prev[n_cols + 1], cum[l][n_cols]], smoothing
        )
    return cum[-1][-1]


def hard_alignment_loop(dist: list[list[float]]) -> float:
    """The λ → 0 limit: the same moves with a hard min (the cheapest monotone path)."""
    n_rows, n_cols = len(dist), len(dist[0])
    padded = [[0.0, *row, 0.0] for row in dist]
    cum = [[0.0] * (n_cols + 2) for _ in range(n_rows)]
    for m in range(1, n_cols + 2):
        cum[0][m] = padded[0][m] + cum[0][m - 1]
    for l in range(1, n_rows):
        cum[l][1] = padded[l][1] + min(cum[l - 1][0], cum[l - 1][1], cum[l][0])
        for m in range(2, n_cols + 1):
            cum[l][m] = padded[l][m] + min(cum[l - 1][m - 1], cum[l][m - 1])
        cum[l][-1] = min(cum[l - 1][n_cols], cum[l - 1][n_cols + 1], cum[l][n_cols])
    return cum[-1][-1]


@settings(max_examples=60, deadline=None)
@given(
    n_rows=st.integers(1, 7),
    n_cols=st.integers(1, 7),
    smoothing=st.sampled_from([0.05, 0.1, 0.5, 2.0]),
    first_row=st.sampled_from(["sum", "relaxed"]),
    seed=st.integers(0, 2**16),
)
def test_vectorised_recursion_matches_the_float64_cell_loop(n_rows, n_cols, smoothing, first_row, seed):
    dist = torch.rand(3, n_rows, n_cols, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2
    fast = otam_cumulative_distance(dist, smoothing, first_row)
    expected = torch.tensor([otam_loop(d.tolist(), smoothing, first_row) for d in dist], dtype=torch.float64)
    torch.testing.assert_close(fast, expected, rtol=1e-12, atol=1e-12)


def test_float32_matches_the_float64_oracle_to_1e_5():
    dist = torch.rand(50, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2
    expected = torch.tensor([otam_loop(d.tolist(), 0.1, "sum") for d in dist], dtype=torch.float64)
    torch.testing.assert_close(otam_cumulative_distance(dist.float(), 0.1).double(), expected, rtol=0, atol=1e-5)


def test_metric_matches_oracle_end_to_end_with_cosine_frames(episode):
    ep = episode(dtype=torch.float64)
    logits = OTAM()(ep.support, ep.query)
    q = torch.nn.functional.normalize(ep.query, dim=-1)
    s = torch.nn.functional.normalize(ep.support, dim=-1)
    expected = torch.zeros_like(logits)
    for qi in range(q.shape[0]):
        for c in range(s.shape[0]):
            shots = []
            for k in range(s.shape[1]):
                delta = (1 - q[qi] @ s[c, k].T).tolist()  # [T, T]
                delta_t = [list(col) for col in zip(*delta, strict=True)]
                shots.append(otam_loop(delta, 0.1, "sum") + otam_loop(delta_t, 0.1, "sum"))
            expected[qi, c] = -sum(shots) / len(shots)
    torch.testing.assert_close(logits, expected, rtol=1e-10, atol=1e-10)


def test_small_smoothing_approaches_the_hard_alignment():
    dist = torch.rand(10, 6, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    hard = torch.tensor([hard_alignment_loop(d.tolist()) for d in dist], dtype=torch.float64)
    soft = otam_cumulative_distance(dist, smoothing=1e-4)
    # The soft-min undershoots the min by at most λ·log(#paths); tiny at λ = 1e-4.
    assert (soft <= hard + 1e-9).all()
    torch.testing.assert_close(soft, hard, rtol=0, atol=1e-2)


def test_directions_combine_as_documented():
    dist = torch.rand(4, 6, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    q2s = otam_distance(dist, direction="q2s")
    s2q = otam_distance(dist, direction="s2q")
    torch.testing.assert_close(s2q, otam_cumulative_distance(dist.transpose(-1, -2)))
    torch.testing.assert_close(otam_distance(dist, direction="sum"), q2s + s2q)
    torch.testing.assert_close(otam_distance(dist, direction="mean"), (q2s + s2q) / 2)


def test_unequal_frame_counts_use_both_directions():
    dist = torch.rand(4, 5, 8, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    expected = torch.tensor(
        [otam_loop(d.tolist(), 0.1, "sum") + otam_loop(d.T.tolist(), 0.1, "sum") for d in dist], dtype=torch.float64
    )
    torch.testing.assert_close(otam_distance(dist), expected)


def test_reversing_the_query_frames_changes_otam_but_not_proto(episode):
    ep = episode(n_frames=8)
    reversed_query = ep.query.flip(1)
    otam, proto = create_metric("otam"), create_metric("proto")
    assert not torch.allclose(otam(ep.support, ep.query), otam(ep.support, reversed_query))
    torch.testing.assert_close(proto(ep.support, ep.query), proto(ep.support, reversed_query))


def test_a_time_reversed_copy_scores_worse_than_the_copy():
    frames = torch.randn(8, 32, generator=torch.Generator().manual_seed(5))
    support = torch.stack([frames, frames.flip(0)])[:, None]  # [2, 1, 8, 32]: class 0 forward, class 1 reversed
    logits = OTAM()(support, frames[None])
    assert logits[0, 0] > logits[0, 1]


def test_costs_that_underflow_the_public_log_exp_stay_finite():
    # Every frame distance is 2 (each support frame is the negated query frame), so cumulative costs
    # reach 16 per direction; at λ = 0.1 the public float32 log(exp(-Γ/λ) + …) underflows to log(0).
    assert torch.log(torch.exp(torch.tensor(-16.0 / 0.1)) * 2) == -torch.inf
    frame = torch.randn(16, generator=torch.Generator().manual_seed(6))
    query = frame.expand(1, 8, 16)
    logits = OTAM()(-query[None], query)
    assert torch.isfinite(logits).all()
    # The cheapest path covers all 8 support frames at cost 2 each, both ways: 32, less the soft-min slack.
    assert -32.0 < logits.item() < -30.0


def test_scaling_features_does_not_change_cosine_otam(episode):
    ep = episode()
    metric = OTAM()
    torch.testing.assert_close(metric(ep.support * 3.0, ep.query * 0.25), metric(ep.support, ep.query))


def test_max_shot_reduction_takes_the_nearest_shot(episode):
    ep = episode(n_shot=3)
    per_shot = torch.stack([OTAM()(ep.support[:, k : k + 1], ep.query) for k in range(3)], -1)  # [Q, N, K]
    torch.testing.assert_close(OTAM(shot_reduction="max")(ep.support, ep.query), per_shot.amax(-1))
    torch.testing.assert_close(OTAM()(ep.support, ep.query), per_shot.mean(-1))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"smoothing": 0.0}, "smoothing must be > 0"),
        ({"direction": "both"}, r"direction='both' is not valid; choose one of 'q2s', 's2q', 'sum', 'mean'"),
        ({"first_row": "soft"}, "first_row='soft' is not valid"),
        ({"shot_reduction": "min"}, "shot_reduction='min' is not valid"),
        (
            {"frame_similarity": "l1"},
            "unknown frame similarity 'l1'; registered frame similarities: cosine, dot, sqeuclidean",
        ),
    ],
)
def test_bad_options_raise_value_error_naming_the_option(kwargs, message):
    with pytest.raises(ValueError, match=message):
        OTAM(**kwargs)


def torch_cell_loop(dist: torch.Tensor, smoothing: float) -> torch.Tensor:
    """The oracle's recursion cell by cell on torch scalars ``[B, T, U]`` → ``[B]``, for autograd."""
    n_rows, n_cols = dist.shape[-2:]
    zero = dist.new_zeros(dist.shape[0])

    def smin(*values: torch.Tensor) -> torch.Tensor:
        return -smoothing * torch.logsumexp(torch.stack(values) / -smoothing, 0)

    prev = [zero]
    for m in range(n_cols):
        prev.append(prev[-1] + dist[:, 0, m])
    prev.append(prev[-1])
    for l in range(1, n_rows):
        cur = [zero, dist[:, l, 0] + smin(prev[0], prev[1], zero)]
        for m in range(2, n_cols + 1):
            cur.append(dist[:, l, m - 1] + smin(prev[m - 1], cur[m - 1]))
        cur.append(smin(prev[n_cols], prev[n_cols + 1], cur[n_cols]))
        prev = cur
    return prev[-1]


def _oracle_logits(support, query, direction: str, smoothing: float = 0.1) -> torch.Tensor:
    q = torch.nn.functional.normalize(query.double(), dim=-1)
    s = torch.nn.functional.normalize(support.double(), dim=-1)
    delta = 1 - torch.einsum("qtd,nkud->qnktu", q, s)  # [Q, N, K, T, U]
    per_shot = torch.tensor(
        [
            [otam_loop(d.tolist(), smoothing, "sum"), otam_loop(d.T.tolist(), smoothing, "sum")]
            for d in delta.flatten(0, 2)
        ],
        dtype=torch.float64,
    ).view(*delta.shape[:3], 2)
    combine = {"q2s": per_shot[..., 0], "s2q": per_shot[..., 1], "sum": per_shot.sum(-1), "mean": per_shot.mean(-1)}
    return -combine[direction].mean(-1)


@pytest.mark.parametrize("n_frames", [2, 8, 16])
@pytest.mark.parametrize("n_shot", [1, 3])
@pytest.mark.parametrize("direction", ["q2s", "s2q", "sum", "mean"])
def test_float32_metric_equals_the_float64_cell_loop(n_frames, n_shot, direction):
    gen = torch.Generator().manual_seed(n_frames * 10 + n_shot)
    support, query = torch.randn(3, n_shot, n_frames, 32, generator=gen), torch.randn(4, n_frames, 32, generator=gen)
    logits = OTAM(direction=direction)(support, query)
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits.double(), _oracle_logits(support, query, direction), rtol=0, atol=1e-5)


def test_the_weight_domain_runs_the_default_and_log_weights_run_far_inputs():
    from fsar_metric.metrics.otam import _domain_name

    cosine = torch.rand(10, 16, 16, dtype=torch.float64) * 2  # [B, T, U]: the worst cosine distance at T = 16
    assert _domain_name(cosine, 0.1) == "weights"
    assert _domain_name(cosine.float(), 0.1) == "weights-exp32"  # cell weights ≥ e^−20: float32 holds them
    assert _domain_name(cosine[:, :2, :2].float(), 0.02) == "weights"  # a cell weight e^−100 needs a float64 exp
    assert _domain_name(cosine, 0.01) == "log-weights"
    assert _domain_name(cosine * 1e4, 0.5) == "log-weights"
    assert _domain_name(torch.tensor([[[0.5, float("nan")]]]), 0.1) == "log-weights"
    assert _domain_name(torch.tensor([[[0.5, float("inf")]]]), 0.1) == "log-weights"


@pytest.mark.parametrize(("scale", "smoothing"), [(2.0, 0.1), (2.0, 0.5), (1e4, 0.01), (2.0, 0.01)])
def test_values_and_gradients_equal_the_autograd_cell_loop(scale, smoothing):
    gen = torch.Generator().manual_seed(7)
    dist = (torch.rand(6, 8, 8, generator=gen, dtype=torch.float64) * scale).requires_grad_(True)
    fast = otam_distance(dist, smoothing)
    fast_grad = torch.autograd.grad(fast.sum(), dist)[0]
    both = torch_cell_loop(dist, smoothing) + torch_cell_loop(dist.transpose(-1, -2), smoothing)
    slow_grad = torch.autograd.grad(both.sum(), dist)[0]
    torch.testing.assert_close(fast, both, rtol=1e-10, atol=1e-8)
    torch.testing.assert_close(fast_grad, slow_grad, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("direction", ["q2s", "s2q", "sum"])
@pytest.mark.parametrize("first_row", ["sum", "relaxed"])
def test_float32_cell_weights_give_the_float64_values_and_gradients(direction, first_row):
    from fsar_metric.metrics.otam import _domain_name

    gen = torch.Generator().manual_seed(9)
    dist64 = (torch.rand(12, 8, 8, generator=gen, dtype=torch.float64) * 2).requires_grad_(True)  # cosine range
    dist32 = dist64.detach().float().requires_grad_(True)
    assert _domain_name(dist32, 0.1) == "weights-exp32"
    values = {}
    for name, dist in (("32", dist32), ("64", dist64)):
        out = otam_distance(dist, 0.1, direction, first_row)
        values[name] = (out.double(), torch.autograd.grad(out.sum(), dist)[0].double())
    torch.testing.assert_close(values["32"][0], values["64"][0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(values["32"][1], values["64"][1], rtol=1e-5, atol=1e-6)


def test_far_frames_with_small_smoothing_stay_finite_in_float32_with_finite_gradients():
    gen = torch.Generator().manual_seed(8)
    dist = (torch.rand(10, 8, 8, generator=gen) * 1e4).requires_grad_(True)  # costs up to 1e6 per cell at λ = 0.01
    values = otam_distance(dist, smoothing=0.01)
    (grad,) = torch.autograd.grad(values.sum(), dist)
    assert torch.isfinite(values).all()
    assert torch.isfinite(grad).all()
    expected = torch.tensor([otam_loop(d.tolist(), 0.01, "sum") + otam_loop(d.T.tolist(), 0.01, "sum") for d in dist])
    torch.testing.assert_close(values.detach().double(), expected.double(), rtol=1e-5, atol=0)


def test_far_support_features_under_dot_similarity_give_finite_logits_and_gradients():
    gen = torch.Generator().manual_seed(9)
    support = (torch.randn(3, 2, 8, 16, generator=gen) * 30).requires_grad_(True)
    query = torch.randn(4, 8, 16, generator=gen) * 30
    logits = OTAM(smoothing=0.01, frame_similarity="dot")(support, query)
    logits.sum().backward()
    assert torch.isfinite(logits).all()
    assert torch.isfinite(support.grad).all()


@pytest.mark.parametrize("first_row", ["sum", "relaxed"])
def test_unequal_frame_counts_and_relaxed_rows_in_both_domains(first_row):
    gen = torch.Generator().manual_seed(10)
    dist = torch.rand(3, 5, 8, generator=gen, dtype=torch.float64) * 2
    for smoothing in (0.1, 0.005):  # weights, then log-weights
        expected = torch.tensor([otam_loop(d.tolist(), smoothing, first_row) for d in dist], dtype=torch.float64)
        torch.testing.assert_close(
            otam_cumulative_distance(dist, smoothing, first_row), expected, rtol=1e-10, atol=1e-10
        )


@pytest.mark.parametrize("shape", [(4, 0, 8), (4, 8, 0), (8,)])
def test_a_grid_without_rows_or_columns_is_refused_naming_its_shape(shape):
    with pytest.raises(ValueError, match=r"dist must be \[\.\.\., T, U\] frame distances .* got shape"):
        otam_distance(torch.zeros(shape))
