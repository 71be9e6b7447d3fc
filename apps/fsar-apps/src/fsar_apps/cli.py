"""The fsar command line: ``uv run apps/train`` (the main job) and ``fsar <command>``.

With no arguments it runs the whole method on the embedded default, offline: synthetic-actions
(generated if missing) → tiny Video-LLaVA features (both prompts, cached) → the FSAR-LLaVA head
trained on meta-train with meta-val selection → 5-way 1- and 5-shot evaluation on 10,000 fixed
meta-test episodes against the baselines (proto, otam, bimhm, a trained trx) and test-time
ablations of the head → one results table → a prototype store of the meta-test actions.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from fsar_apps._common import DEFAULT_RUN, console, err_console
from fsar_apps._store_cli import store_app
from fsar_metric.errors import FsarError, InputError, as_input_error

__all__ = ["app", "build_config", "main", "run_main_job"]

app = typer.Typer(
    add_completion=False,
    no_args_is_help=False,
    invoke_without_command=True,
    help="fsar: few-shot action recognition with multimodal-LLM features (FSAR-LLaVA, fsar reconstruction).",
)
app.add_typer(store_app, name="store")


# ----------------------------------------------------------------------------- configuration
PresetOpt = Annotated[
    str | None,
    typer.Option(
        "--preset", help="the method (`fsar presets`); default synthetic-actions-llava, or fsar-llava with --benchmark"
    ),
]
RunDirOpt = Annotated[Path, typer.Option("--run-dir", help="the run folder (config, checkpoints, results, store)")]
BenchmarkOpt = Annotated[
    str | None,
    typer.Option(
        "--benchmark", help="the data: ssv2-full, ssv2-small, kinetics100, ucf101, hmdb51 or synthetic-actions"
    ),
]
DataRootOpt = Annotated[Path | None, typer.Option("--data-root", help="where the videos are")]
SplitDirOpt = Annotated[
    Path | None, typer.Option("--split-dir", help="folder with the split lists (TRX or CLIP-FSAR layout)")
]
ModelOpt = Annotated[
    str | None,
    typer.Option("--model", help="an MLLM checkpoint folder or hub id, e.g. LanguageBind/Video-LLaVA-7B-hf"),
]
BackendOpt = Annotated[
    str | None, typer.Option("--backend", help="override the backend read from the checkpoint's config.json")
]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda, cuda:1, … (every stage)")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", "-o", help="config override KEY=VALUE (repeatable)")]
SubPresetOpt = Annotated[str | None, typer.Option("--preset", help="the method (`fsar presets`)")]
SubRunDirOpt = Annotated[Path | None, typer.Option("--run-dir", help="the run folder")]


def build_config(
    preset: str | None = None,
    *,
    benchmark: str | None = None,
    data_root: Path | None = None,
    split_dir: Path | None = None,
    model: str | None = None,
    backend: str | None = None,
    device: str | None = None,
    overrides: list[str] | None = None,
) -> Any:
    """``fsar_train.build_config`` (data × method × features)."""
    from fsar_train import build_config as compose

    return compose(
        preset,
        benchmark=benchmark,
        data_root=data_root,
        split_dir=split_dir,
        model=model,
        backend=backend,
        device=device,
        overrides=overrides or [],
    )


def _check_data(config: Any) -> None:
    data = config.data
    if data.format == "synthetic":
        return
    root = Path(data.root)
    if not root.is_dir():
        raise InputError(f"the data root {root} does not exist; pass --data-root with the folder holding the videos")
    if data.format == "split_files":
        for split in ("train", "val", "test"):
            listed = getattr(data, f"{split}_list")
            if not listed or not Path(listed).is_file():
                raise InputError(f"the {split} split list {listed or '(not set)'} does not exist; pass --split-dir")


# ----------------------------------------------------------------------------- the main job
def run_main_job(
    config: Any, run_dir: Path, *, with_store: bool = True, force: bool = False, progress: bool = True
) -> Any:
    """The experiment (``fsar_train.run_experiment``), its table, and the prototype store of the
    meta-test actions when the method is the FSAR-LLaVA head on MLLM features."""
    from fsar_train import results_table, run_experiment

    _check_data(config)
    result = run_experiment(config, run_dir, progress=progress, force=force)
    title = f"{config.name}: {config.data.benchmark}, test split, mean ± 95% CI (%)"
    console.print(results_table(result.results, title=title))
    if result.reused:
        console.print(f"results of the earlier run in {run_dir} (same config); --force re-evaluates")
        return result
    if with_store and config.metric.name == "fsar_llava" and config.features.source == "mllm":
        from fsar_apps.store import build_store_from_run

        store = build_store_from_run(run_dir, sources=result.sources)  # the run's sources: no second cache check
        console.print(f"prototype store: {len(store)} meta-test actions in {store.uri} (`fsar store list`)")
    console.print(f"run folder: {run_dir} (results.json, plots, checkpoints)")
    return result


_GLOBAL_OPTIONS = ("preset", "benchmark", "data_root", "split_dir", "model", "backend", "device")


@app.callback()
def _default(
    ctx: typer.Context,
    preset: PresetOpt = None,
    run_dir: RunDirOpt = DEFAULT_RUN,
    benchmark: BenchmarkOpt = None,
    data_root: DataRootOpt = None,
    split_dir: SplitDirOpt = None,
    model: ModelOpt = None,
    backend: BackendOpt = None,
    device: DeviceOpt = None,
    set_: SetOpt = None,
) -> None:
    """Run the main job when no command is given (the options apply to every command)."""
    options = {
        "preset": preset,
        "benchmark": benchmark,
        "data_root": data_root,
        "split_dir": split_dir,
        "model": model,
        "backend": backend,
        "device": device,
    }
    if ctx.invoked_subcommand is not None:
        ctx.obj = {**options, "run_dir": run_dir, "set": set_}
        return
    run_main_job(build_config(**options, overrides=set_), run_dir)


def _config_from(ctx: typer.Context, **local: Any) -> tuple[Any, Path]:
    opts = dict(ctx.obj or {})
    extra = local.pop("set", None)
    opts.update({k: v for k, v in local.items() if v is not None})
    overrides = [*(opts.get("set") or []), *(extra or [])]
    config = build_config(**{k: opts.get(k) for k in _GLOBAL_OPTIONS}, overrides=overrides)
    return config, Path(opts.get("run_dir", DEFAULT_RUN))


@app.command()
def run(
    ctx: typer.Context,
    preset: SubPresetOpt = None,
    run_dir: SubRunDirOpt = None,
    benchmark: BenchmarkOpt = None,
    data_root: DataRootOpt = None,
    split_dir: SplitDirOpt = None,
    model: ModelOpt = None,
    backend: BackendOpt = None,
    device: DeviceOpt = None,
    set_: SetOpt = None,
    trx: Annotated[bool, typer.Option(help="also train and evaluate the trx baseline (eval.trained_baselines)")] = True,
    store: Annotated[bool, typer.Option(help="build the prototype store of the meta-test actions")] = True,
    force: Annotated[bool, typer.Option("--force", help="re-evaluate even if the run folder has results")] = False,
) -> None:
    """The whole job: data, features, training, evaluation, table, store.

    Takes the data and model options here too (``run --model M``), as well as before the command.
    """
    extra = [*(set_ or []), *([] if trx else ["eval.trained_baselines=[]"])]
    config, folder = _config_from(
        ctx,
        preset=preset,
        run_dir=run_dir,
        benchmark=benchmark,
        data_root=data_root,
        split_dir=split_dir,
        model=model,
        backend=backend,
        device=device,
        set=extra,
    )
    run_main_job(config, folder, with_store=store, force=force)


@app.command()
def data(ctx: typer.Context, preset: SubPresetOpt = None, run_dir: SubRunDirOpt = None, set_: SetOpt = None) -> None:
    """Prepare the data: generate synthetic-actions, or match split lists to videos and report what is missing."""
    from fsar_train import load_splits

    config, folder = _config_from(ctx, preset=preset, run_dir=run_dir, set=set_)
    _check_data(config)
    folder.mkdir(parents=True, exist_ok=True)
    splits = load_splits(config, report_dir=folder)
    table = Table(title=f"{config.data.benchmark} splits")
    for column in ("split", "classes", "videos"):
        table.add_column(column)
    for name, split in splits.items():
        table.add_row(name, str(len(split.class_names)), str(len(split.videos)))
    console.print(table)


@app.command()
def extract(ctx: typer.Context, preset: SubPresetOpt = None, run_dir: SubRunDirOpt = None, set_: SetOpt = None) -> None:
    """Extract (or complete) the MLLM feature cache of every split."""
    from fsar_train import load_sources, mllm_cache_dir

    config, folder = _config_from(ctx, preset=preset, run_dir=run_dir, set=set_)
    if config.features.source != "mllm":
        raise InputError(f"features.source is {config.features.source!r}; extraction is for the 'mllm' source")
    _check_data(config)
    folder.mkdir(parents=True, exist_ok=True)
    sources, _ = load_sources(config, folder)
    console.print(
        f"feature cache {mllm_cache_dir(config)}: "
        + ", ".join(f"{n} {len(s.video_ids)} videos" for n, s in sources.items())
    )


@app.command()
def train(ctx: typer.Context, preset: SubPresetOpt = None, run_dir: SubRunDirOpt = None, set_: SetOpt = None) -> None:
    """Train the configured metric (resumes from the run folder's last checkpoint)."""
    from fsar_train import load_sources, prepare_run_dir
    from fsar_train import train as train_metric

    config, folder = _config_from(ctx, preset=preset, run_dir=run_dir, set=set_)
    _check_data(config)
    prepare_run_dir(folder, config)
    sources, _ = load_sources(config, folder)
    result = train_metric(config, sources["train"], sources["val"], folder)
    console.print(f"best meta-val accuracy {result.best_accuracy:.2f}% at step {result.best_step}; {folder}")


@app.command()
def pretrain(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", help="the model folder to write (save_pretrained layout)")],
    preset: SubPresetOpt = None,
    set_: SetOpt = None,
) -> None:
    """Pretrain a tiny Video-LLaVA on synthetic-actions meta-train captions (pretrain.* settings).

    The shipped `builtin:tiny-video-llava-synthetic-actions` was made by this command; its folder's
    pretrain.json records the exact command, seed and held-out metrics.
    """
    from fsar_train import pretrain_table, pretrain_video_llava

    config, _ = _config_from(ctx, preset=preset, set=set_)
    command = "uv run apps/train " + " ".join(sys.argv[1:]) if sys.argv[1:] else "uv run apps/train pretrain"
    done = pretrain_video_llava(config, out, progress=True, command=command)
    console.print(pretrain_table(done))
    console.print(f"model: {done.out_dir} ({done.seconds:.0f} s); loss curve: {done.out_dir / 'loss.png'}")


@app.command()
def compare(
    runs: Annotated[list[str], typer.Argument(help="run folders of the main job, as RUN_DIR or LABEL=RUN_DIR")],
    paired: Annotated[
        list[str] | None,
        typer.Option("--paired", help="'LABEL/METHOD - LABEL/METHOD': per-episode difference (repeatable)"),
    ] = None,
    markdown: Annotated[Path | None, typer.Option("--markdown", help="also write the table as Markdown")] = None,
    group: Annotated[
        list[str] | None,
        typer.Option(
            "--group",
            help="'NAME=LABEL,LABEL,...': replicate runs (seeds); NAME/METHOD in --paired then means each of "
            "them, summarised across them (repeatable)",
        ),
    ] = None,
) -> None:
    """One table over several runs, with paired differences on the episodes they share.

    With --group, a paired difference whose side names a group is measured in each replicate run and
    summarised across replicates (mean ± t-interval), which covers the seed as well as the episodes.
    """
    from fsar_apps._compare import (
        comparison_markdown,
        comparison_table,
        load_run,
        paired_difference,
        replicated_difference,
    )

    loaded = [load_run(spec) for spec in runs]
    labels = {run.label for run in loaded}
    groups: dict[str, list[str]] = {}
    for spec in group or []:
        name, sep, members = spec.partition("=")
        names = [m.strip() for m in members.split(",") if m.strip()]
        if not sep or not name.strip() or not names:
            raise InputError(f"--group {spec!r}: write 'NAME=LABEL,LABEL,...'")
        unknown = [m for m in names if m not in labels]
        if unknown:
            raise InputError(
                f"--group {name.strip()!r}: no run labelled {unknown}; labels: {', '.join(sorted(labels))}"
            )
        if name.strip() in labels:
            raise InputError(f"--group {name.strip()!r}: the name is also a run label; choose another")
        groups[name.strip()] = names
    shots = sorted({int(k) for run in loaded for k in run.summary})
    diffs, replicated = [], []
    for spec in paired or []:
        a, sep, b = spec.partition(" - ")
        if not sep:
            raise InputError(f"--paired {spec!r}: write 'LABEL/METHOD - LABEL/METHOD'")
        a, b = a.strip(), b.strip()
        if a.partition("/")[0] in groups or b.partition("/")[0] in groups:
            replicated += [replicated_difference(loaded, groups, a, b, k) for k in shots]
        else:
            diffs += [paired_difference(loaded, a, b, k) for k in shots]
    title = "test accuracy (%), mean ± 95% CI over each run's test episodes"
    console.print(comparison_table(loaded, diffs, title, replicated))
    if markdown is not None:
        from fsar_features import atomic_write_text

        atomic_write_text(markdown, comparison_markdown(loaded, diffs, replicated))
        console.print(f"markdown: {markdown}")


@app.command("eval")
def evaluate(
    ctx: typer.Context, preset: SubPresetOpt = None, run_dir: SubRunDirOpt = None, set_: SetOpt = None
) -> None:
    """Evaluate the run's checkpoint and the baselines on the fixed test episodes."""
    from fsar_train import evaluate_run, results_table

    config, folder = _config_from(ctx, preset=preset, run_dir=run_dir, set=set_)
    result = evaluate_run(config, folder)
    console.print(results_table(result.results, title=f"{config.name}: test split, mean ± 95% CI (%)"))


@app.command()
def presets() -> None:
    """List the named configurations."""
    from fsar_train import list_presets

    for name in list_presets():
        console.print(name)


@app.command()
def prompts(
    benchmark: Annotated[str, typer.Option(help="benchmark whose scenario picks the wording")] = "synthetic-actions",
    family: Annotated[str, typer.Option(help="MLLM family (chat format)")] = "video-llava",
    label: Annotated[
        str, typer.Option(help="a class label for the support prompt")
    ] = "Pushing [something] from left to right",
) -> None:
    """Show the exact prompts (support: label-aware; query: label-free) and their ids."""
    from fsar_prompts import PromptError, get_chat_format, list_benchmarks, render_prompt, scenario_for

    with as_input_error(PromptError, context="--family: "):
        get_chat_format(family)
    scenario = scenario_for(benchmark) if benchmark in list_benchmarks() else None
    if scenario is None:
        raise InputError(f"unknown benchmark {benchmark!r}; valid: {', '.join(list_benchmarks())}")
    table = Table(title=f"{family} prompts, scenario {scenario!r} ({benchmark})", show_lines=True)
    for column in ("role", "id", "text"):
        table.add_column(column)
    for role, kwargs in (("query", {}), ("support", {"label": label}), ("label", {"label": label})):
        with as_input_error(PromptError, context="--label: "):
            rendered = render_prompt(family, role, scenario, **kwargs)
        table.add_row(role, rendered.id, rendered.text)
    console.print(table)


# ----------------------------------------------------------------------------- entry point
def main(argv: list[str] | None = None) -> int:
    """Run the CLI; errors a user can fix print one sentence and return a non-zero status."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        # Standalone mode: click prints usage errors itself and exits 2; our errors come out here.
        app(args=argv, standalone_mode=True)
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except FsarError as err:  # what fsar raises on purpose: one sentence, no traceback
        err_console.print(f"[red]error:[/red] {err}", highlight=False)
        return 2
    except OSError as err:  # a full disk, a read-only folder, no permission: named, no traceback
        from fsar_features import describe_os_error

        message = describe_os_error(err)
        if message is None:
            raise  # anything else is a bug: its traceback shows
        err_console.print(f"[red]error:[/red] {message}", highlight=False)
        return 2
    except KeyboardInterrupt:
        err_console.print("interrupted; run the same command again to resume")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
