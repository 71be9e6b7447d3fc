"""Command line: ``python -m fsar_train`` (or the ``fsar-train`` script).

::

    fsar-train presets                                   # list the shipped presets
    fsar-train config --benchmark ucf101 -o episodes.n_shot=5       # print the resolved config
    fsar-train synth --root data/synthetic-actions      # generate synthetic-actions (idempotent)
    fsar-train run --run-dir runs/default                # the default experiment (synthetic-actions-llava)
    fsar-train run --benchmark hmdb51 --data-root /data/hmdb51 --split-dir /data/splits/hmdb_ARN \
        --model /ckpt/Video-LLaVA-7B-hf --run-dir runs/hmdb      # FSAR-LLaVA on a public benchmark
    fsar-train evaluate --run-dir runs/synth -o eval.episodes=2000  # re-evaluate a run
    fsar-train pretrain --preset synthetic-actions-llava --out models/tiny  # pretrain a tiny Video-LLaVA

``run`` is the experiment runner (``fsar_train.run_experiment``), the same one ``uv run apps/train``
calls: it trains the method and its trained baselines (resuming from the run folder's checkpoints),
evaluates them, the method's ablations and the parameter-free baselines on the same saved test
episodes, writes ``results.json`` and the plots, and prints the table. (The prototype store is
built by ``uv run apps/train``, which has the store.)
"""

from __future__ import annotations

import argparse
import logging
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.logging import RichHandler

from fsar_features import describe_os_error
from fsar_metric.errors import FsarError
from fsar_train._config import (
    ExperimentConfig,
    apply_overrides,
    build_config,
    config_to_toml,
    list_presets,
    load_config,
)
from fsar_train._evaluate import results_table
from fsar_train._experiment import evaluate_run, run_experiment
from fsar_train._pretrain import pretrain_table, pretrain_video_llava
from fsar_train._synthetic import generate_synthetic_actions

__all__ = ["main"]


def _config(args: argparse.Namespace) -> ExperimentConfig:
    if getattr(args, "config", None):
        return apply_overrides(load_config(args.config), args.override)
    return build_config(
        args.preset,
        benchmark=args.benchmark,
        data_root=args.data_root,
        split_dir=args.split_dir,
        model=args.model,
        backend=args.backend,
        device=args.device,
        overrides=args.override,
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fsar-train", description=__doc__.split("\n")[0])
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings only")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("presets", help="list the shipped presets")

    def with_config(p: argparse.ArgumentParser) -> None:
        source = p.add_mutually_exclusive_group()
        source.add_argument("--preset", help="the method, a name from `fsar-train presets` (default: see --benchmark)")
        source.add_argument("--config", help="a TOML config file (e.g. a run's config.toml)")
        p.add_argument("--benchmark", help="the data (`list_benchmarks()`): hmdb51, ssv2-small, ucf101, …")
        p.add_argument("--data-root", help="where the videos are")
        p.add_argument("--split-dir", help="folder with the split lists (TRX or CLIP-FSAR layout)")
        p.add_argument("--model", help="MLLM checkpoint folder or hub id (its config.json picks the backend)")
        p.add_argument("--backend", help="override the backend read from the checkpoint's config.json")
        p.add_argument("--device", help="auto, cpu, cuda, cuda:1, ... (every stage)")
        p.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE", help="e.g. train.lr=3e-4")

    with_config(sub.add_parser("config", help="print the resolved config as TOML"))
    synth = sub.add_parser("synth", help="generate synthetic-actions")
    with_config(synth)
    synth.add_argument("--root", help="output folder (default: the preset's data.root)")
    pre = sub.add_parser(
        "pretrain", help="pretrain a tiny Video-LLaVA on synthetic-actions meta-train captions (pretrain.* settings)"
    )
    with_config(pre)
    pre.add_argument("--out", required=True, help="model folder to write (save_pretrained layout)")
    run = sub.add_parser("run", help="train, then evaluate on the fixed test episodes")
    with_config(run)
    run.add_argument("--run-dir", required=True)
    run.add_argument("--force", action="store_true", help="evaluate again even if results.json holds this config's")
    ev = sub.add_parser("evaluate", help="evaluate a run folder's checkpoint (eval.* overrides allowed)")
    ev.add_argument("--run-dir", required=True)
    ev.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    console = Console()
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=Console(stderr=True), show_path=False)],
        force=True,
    )
    try:
        return _dispatch(args, argv, console)
    except FsarError as err:
        # What fsar raises on purpose (a bad value, a missing file, a folder made with another
        # config): one sentence on stderr, no traceback. Bugs (other exceptions) keep theirs.
        Console(stderr=True).print(f"[bold red]error:[/] {err}", highlight=False)
        return 2
    except OSError as err:  # a full disk, a read-only folder, no permission: named, no traceback
        message = describe_os_error(err)
        if message is None:
            raise
        Console(stderr=True).print(f"[bold red]error:[/] {message}", highlight=False)
        return 2


def _dispatch(args: argparse.Namespace, argv: Sequence[str] | None, console: Console) -> int:
    progress = not args.quiet
    if args.command == "presets":
        for name in list_presets():
            console.print(name)
        return 0
    if args.command == "config":
        console.print(config_to_toml(_config(args)), markup=False, highlight=False)
        return 0
    if args.command == "synth":
        config = _config(args)
        root = Path(args.root or config.data.root)
        started = time.perf_counter()
        generate_synthetic_actions(root, config.synthetic, progress=progress)
        seconds = time.perf_counter() - started
        du = shutil.which("du")
        size = subprocess.run([du, "-sh", str(root)], capture_output=True, text=True).stdout.split()[0] if du else "?"
        console.print(f"synthetic-actions in {root}: {seconds:.1f} s, {size} on disk")
        return 0
    if args.command == "pretrain":
        command = "fsar-train " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
        done = pretrain_video_llava(_config(args), args.out, progress=progress, command=command)
        console.print(pretrain_table(done))
        console.print(f"model: {done.out_dir} ({done.seconds:.0f} s); loss curve: {done.out_dir / 'loss.png'}")
        return 0
    if args.command == "run":
        result = run_experiment(_config(args), args.run_dir, progress=progress, force=args.force)
    else:
        run_dir = Path(args.run_dir)
        bad = [o for o in args.override if not o.strip().startswith("eval.")]
        if bad:
            raise SystemExit(f"evaluate takes eval.* overrides only (training settings are fixed by the run): {bad}")
        config = apply_overrides(load_config(run_dir / "config.toml"), args.override)
        result = evaluate_run(config, run_dir, progress=progress)
    console.print(results_table(result.results, title=f"test episodes ({result.run_dir})"))
    if result.reused:
        console.print("results of the earlier run in this folder (same config); -o eval.* changes re-evaluate")
    console.print(f"results: {result.run_dir / 'results.json'}")
    return 0
