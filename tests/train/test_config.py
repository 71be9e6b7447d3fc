"""Config presets, strict dotted overrides, the saved config and run-folder checks."""

from __future__ import annotations

import dataclasses

import pytest

from fsar_train import (
    ExperimentConfig,
    apply_overrides,
    build_config,
    config_to_toml,
    list_benchmarks,
    list_presets,
    load_benchmark,
    load_config,
    load_preset,
    prepare_run_dir,
)


def test_presets_are_methods_and_benchmarks_are_data():
    assert list_presets() == [
        "fsar-llava",
        "synthetic-actions",
        "synthetic-actions-llava",
        "synthetic-actions-llava-random",
    ]
    assert list_benchmarks() == ["hmdb51", "kinetics100", "ssv2-full", "ssv2-small", "synthetic-actions", "ucf101"]
    llava, random = load_preset("synthetic-actions-llava"), load_preset("synthetic-actions-llava-random")
    assert llava.features.source == "mllm"
    assert llava.features.model == "builtin:tiny-video-llava-synthetic-actions"
    assert llava.data == load_benchmark("synthetic-actions").data  # the preset names its benchmark
    assert llava.synthetic.videos_per_class == 100
    # The random-weight control differs from the default only in its weights.
    assert dataclasses.replace(random, name=llava.name, features=llava.features) == llava
    assert dataclasses.replace(random.features, random_init_seed=-1) == llava.features
    assert load_benchmark("ssv2-full").data.expected_videos == (67013, 1926, 2857)
    assert load_benchmark("kinetics100").data.key == "youtube_id"
    assert load_preset("synthetic-actions").data.format == "synthetic"


@pytest.mark.parametrize("benchmark", ["ssv2-full", "ssv2-small", "kinetics100", "ucf101", "hmdb51"])
def test_a_benchmark_and_a_model_always_give_the_fsar_llava_head_on_that_models_features(benchmark):
    cfg = build_config(benchmark=benchmark, model="/checkpoints/some-video-mllm")
    assert cfg.data == load_benchmark(benchmark).data
    assert cfg.metric.name == "fsar_llava"
    assert (cfg.features.source, cfg.features.model, cfg.features.backend) == (
        "mllm",
        "/checkpoints/some-video-mllm",
        "auto",  # from the checkpoint's config.json, never from its name
    )
    assert cfg.eval.trained_baselines == ("trx",)
    assert cfg.eval.baselines == ("proto", "otam", "bimhm")
    # The same with the default preset named explicitly: the benchmark replaces the data only.
    named = build_config("synthetic-actions-llava", benchmark=benchmark, model="/checkpoints/m", backend="video-llava")
    assert (named.metric.name, named.features.backend, named.data.benchmark) == ("fsar_llava", "video-llava", benchmark)
    assert named.synthetic == load_benchmark(benchmark).synthetic  # nothing of synthetic-actions' data survives


def test_build_config_without_arguments_is_the_default_run():
    assert build_config() == load_preset("synthetic-actions-llava")
    assert build_config(benchmark="synthetic-actions") == load_preset("synthetic-actions-llava")
    assert build_config(device="cpu").train.device == "cpu"


def test_an_unknown_benchmark_lists_the_shipped_ones():
    with pytest.raises(ValueError, match="unknown benchmark 'ssv3'; valid: hmdb51, kinetics100"):
        build_config(benchmark="ssv3")


def test_overrides_parse_typed_values_and_promote_int_to_float():
    cfg = apply_overrides(
        ExperimentConfig(),
        ["train.lr=3e-4", "train.weight_decay=0", "eval.shots=[1, 3, 5]", "data.strict=true", "metric.name=otam"],
    )
    assert cfg.train.lr == 3e-4
    assert cfg.train.weight_decay == 0.0
    assert isinstance(cfg.train.weight_decay, float)
    assert cfg.eval.shots == (1, 3, 5)
    assert cfg.data.strict is True
    assert cfg.metric.name == "otam"


def test_overrides_reject_an_unknown_key_and_suggest_the_close_one():
    with pytest.raises(ValueError, match=r"unknown config key 'train.lrr' \(did you mean 'lr'\?\); train has: steps"):
        apply_overrides(ExperimentConfig(), ["train.lrr=1e-3"])
    with pytest.raises(ValueError, match="unknown config key 'optim'"):
        apply_overrides(ExperimentConfig(), ["optim.lr=1"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.lr=fast", r"'train.lr' expects float, got 'fast' \(str\)"),
        ("train.steps=1.5", r"'train.steps' expects int, got 1.5 \(float\)"),
        ("episodes.n_shot=true", r"'episodes.n_shot' expects int, got True \(bool\)"),
        ("data.strict=1", r"'data.strict' expects bool, got 1 \(int\)"),
        ("data.format=zip", r"'data.format' must be one of 'synthetic', 'split_files', 'folders', 'csv'"),
        ("eval.shots=[1, 'x']", r"'eval.shots\[1\]' expects int"),
        ("train=1", "is a section"),
        ("train.lr", "must look like section.key=value"),
    ],
)
def test_overrides_reject_wrong_types(override, message):
    with pytest.raises(ValueError, match=message):
        apply_overrides(ExperimentConfig(), [override])


def test_dict_fields_take_new_entries_by_dotted_key():
    cfg = apply_overrides(ExperimentConfig(), ["metric.options.key_dim=64", "train.loss_weights.modality_ce=0.5"])
    assert cfg.metric.options == {"key_dim": 64}
    assert cfg.train.loss_weights == {"modality_ce": 0.5}
    with pytest.raises(ValueError, match=r"'train.loss_weights.x' expects float"):
        apply_overrides(cfg, ["train.loss_weights.x=big"])


def test_a_table_inside_metric_options_takes_dotted_keys_and_reads_back(tmp_path):
    cfg = apply_overrides(
        ExperimentConfig(),
        ["metric.options.losses.base_class_ce=1.0", "metric.options.losses.base_class_tau=0.2",
         "metric.options.mpmm.cues=['visual', 'cross']", "metric.options.dim=32"],
    )  # fmt: skip
    assert cfg.metric.options == {
        "losses": {"base_class_ce": 1.0, "base_class_tau": 0.2},
        "mpmm": {"cues": ["visual", "cross"]},
        "dim": 32,
    }
    path = tmp_path / "config.toml"
    path.write_text(config_to_toml(cfg))
    assert load_config(path) == cfg
    with pytest.raises(ValueError, match=r"'metric.options.dim.x': 'dim' holds 32, not a table"):
        apply_overrides(cfg, ["metric.options.dim.x=1"])


def test_unknown_preset_lists_the_shipped_ones():
    with pytest.raises(ValueError, match="unknown preset 'ssv3'; presets: fsar-llava, synthetic-actions"):
        load_preset("ssv3")


def test_saved_config_reads_back_equal(tmp_path):
    cfg = load_preset("synthetic-actions", ["metric.options.cardinalities=[2, 3]", 'data.root=a "quoted" path'])
    path = tmp_path / "config.toml"
    path.write_text(config_to_toml(cfg))
    assert load_config(path) == cfg


def test_a_run_folder_made_with_another_config_is_refused(tmp_path):
    cfg = ExperimentConfig()
    prepare_run_dir(tmp_path / "run", cfg)
    assert load_config(tmp_path / "run" / "config.toml") == cfg
    prepare_run_dir(tmp_path / "run", apply_overrides(cfg, ["eval.episodes=100"]))  # eval settings may change
    (tmp_path / "run" / "baselines" / "trx").mkdir(parents=True)
    (tmp_path / "run" / "baselines" / "trx" / "last.pt").write_bytes(b"a checkpoint")
    with pytest.raises(ValueError, match=r"made with a different config.*train.lr: 0.0001 -> 0.001"):
        prepare_run_dir(tmp_path / "run", apply_overrides(cfg, ["train.lr=1e-3"]))
    assert load_config(tmp_path / "run" / "config.toml").train.lr == 1e-4


def test_a_folder_whose_run_produced_nothing_takes_the_corrected_config(tmp_path):
    """A first run that failed before training (too few videos, a typo) must not block the fixed command."""
    run = tmp_path / "run"
    prepare_run_dir(run, apply_overrides(ExperimentConfig(), ["episodes.n_shot=50"]))
    (run / "val_episodes.json").write_text("{}")  # sampled for 50 shots before the failure
    fixed = apply_overrides(ExperimentConfig(), ["episodes.n_shot=5"])
    prepare_run_dir(run, fixed)
    assert load_config(run / "config.toml") == fixed
    assert not (run / "val_episodes.json").exists()


def test_an_unchanged_config_is_not_rewritten(tmp_path):
    """Showing a finished run again needs no write access to its folder."""
    cfg = ExperimentConfig()
    path = prepare_run_dir(tmp_path / "run", cfg) / "config.toml"
    path.chmod(0o444)
    (tmp_path / "run").chmod(0o555)
    try:
        before = path.stat().st_mtime_ns
        prepare_run_dir(tmp_path / "run", cfg)
        assert path.stat().st_mtime_ns == before
    finally:
        (tmp_path / "run").chmod(0o755)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.steps=-5", "train.steps must be >= 1, got -5"),
        ("train.lr=-1", r"train.lr must be > 0, got -1.0"),
        ("train.final_lr_ratio=2.0", r"train.final_lr_ratio must be >= 0 and <= 1, got 2.0"),
        ("train.val_train_classes=-1", "train.val_train_classes must be >= 0, got -1"),
        ("episodes.n_way=1", "episodes.n_way must be >= 2, got 1"),
        ("episodes.n_shot=0", "episodes.n_shot must be >= 1, got 0"),
        ("eval.shots=[1, 0]", r"eval.shots must be >= 1, got \(1, 0\)"),
        ("eval.episodes=0", "eval.episodes must be >= 1, got 0"),
        ("features.batch_size=0", "features.batch_size must be >= 1, got 0"),
        ("synthetic.size=33", r"synthetic.size must be even \(yuv420p\), got 33"),
        ("synthetic.videos_per_class=0", "synthetic.videos_per_class must be >= 1, got 0"),
    ],
)
def test_out_of_range_values_are_refused_when_the_config_is_built(override, message):
    """Before any data loads and before a run folder's config.toml is written."""
    with pytest.raises(ValueError, match=message):
        apply_overrides(ExperimentConfig(), [override])


def test_a_bad_value_leaves_no_run_folder_behind(tmp_path, capsys):
    from fsar_train.cli import main

    run_dir = tmp_path / "run"
    status = main(["run", "--run-dir", str(run_dir), "-o", "train.lr=-1"])
    assert status != 0
    assert "train.lr must be > 0, got -1.0" in " ".join(capsys.readouterr().err.split())
    assert not run_dir.exists()


def test_display_settings_do_not_make_a_different_run(tmp_path):
    """features.progress and train.log_every change what a run shows, not what it computes."""
    cfg = ExperimentConfig()
    path = prepare_run_dir(tmp_path / "run", cfg) / "config.toml"
    (tmp_path / "run" / "last.pt").write_bytes(b"a checkpoint")
    before = path.read_text()
    prepare_run_dir(tmp_path / "run", apply_overrides(cfg, ["features.progress=false", "train.log_every=1"]))
    assert path.read_text() == before  # accepted, and the saved file is left as it was
    with pytest.raises(ValueError, match="different config"):
        prepare_run_dir(tmp_path / "run", apply_overrides(cfg, ["features.layers=1"]))
