"""The "mllm" feature source: synthetic-actions → tiny Video-LLaVA features → a trained FSAR-LLaVA head."""

from __future__ import annotations

import pytest
import torch

from fsar_features import FeatureCache
from fsar_metric import METRICS, register_metric
from fsar_train import (
    CachedFeatures,
    EpisodeSampler,
    TensorFeatures,
    apply_overrides,
    build_episode,
    load_preset,
    load_sources,
    mllm_cache_dir,
    run_experiment,
)


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    return apply_overrides(
        load_preset("synthetic-actions-llava"),
        [
            f"data.root='{root}'",
            "synthetic.videos_per_class=4",
            "synthetic.n_frames=8",
            "synthetic.size=32",
            "features.progress=false",
            "train.steps=3",
            "train.episodes_per_step=2",
            "train.val_every=3",
            "train.val_episodes=10",
            "train.checkpoint_every=3",
            "episodes.train_queries=1",
            "eval.episodes=20",
        ],
    )


def test_the_mllm_source_extracts_each_split_once_into_one_cache(tiny_config, tmp_path):
    sources, splits = load_sources(tiny_config, tmp_path, progress=False)
    cache = FeatureCache.open(mllm_cache_dir(tiny_config))
    assert set(cache.video_ids) == {v for s in splits.values() for v in s.video_ids}
    test = sources["test"]
    assert isinstance(test, CachedFeatures)
    assert test.text_prompts == frozenset({"label_aware", "label_free"})
    assert test.support_prompt == "label_aware"
    assert test.class_names == list(splits["test"].class_names)
    visual = test.visual([0, 1])
    assert visual.shape == (2, 8, cache.visual_dim)
    assert cache.visual_dim == 16 * cache.text_dim  # the preset's 4 x 4 grid of patch states
    assert test.text([0, 1], "label_aware").shape == (2, cache.recipe.dim)
    # The label-aware text of a video differs from its label-free text.
    assert not torch.equal(test.text([0], "label_aware"), test.text([0], "label_free"))
    # A second load extracts nothing new and reads the same features.
    again, _ = load_sources(tiny_config, tmp_path, progress=False)
    torch.testing.assert_close(again["test"].visual([0, 1]), visual)
    indices = EpisodeSampler(test.labels, n_way=3, n_shot=1, n_query=1, seed=0).episode(0)
    episode = build_episode(test, indices, with_text=True)
    assert episode.support_text is not None
    assert episode.support_text_free is not None


def test_the_llava_preset_trains_and_evaluates_the_head_on_mllm_features(tiny_config, tmp_path):
    result = run_experiment(tiny_config, tmp_path / "run", progress=False)
    assert list(result.results[1]) == [
        "fsar_llava",
        "fsar_llava (visual only)",
        "fsar_llava (text only)",
        "fsar_llava (with cross)",
        "proto",
        "otam",
        "bimhm",
        "trx",
    ]
    assert result.results[1]["fsar_llava"].uses_class_names
    assert not result.results[1]["otam"].uses_class_names
    assert not result.results[1]["trx"].uses_class_names
    assert (tmp_path / "run" / "results.json").exists()
    assert (tmp_path / "run" / "best.pt").exists()
    assert (tmp_path / "run" / "baselines" / "trx" / "best.pt").exists()
    # Running again with the same config reads the results back; a changed eval setting re-evaluates.
    again = run_experiment(tiny_config, tmp_path / "run", progress=False)
    assert again.reused
    assert again.results[1]["trx"].episode_accuracies == result.results[1]["trx"].episode_accuracies
    fewer = run_experiment(apply_overrides(tiny_config, ["eval.episodes=10"]), tmp_path / "run", progress=False)
    assert not fewer.reused
    assert fewer.results[1]["trx"].n_episodes == 10


def test_the_label_free_support_prompt_does_not_count_as_using_class_names(tiny_config, tmp_path):
    free = apply_overrides(tiny_config, ["features.support_prompt='label_free'"])
    sources, _ = load_sources(free, tmp_path, progress=False)
    assert sources["test"].support_prompt == "label_free"
    from fsar_train import build_metric, feature_dim, uses_class_names

    assert not uses_class_names(build_metric(free, feature_dim(sources["test"])), sources["test"])


def test_the_heads_pool_path_gives_the_same_predictions_as_scoring_each_episode(tiny_config, tmp_path):
    from fsar_train import EpisodeList, build_metric, feature_dim, run_episodes, text_dim

    sources, _ = load_sources(tiny_config, tmp_path, progress=False)
    test = sources["test"]
    torch.manual_seed(0)
    head = build_metric(tiny_config, feature_dim(test), text_dim(test)).eval()
    episodes = EpisodeList.sample(test.labels, test.video_ids, count=20, n_way=5, n_shot=1, n_query=1, seed=0)

    @register_metric("test_episode_only", uses_text=True, uses_label_free_support=True)
    class EpisodeOnly(torch.nn.Module):  # the same head, not pools_per_video: the per-episode path
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *args, **kwargs):
            return self.inner(*args, **kwargs)

    pooled = run_episodes(head, test, episodes)
    try:
        per_episode = run_episodes(EpisodeOnly(head), test, episodes)
    finally:
        METRICS.unregister("test_episode_only")
    assert (pooled[2] == per_episode[2]).all()


def test_text_is_named_by_its_prompt_whatever_the_support_prompt(tiny_config, tmp_path):
    sources, _ = load_sources(tiny_config, tmp_path, progress=False)
    free = apply_overrides(tiny_config, ["features.support_prompt='label_free'"])
    assert mllm_cache_dir(free) == mllm_cache_dir(tiny_config)  # one cache serves both
    ablated, _ = load_sources(free, tmp_path / "free", progress=False)
    label_aware, label_free = sources["test"], ablated["test"]
    cache = FeatureCache.open(mllm_cache_dir(tiny_config))
    ids = [label_free.video_ids[p] for p in (0, 3)]
    assert label_free.support_prompt == "label_free"
    assert label_free.text_prompts == frozenset({"label_aware", "label_free"})
    # "label_aware" is always the text made with the class name, "label_free" always the other one.
    assert torch.equal(label_free.text([0, 3], "label_aware"), cache.text(ids, role="support"))
    assert torch.equal(label_free.text([0, 3], "label_free"), cache.text(ids, role="query"))
    assert torch.equal(label_free.text([0, 3], "label_aware"), label_aware.text([0, 3], "label_aware"))
    torch.testing.assert_close(label_free.visual([0, 3]), label_aware.visual([0, 3]))
    with pytest.raises(ValueError, match=r"support_prompt must be one of \['label_aware', 'label_free'\], got 'label'"):
        CachedFeatures(cache, [], [], [], support_prompt="label")  # type: ignore[arg-type]
    with pytest.raises(KeyError, match=r"no 'label' text features; this source holds: \['label_aware', 'label_free'\]"):
        label_aware.text([0], "label")  # type: ignore[arg-type]


def test_episodes_carry_the_same_text_as_before_in_the_default_run_and_the_label_free_ablation(tiny_config, tmp_path):
    """Before the text was named by its prompt, episodes read the cache roles: support_text the
    "support" role (the "query" role under the ablation), query_text and support_text_free the
    "query" role. The same tensors must reach the metrics."""
    sources, _ = load_sources(tiny_config, tmp_path, progress=False)
    free = apply_overrides(tiny_config, ["features.support_prompt='label_free'"])
    ablated, _ = load_sources(free, tmp_path / "free", progress=False)
    cache = FeatureCache.open(mllm_cache_dir(tiny_config))
    for source, support_role in ((sources["test"], "support"), (ablated["test"], "query")):
        copy = TensorFeatures(
            source.visual(range(len(source.labels))),
            source.labels,
            video_ids=source.video_ids,
            label_aware_text=source.text(range(len(source.labels)), "label_aware"),
            label_free_text=source.text(range(len(source.labels)), "label_free"),
            support_prompt=source.support_prompt,
        )
        for index in range(3):
            indices = EpisodeSampler(source.labels, n_way=3, n_shot=2, n_query=1, seed=index).episode(index)
            support_ids = [source.video_ids[p] for shots in indices.support for p in shots]
            query_ids = [source.video_ids[p] for p in indices.query]
            expected = {
                "support_text": cache.text(support_ids, role=support_role).float().reshape(3, 2, -1),
                "query_text": cache.text(query_ids, role="query").float(),
                "support_text_free": cache.text(support_ids, role="query").float().reshape(3, 2, -1),
            }
            for view in (source, copy):
                episode = build_episode(view, indices, with_text=True)
                for field, tensor in expected.items():
                    assert torch.equal(getattr(episode, field), tensor), (source.support_prompt, field)
                assert torch.equal(episode.support, source.visual([source.video_ids.index(v) for v in support_ids])
                                   .float().reshape(3, 2, *episode.support.shape[2:]))  # fmt: skip


def test_the_default_preset_loads_the_shipped_model_and_the_random_control_its_architecture(tmp_path):
    from fsar_train import builtin_model, list_builtin_models
    from fsar_train._mllm import backend_kwargs

    assert "tiny-video-llava-synthetic-actions" in list_builtin_models()
    folder, model_id = builtin_model("builtin:tiny-video-llava-synthetic-actions")
    assert (folder / "config.json").is_file()
    assert model_id.startswith("builtin:tiny-video-llava-synthetic-actions@")
    assert len(model_id.rsplit("@", 1)[1]) == 12
    default = load_preset("synthetic-actions-llava")
    assert backend_kwargs(default) == {"model": str(folder), "model_id": model_id}
    random = load_preset("synthetic-actions-llava-random")
    assert backend_kwargs(random) == {"model": str(folder), "model_id": model_id, "random_init_seed": 0}
    # Different models never share a cache folder.
    digest = model_id.rsplit("@", 1)[1]
    decoding = "-layer1-centred-grid4"  # the preset's decoding (docs/results.md)
    assert mllm_cache_dir(default).name == f"mllm-video-llava-tiny-video-llava-synthetic-actions-{digest}{decoding}"
    assert (
        mllm_cache_dir(random).name == f"mllm-video-llava-tiny-video-llava-synthetic-actions-{digest}-random0{decoding}"
    )
    hub = apply_overrides(default, ["features.model='LanguageBind/Video-LLaVA-7B-hf'", "features.backend=video-llava"])
    assert mllm_cache_dir(hub).name == f"mllm-video-llava-Video-LLaVA-7B-hf{decoding}"
    with pytest.raises(ValueError, match="unknown builtin model 'nope'; shipped: tiny-video-llava-synthetic-actions"):
        builtin_model("builtin:nope")
    with pytest.raises(ValueError, match=r"unknown builtin model '\.\./"):
        builtin_model("builtin:../../../../x")  # a name, never a path out of the package


def test_the_weights_digest_is_computed_once_and_follows_a_rewritten_file(tmp_path, monkeypatch):
    import hashlib as real_hashlib

    from fsar_train import _mllm

    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"first weights")
    calls = []
    sha256 = real_hashlib.sha256

    def counting_sha256(data):
        calls.append(len(data))
        return sha256(data)

    monkeypatch.setattr(_mllm.hashlib, "sha256", counting_sha256)
    _mllm._weights_digest.cache_clear()
    stat = weights.stat()
    first = [_mllm._weights_digest(str(weights), stat.st_size, stat.st_mtime_ns) for _ in range(5)]
    assert len(set(first)) == 1
    assert len(calls) == 1  # hashed once for five asks
    assert first[0] == sha256(b"first weights").hexdigest()[:12]
    weights.write_bytes(b"other weights, longer")
    stat = weights.stat()
    assert _mllm._weights_digest(str(weights), stat.st_size, stat.st_mtime_ns) != first[0]
    assert len(calls) == 2


def test_the_backend_comes_from_the_checkpoints_config_not_its_name(tmp_path):
    from fsar_train import resolve_backend

    default = load_preset("synthetic-actions-llava")
    assert default.features.backend == "auto"
    assert resolve_backend(default) == "video-llava"  # model_type video_llava in the shipped config.json
    missing = apply_overrides(default, [f"features.model='{tmp_path / 'LLaVA-NeXT-Video-looking-name'}'"])
    with pytest.raises(FileNotFoundError):
        resolve_backend(missing)
    forced = apply_overrides(missing, ["features.backend='llava-next-video'"])
    assert resolve_backend(forced) == "llava-next-video"


def test_each_decoding_gets_its_own_cache_folder_and_the_default_keeps_its_name():
    from fsar_train import builtin_model

    default = load_preset(
        "synthetic-actions-llava",
        ["features.layers=-1", "features.temporal_centring=false", "features.visual_pooling=mean"],
    )
    plain = mllm_cache_dir(default)
    assert plain.name.endswith(builtin_model(default.features.model)[1].rsplit("@", 1)[1])  # no decoding suffix
    decoded = apply_overrides(
        default,
        [
            "features.layers=1",
            "features.temporal_centring=true",
            "features.visual_pooling=grid4",
            "features.support_text_pooling=label",
            "features.query_text_pooling=mean",
        ],
    )
    assert mllm_cache_dir(decoded).name == plain.name + "-layer1-centred-grid4-support_label-query_mean"
    assert mllm_cache_dir(apply_overrides(default, ["features.layers=1"])).name == plain.name + "-layer1"
