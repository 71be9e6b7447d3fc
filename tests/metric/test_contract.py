"""The tensor contract, checked for every registered metric (timm's parametrised contract tests).

Registering a metric adds it here: output ``[Q, N]``, finite, gradients, dtype, invariants,
sanity by construction and bad-input errors.
"""

from __future__ import annotations

import inspect

import pytest
import torch

import fsar_metric

METRICS = fsar_metric.list_metrics()
VISUAL_ONLY = [n for n in METRICS if not fsar_metric.metric_capabilities(n).uses_text]


def test_registry_holds_the_standard_metrics():
    assert {"proto", "otam", "bimhm", "trx"} <= set(METRICS)


@pytest.mark.parametrize("name", METRICS)
def test_output_is_q_by_n_finite_logits(name, episode, build, run_metric):
    ep = episode()
    logits = run_metric(build(name), ep)
    assert logits.shape == (ep.query.shape[0], ep.support.shape[0])
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", METRICS)
def test_every_parameter_and_input_receives_a_gradient(name, episode, build, run_metric):
    ep = episode()
    ep.support.requires_grad_(True)
    ep.query.requires_grad_(True)
    metric = build(name).train()
    logits = run_metric(metric, ep)
    torch.nn.functional.cross_entropy(logits, ep.query_labels).backward()
    for tensor_name, tensor in (("support", ep.support), ("query", ep.query)):
        assert tensor.grad is not None, tensor_name
        assert torch.isfinite(tensor.grad).all(), tensor_name
        assert tensor.grad.abs().sum() > 0, f"no gradient reaches {tensor_name}"
    for param_name, param in metric.named_parameters():
        assert param.grad is not None, f"{name}: parameter {param_name} got no gradient"
        assert torch.isfinite(param.grad).all(), param_name
        assert param.grad.abs().sum() > 0, f"{name}: parameter {param_name} got an all-zero gradient"


@pytest.mark.parametrize("name", METRICS)
def test_output_dtype_and_device_follow_the_inputs(name, episode, build, run_metric):
    ep = episode(dtype=torch.float64)
    logits = run_metric(build(name).double(), ep)
    assert logits.dtype == torch.float64
    assert logits.device == ep.query.device


@pytest.mark.parametrize("name", METRICS)
@pytest.mark.parametrize(("n_frames", "n_shot"), [(1, 1), (1, 3), (4, 1)])
def test_single_frame_and_single_shot_episodes_work(name, n_frames, n_shot, episode, build, run_metric):
    ep = episode(n_frames=n_frames, n_shot=n_shot)
    logits = run_metric(build(name, n_frames=n_frames), ep)
    assert logits.shape == (ep.query.shape[0], ep.support.shape[0])
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", METRICS)
def test_permuting_queries_permutes_rows(name, episode, build, run_metric):
    ep = episode(dtype=torch.float64)
    metric = build(name).double()  # float64: the invariance is exact math, not rounding luck
    perm = torch.tensor([2, 0, 3, 1])
    permuted = type(ep)(ep.support, ep.query[perm], ep.support_text, ep.query_text[perm], ep.query_labels[perm])
    torch.testing.assert_close(run_metric(metric, permuted), run_metric(metric, ep)[perm])


@pytest.mark.parametrize("name", METRICS)
def test_permuting_classes_permutes_columns(name, episode, build, run_metric):
    ep = episode(dtype=torch.float64)
    metric = build(name).double()  # float64: the invariance is exact math, not rounding luck
    perm = torch.tensor([2, 0, 1])
    permuted = type(ep)(ep.support[perm], ep.query, ep.support_text[perm], ep.query_text, ep.query_labels)
    torch.testing.assert_close(run_metric(metric, permuted), run_metric(metric, ep)[:, perm])


@pytest.mark.parametrize("name", METRICS)
def test_shot_order_does_not_matter(name, episode, build, run_metric):
    ep = episode(n_shot=3, dtype=torch.float64)
    metric = build(name).double()  # float64: the invariance is exact math, not rounding luck
    perm = torch.tensor([2, 0, 1])
    permuted = type(ep)(ep.support[:, perm], ep.query, ep.support_text[:, perm], ep.query_text, ep.query_labels)
    torch.testing.assert_close(run_metric(metric, permuted), run_metric(metric, ep))


@pytest.mark.parametrize("name", METRICS)
@pytest.mark.parametrize("n_shot", [1, 3])
def test_query_equal_to_a_support_video_wins_its_class(name, n_shot, episode, build, run_metric):
    ep = episode(n_way=5, n_shot=n_shot, n_query=5, dim=32, n_frames=6)
    # Query i is a copy of shot 0 of class (i + 2) mod 5, text included.
    target = (torch.arange(5) + 2) % 5
    copied = type(ep)(
        ep.support, ep.support[target, 0].clone(), ep.support_text, ep.support_text[target, 0].clone(), target
    )
    logits = run_metric(build(name, dim=32, n_frames=6), copied)
    assert torch.equal(logits.argmax(-1), target)


@pytest.mark.parametrize("name", VISUAL_ONLY)
def test_visual_only_metrics_accept_and_ignore_text(name, episode, build):
    metric = build(name)
    ep = episode()
    plain = metric(ep.support, ep.query)
    with_text = metric(ep.support, ep.query, support_text=ep.support_text, query_text=ep.query_text)
    torch.testing.assert_close(plain, with_text)


@pytest.mark.parametrize("name", METRICS)
@pytest.mark.parametrize(
    ("support_shape", "query_shape", "message"),
    [
        ((6, 5, 8), (4, 5, 8), r"support must be \[N, K, T, D\].*\[6, 5, 8\]"),
        ((3, 2, 5, 8), (4, 8), r"query must be \[Q, T, D\].*\[4, 8\]"),
        ((3, 2, 5, 8), (4, 5, 7), r"feature width D differs.*\[3, 2, 5, 8\].*\[4, 5, 7\]"),
        ((3, 0, 5, 8), (4, 5, 8), r"K \(shots\) = 0"),
        ((0, 2, 5, 8), (4, 5, 8), r"N \(ways\) = 0"),
        ((3, 2, 5, 8), (0, 5, 8), r"Q \(queries\) = 0"),
    ],
)
def test_bad_shapes_raise_value_error_naming_the_shapes(name, support_shape, query_shape, message, build):
    metric = build(name)
    kwargs = {}
    if fsar_metric.metric_capabilities(name).uses_text:
        kwargs = {"support_text": torch.randn(*support_shape[:2], 8), "query_text": torch.randn(query_shape[0], 8)}
    with pytest.raises(ValueError, match=message):
        metric(torch.randn(*support_shape), torch.randn(*query_shape), **kwargs)


@pytest.mark.parametrize("name", METRICS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_input_raises_when_checking_is_on(name, bad, episode, build, run_metric):
    ep = episode()
    ep.query[1, 2, 3] = bad
    with pytest.raises(ValueError, match=r"non-finite input: query \[4, 5, 8\] \(1 non-finite values\)"):
        run_metric(build(name, check_finite=True), ep)


@pytest.mark.parametrize("name", METRICS)
def test_integer_features_are_refused(name, build):
    with pytest.raises(ValueError, match="floating point"):
        build(name)(torch.ones(3, 2, 5, 8, dtype=torch.long), torch.ones(4, 5, 8, dtype=torch.long))


@pytest.mark.parametrize("name", METRICS)
def test_temperature_divides_the_logits(name, episode, build, run_metric):
    # Part of the contract: every metric can be put on a softmax scale for cross-entropy.
    assert "temperature" in inspect.signature(fsar_metric.get_metric_class(name)).parameters
    ep = episode()
    plain = run_metric(build(name), ep)
    torch.testing.assert_close(run_metric(build(name, temperature=0.5), ep), plain / 0.5)
    with pytest.raises(ValueError, match="temperature"):
        build(name, temperature=0.0)


# --- Declared capabilities (fsar_metric.metric_capabilities) agree with what the metric does. ---


def _fsar_episode(ep, **extra):
    return fsar_metric.Episode(
        ep.support, ep.query, ep.support_text, ep.query_text, query_labels=ep.query_labels, **extra
    )


@pytest.mark.parametrize("name", METRICS)
def test_declared_text_use_matches_whether_text_changes_the_logits(name, episode, build):
    metric = build(name).double()
    ep = episode(dtype=torch.float64)
    other = episode(dtype=torch.float64, seed=1)  # same visual shapes, different text
    kwargs = {"support_text": ep.support_text, "query_text": ep.query_text}
    changed = {"support_text": other.support_text, "query_text": other.query_text}
    a = metric(ep.support, ep.query, **kwargs)
    b = metric(ep.support, ep.query, **changed)
    if fsar_metric.metric_capabilities(name).uses_text:
        assert not torch.allclose(a, b), f"{name} is declared uses_text but ignores the text"
    else:
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", METRICS)
def test_declared_label_free_support_text_reaches_the_metric_only_when_declared(name, episode, build):
    metric = build(name).double()
    ep = episode(dtype=torch.float64)
    free = episode(dtype=torch.float64, seed=2).support_text
    with_free = fsar_metric.score_episode(metric, _fsar_episode(ep, support_text_free=free))
    without = fsar_metric.score_episode(metric, _fsar_episode(ep))
    if fsar_metric.metric_capabilities(name).uses_label_free_support:
        assert not torch.allclose(with_free, without), f"{name} declares uses_label_free_support but ignores it"
    else:
        torch.testing.assert_close(with_free, without)


@pytest.mark.parametrize("name", METRICS)
def test_declared_per_video_pooling_agrees_with_forward(name, episode, build):
    metric = build(name).double()
    pooled = fsar_metric.metric_capabilities(name).pools_per_video
    assert isinstance(metric, fsar_metric.PoolsPerVideo) == pooled
    if not pooled:
        return
    ep = episode(n_shot=2, dtype=torch.float64)
    n_way, n_shot = ep.support.shape[:2]
    visual = torch.cat([ep.support.flatten(0, 1), ep.query])  # [N*K + Q, T, D]
    label_aware = torch.cat([ep.support_text.flatten(0, 1), episode(dtype=torch.float64, seed=3).query_text])
    label_free = torch.cat([episode(dtype=torch.float64, seed=4).support_text.flatten(0, 1), ep.query_text])
    support_idx = torch.arange(n_way * n_shot).reshape(n_way, n_shot)
    query_idx = torch.arange(n_way * n_shot, visual.shape[0])
    with torch.no_grad():
        fast = metric.score_pool(metric.encode_pool(visual, label_aware, label_free), support_idx, query_idx)
        full = fsar_metric.score_episode(
            metric,
            fsar_metric.Episode(
                visual[support_idx],
                visual[query_idx],
                label_aware[support_idx],
                label_free[query_idx],
                support_text_free=label_free[support_idx],
            ),
        )
    torch.testing.assert_close(fast, full)


@pytest.mark.parametrize("name", METRICS)
def test_declared_own_losses_replace_episode_cross_entropy(name, episode, build):
    metric = build(name)  # eval mode: no dropout, so two calls agree
    owns = fsar_metric.metric_capabilities(name).owns_losses
    assert isinstance(metric, fsar_metric.OwnsLosses) == owns
    ep = _fsar_episode(episode())
    losses = fsar_metric.episode_losses(metric, ep)
    assert losses
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    if owns:
        own = metric.losses(ep)
        assert set(losses) == set(own)
        for key, value in own.items():
            torch.testing.assert_close(losses[key], value)
    else:
        logits = fsar_metric.score_episode(metric, ep)
        assert set(losses) == {"episode_ce"}
        torch.testing.assert_close(losses["episode_ce"], torch.nn.functional.cross_entropy(logits, ep.query_labels))


@pytest.mark.parametrize("name", METRICS)
def test_the_input_width_is_in_dim_for_every_metric_that_takes_one(name, episode, build):
    ep = episode()  # width 8
    if fsar_metric.metric_spec(name).takes_in_dim:
        run = build(name, dim=16)  # in_dim = 16
        with pytest.raises(ValueError, match="16"):
            run(ep.support, ep.query, support_text=ep.support_text, query_text=ep.query_text)
    else:
        with pytest.raises(ValueError, match=r"\['in_dim'\]"):
            fsar_metric.create_metric(name, in_dim=8)
