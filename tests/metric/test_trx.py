"""TRX against a float64 oracle: the reference computation, tuple by tuple and class by class.

The fast path never forms the tuple keys and values (it works on per-frame projections and their
Gram blocks); the oracle below concatenates each tuple's frames, applies the module's own key /
value maps and LayerNorm to it, builds every query-specific prototype and takes the squared
distance, as in the TRX paper and the authors' code.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from fsar_metric import TRX
from fsar_metric.metrics.trx import sinusoidal_positions, slot_incidence

Dropout = Callable[[Tensor], Tensor]


def _positions(n_frames: int, dim: int) -> Tensor:
    """``[T, D]`` float64 sinusoidal encoding written out channel by channel."""
    pe = torch.zeros(n_frames, dim, dtype=torch.float64)
    for t in range(n_frames):
        for i in range(dim):
            angle = t / (10000 ** ((i - i % 2) / dim))
            pe[t, i] = math.sin(angle) if i % 2 == 0 else math.cos(angle)
    return pe


def trx_oracle(metric: TRX, support: Tensor, query: Tensor, dropout: Dropout | None = None) -> Tensor:
    """Logits ``[Q, N]`` per head, class, query and tuple, in the dtype of ``metric`` (use float64).

    ``dropout`` (default: none, i.e. eval mode) is applied to the encoded support frames and then to
    the encoded query frames of each head, in that order.
    """
    n_way, n_shot, n_support_frames, dim = support.shape
    n_query, n_frames = query.shape[:2]
    logits = torch.zeros(n_query, n_way, dtype=support.dtype)
    s_pe, q_pe = _positions(n_support_frames, dim), _positions(n_frames, dim)
    for head, w in zip(metric.heads, metric.cardinalities, strict=True):
        s_frames = support + 0.1 * s_pe
        q_frames = query + 0.1 * q_pe
        if dropout is not None:
            s_frames = dropout(s_frames.flatten(0, 1)).view(support.shape)
            q_frames = dropout(q_frames)
        s_tuples = list(itertools.combinations(range(n_support_frames), w))
        q_tuples = list(itertools.combinations(range(n_frames), w))

        def key(video: Tensor, p: tuple[int, ...], head: nn.Module = head) -> Tensor:
            return head.key_norm(head.key(torch.cat([video[i] for i in p])))

        def value(video: Tensor, p: tuple[int, ...], head: nn.Module = head) -> Tensor:
            return head.value(torch.cat([video[i] for i in p]))

        for c in range(n_way):
            keys = [key(s_frames[c, k], p) for k in range(n_shot) for p in s_tuples]
            values = [value(s_frames[c, k], p) for k in range(n_shot) for p in s_tuples]
            for qi in range(n_query):
                total = torch.zeros((), dtype=support.dtype)
                for p in q_tuples:
                    q_key, q_value = key(q_frames[qi], p), value(q_frames[qi], p)
                    scores = torch.stack([q_key @ k / math.sqrt(q_key.numel()) for k in keys])
                    weights = torch.softmax(scores, 0)
                    prototype = sum(a * v for a, v in zip(weights, values, strict=True))
                    total = total + (q_value - prototype).pow(2).sum()
                logits[qi, c] = logits[qi, c] - total / len(q_tuples) / len(metric.heads)
    return logits


def _build(in_dim: int, key_dim: int, cardinalities: tuple[int, ...], seed: int = 0) -> TRX:
    """An eval-mode TRX whose LayerNorm affine parameters are random (γ = 1, β = 0 would hide terms)."""
    torch.manual_seed(seed)
    metric = TRX(in_dim=in_dim, key_dim=key_dim, cardinalities=cardinalities).eval()
    with torch.no_grad():
        for head in metric.heads:
            head.key_norm.weight.uniform_(0.5, 1.5)
            head.key_norm.bias.normal_(0.0, 0.5)
    return metric


def _episode(n_way: int, n_shot: int, n_query: int, u: int, t: int, dim: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    support = torch.randn(n_way, n_shot, u, dim, generator=gen, dtype=torch.float64)
    query = torch.randn(n_query, t, dim, generator=gen, dtype=torch.float64)
    return support, query


def _relative_error(fast: Tensor, reference: Tensor) -> float:
    return ((fast.double() - reference).abs().max() / reference.abs().max()).item()


# (N, K, Q, U, T, D, d_k, Ω): K = 1, U ≠ T, ω = T, and every cardinality from 1 to 3.
SHAPES = [
    (3, 2, 4, 5, 5, 8, 6, (2, 3)),
    (2, 1, 3, 4, 4, 6, 5, (1, 2, 3)),
    (3, 1, 2, 6, 4, 5, 7, (1,)),
    (2, 3, 3, 3, 5, 4, 9, (2, 3)),
    (2, 2, 2, 3, 3, 6, 4, (3,)),
    (1, 4, 2, 8, 8, 7, 5, (2,)),
]


@pytest.mark.parametrize(("n_way", "n_shot", "n_query", "u", "t", "dim", "key_dim", "cardinalities"), SHAPES)
def test_float32_fast_path_matches_the_float64_oracle(n_way, n_shot, n_query, u, t, dim, key_dim, cardinalities):
    support, query = _episode(n_way, n_shot, n_query, u, t, dim)
    metric = _build(dim, key_dim, cardinalities)
    with torch.no_grad():
        reference = trx_oracle(copy.deepcopy(metric).double(), support, query)
        fast = metric(support.float(), query.float())
    assert fast.dtype == torch.float32
    assert fast.shape == (n_query, n_way)
    assert _relative_error(fast, reference) <= 1e-5


@settings(max_examples=12, deadline=None)
@given(
    n_way=st.integers(1, 3),
    n_shot=st.integers(1, 3),
    n_query=st.integers(1, 3),
    u=st.integers(3, 6),
    t=st.integers(3, 6),
    cardinalities=st.sampled_from([(1,), (2,), (3,), (1, 2), (2, 3), (1, 2, 3), (3, 1)]),
    seed=st.integers(0, 2**16),
)
def test_float64_fast_path_equals_the_oracle_on_random_shapes(n_way, n_shot, n_query, u, t, cardinalities, seed):
    support, query = _episode(n_way, n_shot, n_query, u, t, 5, seed=seed)
    metric = _build(5, 4, cardinalities, seed=seed).double()
    with torch.no_grad():
        # Float64 rounding only (the expansion ‖v‖² − 2⟨v, t⟩ + ‖t‖² loses a few digits to cancellation).
        assert _relative_error(metric(support, query), trx_oracle(metric, support, query)) <= 1e-8


def _parameter_grads(metric: TRX, logits_fn: Callable[[TRX], Tensor], labels: Tensor) -> dict[str, Tensor]:
    metric.zero_grad()
    nn.functional.cross_entropy(logits_fn(metric), labels).backward()
    return {name: p.grad.detach().clone() for name, p in metric.named_parameters()}


@pytest.mark.parametrize(("n_shot", "u", "t", "cardinalities"), [(2, 5, 5, (2, 3)), (1, 4, 5, (1, 2, 3))])
def test_gradients_match_the_oracle(n_shot, u, t, cardinalities):
    support, query = _episode(3, n_shot, 4, u, t, 6)
    labels = torch.tensor([0, 2, 1, 2])
    metric = _build(6, 5, cardinalities)
    reference = _parameter_grads(copy.deepcopy(metric).double(), lambda m: trx_oracle(m, support, query), labels)
    fast64 = _parameter_grads(copy.deepcopy(metric).double(), lambda m: m(support, query), labels)
    fast32 = _parameter_grads(metric, lambda m: m(support.float(), query.float()), labels)
    assert reference.keys() == fast64.keys() == fast32.keys()
    scale = max(grad.abs().max().item() for grad in reference.values())
    for name, grad in reference.items():
        if name.endswith("value.bias"):
            # Analytically zero: the attention weights sum to 1, so the bias cancels in v_q − Σ a v_j.
            assert grad.abs().max() <= 1e-12 * scale, name
            assert fast32[name].abs().max() <= 1e-6 * scale, name
            continue
        assert grad.abs().max() > 1e-3 * scale, name  # γ and β included: every other parameter learns
        assert (fast64[name] - grad).abs().max() <= 1e-8 * scale, name
        assert (fast32[name] - grad).abs().max() <= 1e-5 * scale, name


def test_training_mode_draws_dropout_in_the_reference_order():
    """Same seed, same masks: support frames then query frames, head by head, as before."""
    support, query = _episode(2, 2, 3, 4, 4, 6)
    metric = _build(6, 5, (2, 3)).double().train()
    torch.manual_seed(7)
    fast = metric(support, query)
    torch.manual_seed(7)
    with torch.no_grad():
        reference = trx_oracle(metric, support, query, dropout=metric.heads[0].dropout)
    assert _relative_error(fast.detach(), reference) <= 1e-8
    torch.manual_seed(8)
    assert not torch.allclose(metric(support, query), fast)  # dropout is active


def test_float32_at_the_default_key_width_matches_float64():
    """Default widths (d_k = 1152): float32 fast path within 1e-5 of the float64 fast path."""
    support, query = _episode(2, 2, 3, 8, 8, 64)
    metric = _build(64, 1152, (2, 3))
    with torch.no_grad():
        reference = copy.deepcopy(metric).double()(support, query)
        fast = metric(support.float(), query.float())
    assert _relative_error(fast, reference) <= 1e-5


def test_state_dict_layout_and_initialisation_are_unchanged():
    torch.manual_seed(0)
    metric = TRX(in_dim=4, key_dim=3)
    shapes = {name: tuple(p.shape) for name, p in metric.state_dict().items()}
    expected: dict[str, tuple[int, ...]] = {}
    for i, w in enumerate((2, 3)):
        expected |= {
            f"heads.{i}.key.weight": (3, 4 * w),
            f"heads.{i}.key.bias": (3,),
            f"heads.{i}.value.weight": (3, 4 * w),
            f"heads.{i}.value.bias": (3,),
            f"heads.{i}.key_norm.weight": (3,),
            f"heads.{i}.key_norm.bias": (3,),
        }
    assert shapes == expected
    torch.manual_seed(0)
    first = nn.Linear(8, 3)  # the first parameters drawn are heads.0.key's, as nn.Linear draws them
    torch.testing.assert_close(metric.heads[0].key.weight, first.weight)
    torch.testing.assert_close(metric.heads[0].key.bias, first.bias)


@pytest.mark.parametrize(("n_frames", "cardinality"), [(8, 2), (8, 3), (5, 1), (4, 4), (6, 3)])
def test_slot_incidence_sums_frame_rows_into_the_concatenated_tuple_projection(n_frames, cardinality):
    dim, width = 3, 4
    incidence = slot_incidence(n_frames, cardinality, device=torch.device("cpu"), dtype=torch.float64)
    span = n_frames - cardinality + 1
    assert incidence.shape == (math.comb(n_frames, cardinality), cardinality * span)
    assert torch.equal(incidence.sum(1), torch.full((incidence.shape[0],), float(cardinality), dtype=torch.float64))
    frames = torch.randn(n_frames, dim, dtype=torch.float64)
    linear = nn.Linear(cardinality * dim, width, dtype=torch.float64)
    rows = torch.cat(
        [frames[slot : slot + span] @ linear.weight[:, slot * dim : (slot + 1) * dim].T for slot in range(cardinality)]
    )  # [F, width], slot-major
    tuples = itertools.combinations(range(n_frames), cardinality)
    concatenated = torch.stack([linear(torch.cat([frames[i] for i in p])) for p in tuples])  # [P, width]
    torch.testing.assert_close(incidence @ rows + linear.bias, concatenated)


def test_slot_incidence_refuses_a_tuple_longer_than_the_clip():
    with pytest.raises(ValueError, match="slot_incidence needs 1 <= cardinality <= n_frames, got 4 and 3"):
        slot_incidence(3, 4, device=torch.device("cpu"), dtype=torch.float32)


def test_positional_encoding_is_the_transformer_one():
    pe = sinusoidal_positions(3, 5, device=torch.device("cpu"), dtype=torch.float64)
    assert pe.shape == (3, 5)
    assert pe[0, 0] == 0.0
    assert pe[0, 1] == 1.0
    torch.testing.assert_close(
        pe[2, 2], torch.tensor(math.sin(2 / 10000 ** (2 / 5)), dtype=torch.float64), check_dtype=False
    )


def test_reversing_query_frames_changes_trx(episode):
    ep = episode(n_frames=6)
    metric = TRX(in_dim=ep.query.shape[-1], key_dim=16).eval()
    assert not torch.allclose(metric(ep.support, ep.query), metric(ep.support, ep.query.flip(1)))


def test_clip_shorter_than_the_tuple_is_refused():
    with pytest.raises(ValueError, match="cardinality 3 needs at least that many frames; got support T = 2"):
        TRX(in_dim=4, key_dim=4)(torch.randn(2, 1, 2, 4), torch.randn(3, 2, 4))


def test_width_other_than_built_for_is_refused():
    with pytest.raises(ValueError, match=r"TRX was built for D = 8, got support of shape \[2, 1, 4, 6\]"):
        TRX(in_dim=8, key_dim=4)(torch.randn(2, 1, 4, 6), torch.randn(3, 4, 6))


@pytest.mark.parametrize("cardinalities", [(), (0, 2), (2, 2)])
def test_bad_cardinalities_are_refused(cardinalities):
    with pytest.raises(ValueError, match="cardinalities must be distinct positive integers"):
        TRX(in_dim=4, cardinalities=cardinalities)
