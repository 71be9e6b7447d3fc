"""The fsar command line: help, the main job on a minimal configuration, the store commands, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fsar_apps.cli import main

TINY = [
    "-o", "synthetic.videos_per_class=6",
    "-o", "synthetic.n_frames=8",
    "-o", "synthetic.size=32",
    "-o", "train.steps=2",
    "-o", "train.episodes_per_step=2",
    "-o", "train.val_every=2",
    "-o", "train.val_episodes=10",
    "-o", "train.checkpoint_every=2",
    "-o", "episodes.train_queries=1",
    "-o", "eval.episodes=30",
    "-o", "features.progress=false",
]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One minimal run of the whole main job (few classes' videos, few steps, few episodes)."""
    root = tmp_path_factory.mktemp("cli")
    run_dir = root / "run"
    status = main(["--run-dir", str(run_dir), "-o", f"data.root='{root / 'data'}'", *TINY])
    return status, run_dir, root


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["run"],
        ["data"],
        ["extract"],
        ["train"],
        ["eval"],
        ["presets"],
        ["prompts"],
        ["store"],
        ["store", "build"],
        ["store", "add"],
        ["store", "query"],
        ["store", "list"],
        ["store", "remove"],
        ["store", "rename"],
        ["store", "restore"],
        ["store", "versions"],
    ],
)
def test_every_command_has_help(command, capsys):
    assert main([*command, "--help"]) == 0
    assert "Usage" in capsys.readouterr().out


def test_the_main_job_trains_evaluates_prints_the_table_and_builds_the_store(tiny_run, capsys):
    status, run_dir, _ = tiny_run
    assert status == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    methods = set(summary["1"])
    assert {"fsar_llava", "proto", "otam", "bimhm", "trx", "fsar_llava (visual only)"} <= methods
    assert summary["1"]["fsar_llava"]["n_episodes"] == 30
    assert (run_dir / "results.json").exists()
    assert (run_dir / "config.toml").exists()
    assert (run_dir / "store").is_dir()


def test_running_again_prints_the_stored_results_without_re_evaluating(tiny_run, capsys):
    _, run_dir, root = tiny_run
    capsys.readouterr()
    assert main(["--run-dir", str(run_dir), "-o", f"data.root='{root / 'data'}'", *TINY]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "results of the earlier run" in out
    assert "fsar_llava" in out


def test_store_commands_on_the_runs_store(tiny_run, capsys):
    _, run_dir, root = tiny_run
    assert main(["store", "list", "--run-dir", str(run_dir)]) == 0
    listing = capsys.readouterr().out
    assert "10 actions" in listing
    videos = sorted((root / "data").rglob("*.mp4"))
    assert main(["store", "add", "my action", *map(str, videos[:2]), "--run-dir", str(run_dir)]) == 0
    assert main(["store", "query", str(videos[0]), "--run-dir", str(run_dir), "-k", "3"]) == 0
    out = capsys.readouterr().out
    assert "added 'my action' from 2 videos" in out
    assert "rank" in out
    assert main(["store", "rename", "my action", "waving", "--run-dir", str(run_dir)]) == 0
    assert main(["store", "remove", "waving", "--run-dir", str(run_dir)]) == 0
    assert main(["store", "versions", "--run-dir", str(run_dir)]) == 0
    assert main(["store", "restore", "2", "--run-dir", str(run_dir)]) == 0


def test_a_run_folder_made_with_another_config_is_refused(tiny_run, capsys):
    _, run_dir, root = tiny_run
    status = main(
        ["train", "--run-dir", str(run_dir), "-o", f"data.root='{root / 'data'}'", *TINY, "-o", "train.lr=0.5"]
    )
    assert status == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--benchmark", "ssv3"], "unknown benchmark 'ssv3'; valid: hmdb51, kinetics100"),
        (["--preset", "nope", "data"], "unknown preset 'nope'; valid:"),
        (
            ["--benchmark", "ucf101", "--data-root", "/nonexistent/ucf", "data"],
            "the data root /nonexistent/ucf does not exist",
        ),
        (["-o", "train.stepz=3", "data"], "train.stepz"),
        (["prompts", "--family", "gpt"], "unknown MLLM family 'gpt'"),
        (["store", "list", "--run-dir", "/nonexistent/run"], "no prototype store at /nonexistent/run/store"),
        (["store", "query", "x.mp4", "--run-dir", "/nonexistent/run"], "is not a run folder"),
    ],
)
def test_user_errors_are_one_sentence_and_a_non_zero_status(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in " ".join(err.split())
    assert "Traceback" not in err


def test_a_model_that_is_not_on_disk_while_offline_is_a_clear_error(tmp_path, capsys):
    from fsar_train import SyntheticConfig, generate_synthetic_actions

    data = tmp_path / "data"
    generate_synthetic_actions(
        data, SyntheticConfig(videos_per_class=2, n_frames=8, size=32, workers=1), progress=False
    )
    status = main(
        [
            "--run-dir",
            str(tmp_path / "run"),
            "--model",
            str(tmp_path / "no-such-model"),
            "extract",
            "-o",
            f"data.root='{data}'",
            "-o",
            "synthetic.videos_per_class=2",
            "-o",
            "synthetic.n_frames=8",
            "-o",
            "synthetic.size=32",
        ]
    )
    assert status == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "no-such-model" in err
    assert "Traceback" not in err


def test_apps_train_is_a_directory_uv_can_run():
    main_file = Path(__file__).parents[2] / "apps" / "train" / "__main__.py"
    assert "from fsar_apps.cli import main" in main_file.read_text()
