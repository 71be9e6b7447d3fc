"""``fsar store …``: the prototype store of a trained run, from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import torch
import typer
from rich.table import Table

from fsar_apps._common import DEFAULT_RUN, console
from fsar_metric.errors import InputError

if TYPE_CHECKING:
    from fsar_apps.store import PrototypeStore, TrainedRun

__all__ = ["store_app"]

store_app = typer.Typer(add_completion=False, no_args_is_help=True, help="The LanceDB prototype store of a run.")


def _store() -> Any:
    """fsar_apps.store, imported on first use: lancedb must not be loaded before the synthetic-data
    generator forks its worker processes (lancedb's runtime is not fork-safe)."""
    import fsar_apps.store

    return fsar_apps.store


RunOpt = Annotated[Path, typer.Option("--run-dir", help="a trained run folder (config.toml, best.pt)")]
StoreOpt = Annotated[str | None, typer.Option("--store", help="a LanceDB URI; default <run-dir>/store")]
TagOpt = Annotated[str, typer.Option("--tag", help="the collection")]


def _run_and_nonempty_store(run_dir: Path, uri: str | None) -> tuple[TrainedRun, PrototypeStore]:
    run = _store().load_trained_run(run_dir)
    store = _store().open_run_store(run, uri)
    if len(store) == 0:
        raise InputError(f"the store at {store.uri} is empty: add actions with `fsar store add` or `fsar store build`")
    return run, store


@store_app.command("build")
def build(run_dir: RunOpt = DEFAULT_RUN) -> None:
    """Store every meta-test action of a trained run (5 shots each)."""
    store = _store().build_store_from_run(run_dir)
    console.print(f"{len(store)} actions in {store.uri} (version {store.version})")


@store_app.command("add")
def add(
    action: Annotated[str, typer.Argument(help="the action's name")],
    videos: Annotated[list[Path], typer.Argument(help="K example video files")],
    run_dir: RunOpt = DEFAULT_RUN,
    store_uri: StoreOpt = None,
    tag: TagOpt = "default",
) -> None:
    """Register (or replace) an action from K example videos, without retraining."""
    run = _store().load_trained_run(run_dir)
    features = _store().extract_videos(run, videos, label=action)
    visual = torch.stack([f.visual for f in features]).float()
    p_v, p_t = _store().action_prototype(
        run.head,
        visual,
        torch.stack([f.text["support"] for f in features]).float(),
        torch.stack([f.text["query"] for f in features]).float(),
    )
    store = _store().open_run_store(run, store_uri)
    version = store.add(action, p_v, p_t, support_ids=[str(v) for v in videos], tag=tag, recipe=run.recipe)
    console.print(f"added {action!r} from {len(videos)} videos (store version {version})")
    if store.refreshing():
        console.print("[dim]the index is being refreshed in the background (`fsar store index` shows its progress)[/]")


@store_app.command("query")
def query(
    video: Annotated[Path, typer.Argument(help="a video file to classify")],
    run_dir: RunOpt = DEFAULT_RUN,
    store_uri: StoreOpt = None,
    k: Annotated[int, typer.Option("-k", help="matches to show")] = 5,
    tag: Annotated[str | None, typer.Option("--tag", help="only this collection")] = None,
) -> None:
    """Classify a video against every stored action (vector search + MPMM re-rank)."""
    run, store = _run_and_nonempty_store(run_dir, store_uri)
    (features,) = _store().extract_videos(run, [video], label=None)
    frames, text = _store().encode_query(run.head, features.visual.float(), features.text["query"].float())
    result = store.query(frames, text, k=k, tag=tag)  # the store's recipe (the run's) holds the head's MPMM
    table = Table(title=f"{video.name}: {'unknown action' if result.unknown else result.best}")
    for column in ("rank", "action", "tag", "probability", "score"):
        table.add_column(column)
    for i, m in enumerate(result.matches, 1):
        table.add_row(str(i), m.action, m.tag, f"{m.probability:.3f}", f"{m.score:.3f}")
    console.print(table)


@store_app.command("evaluate")
def evaluate(
    run_dir: RunOpt = DEFAULT_RUN,
    store_uri: StoreOpt = None,
    split: Annotated[str, typer.Option("--split", help="test, val or train: whose cached videos to classify")] = "test",
    k: Annotated[int, typer.Option("-k", help="top-k accuracy")] = 5,
    tag: Annotated[str | None, typer.Option("--tag", help="only this collection")] = None,
) -> None:
    """Classify every cached video of a split against the store: top-1 / top-k accuracy, unknown rate."""
    from fsar_train import load_sources

    run, store = _run_and_nonempty_store(run_dir, store_uri)
    sources, _ = load_sources(run.config, run_dir, splits=(split,), progress=False)
    result = _store().evaluate_store(run, store, sources[split], k=k, tag=tag)
    table = Table(title=f"store classification of {split} videos ({store.uri})")
    for column in ("queries", "stored actions", "top-1 (%)", f"top-{k} (%)", "unknown (%)"):
        table.add_column(column, justify="right")
    table.add_row(
        f"{result.n_queries:,}",
        str(result.n_actions),
        f"{result.top1:.1f} ± {result.top1_ci95:.1f}",
        f"{result.topk:.1f}",
        f"{result.unknown:.1f}",
    )
    console.print(table)
    console.print(f"chance top-1: {100 / result.n_actions:.1f} %")


@store_app.command("list")
def list_actions(
    run_dir: RunOpt = DEFAULT_RUN, store_uri: StoreOpt = None, tag: Annotated[str | None, typer.Option("--tag")] = None
) -> None:
    """List the stored actions."""
    store = _store().PrototypeStore.open(store_uri or (run_dir / "store"))
    actions = store.list(tag=tag)
    if not actions:
        console.print(f"the store at {store.uri} is empty")
        return
    table = Table(title=f"{len(actions)} actions in {store.uri} (version {store.version})")
    for column in ("action", "tag", "shots", "created"):
        table.add_column(column)
    for a in actions:
        table.add_row(a.action, a.tag, str(a.shots), a.created.strftime("%Y-%m-%d %H:%M"))
    console.print(table)


@store_app.command("remove")
def remove(action: str, run_dir: RunOpt = DEFAULT_RUN, store_uri: StoreOpt = None, tag: TagOpt = "default") -> None:
    """Remove an action."""
    store = _store().PrototypeStore.open(store_uri or (run_dir / "store"))
    console.print(f"removed {action!r} (store version {store.remove(action, tag=tag)})")


@store_app.command("rename")
def rename(
    old: str, new: str, run_dir: RunOpt = DEFAULT_RUN, store_uri: StoreOpt = None, tag: TagOpt = "default"
) -> None:
    """Rename an action."""
    store = _store().PrototypeStore.open(store_uri or (run_dir / "store"))
    console.print(f"renamed {old!r} to {new!r} (store version {store.rename(old, new, tag=tag)})")


@store_app.command("versions")
def versions(run_dir: RunOpt = DEFAULT_RUN, store_uri: StoreOpt = None) -> None:
    """List the table versions (every change is one)."""
    store = _store().PrototypeStore.open(store_uri or (run_dir / "store"))
    table = Table(title=f"versions of {store.uri}")
    table.add_column("version")
    table.add_column("time")
    for v, when in store.versions():
        table.add_row(str(v), str(when))
    console.print(table)


@store_app.command("restore")
def restore(version: int, run_dir: RunOpt = DEFAULT_RUN, store_uri: StoreOpt = None) -> None:
    """Make an earlier version the latest (as a new version: nothing is lost)."""
    store = _store().PrototypeStore.open(store_uri or (run_dir / "store"))
    console.print(f"restored version {version} as version {store.restore(version)}")


@store_app.command("index")
def index(
    run_dir: RunOpt = DEFAULT_RUN,
    store_uri: StoreOpt = None,
    refresh: Annotated[
        bool,
        typer.Option("--refresh", help="fold the rows outside the ANN index into it now (waits for a running one)"),
    ] = False,
) -> None:
    """The ANN index: rows outside it, whether a refresh runs, the last one; `--refresh` runs one now."""
    store = _store().PrototypeStore.open(store_uri or (run_dir / "store"))
    if refresh and not store.indexed():
        with console.status(f"building the index of {store.uri} …"):
            built = store.create_indexes()
        console.print("index built" if built else f"no index below {store.index.min_rows:,} actions: queries scan all")
    elif refresh:
        with console.status(f"refreshing the index of {store.uri} …"):
            record = store.refresh_index()
        console.print("nothing to refresh" if record is None else f"refresh {record.describe()}")
    status = store.index_status()
    table = Table(title=f"ANN index of {store.uri} (version {store.version})", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    last = status.last_refresh
    table.add_row("actions", f"{status.rows:,}")
    table.add_row("indexed", "yes" if status.indexed else f"no (built at {status.settings.min_rows:,} actions)")
    table.add_row("outside the index", f"{status.unindexed:,} (refreshed past {status.settings.max_unindexed:,})")
    table.add_row("refresh running", "yes" if status.refreshing else "no")
    table.add_row("last refresh", "never" if last is None else last.describe())
    console.print(table)
