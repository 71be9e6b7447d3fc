"""``fsar store …``: the prototype store of a trained run, from the command line."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import torch
import typer
from rich.table import Table

from fsar_apps.cli import DEFAULT_RUN, UserError, console, store_app

if TYPE_CHECKING:
    from fsar_apps.store import PrototypeStore, StoreRecipe


def _store() -> Any:
    """fsar_apps.store, imported on first use: lancedb must not be loaded before the synthetic-data
    generator forks its worker processes (lancedb's runtime is not fork-safe)."""
    import fsar_apps.store

    return fsar_apps.store


RunOpt = Annotated[Path, typer.Option("--run-dir", help="a trained run folder (config.toml, best.pt)")]
StoreOpt = Annotated[str | None, typer.Option("--store", help="a LanceDB URI; default <run-dir>/store")]
TagOpt = Annotated[str, typer.Option("--tag", help="the collection")]


@dataclasses.dataclass
class _Run:
    config: Any
    head: Any
    recipe: StoreRecipe
    folder: Path


def _load_run(run_dir: Path) -> _Run:
    from fsar_features import FeatureCache
    from fsar_metric import FSARLLaVA
    from fsar_train import build_metric, load_checkpoint_weights, load_config, mllm_cache_dir

    config_path = run_dir / "config.toml"
    if not config_path.is_file():
        raise UserError(f"{run_dir} is not a run folder (no config.toml); run `uv run apps/train` first")
    config = load_config(config_path)
    if config.features.source != "mllm" or config.metric.name != "fsar_llava":
        raise UserError(
            f"the store needs a run of the fsar_llava head on mllm features; {run_dir} trained "
            f"{config.metric.name!r} on {config.features.source!r}"
        )
    cache = FeatureCache.open(mllm_cache_dir(config))
    checkpoint = run_dir / f"{config.eval.checkpoint}.pt"
    if not checkpoint.is_file():
        raise UserError(f"{checkpoint} does not exist: train the run first")
    head = build_metric(config, cache.recipe.dim)
    assert isinstance(head, FSARLLaVA)
    load_checkpoint_weights(head, checkpoint)
    head.eval()
    recipe = _store().StoreRecipe(
        feature_recipe=dataclasses.asdict(cache.recipe),
        head_hash=_store().head_fingerprint(head),
        dim=head.config.dim,
        n_frames=config.features.n_frames,
    )
    return _Run(config, head, recipe, run_dir)


def _open(run: _Run, uri: str | None) -> PrototypeStore:
    return _store().PrototypeStore.open(uri or (run.folder / "store"), run.recipe)


def _run_and_nonempty_store(run_dir: Path, uri: str | None) -> tuple[_Run, PrototypeStore]:
    run = _load_run(run_dir)
    store = _open(run, uri)
    if len(store) == 0:
        raise UserError(f"the store at {store.uri} is empty: add actions with `fsar store add` or `fsar store build`")
    return run, store


def build_store_from_run(run_dir: Path, *, config: Any = None, sources: Any = None, shots: int = 5) -> PrototypeStore:
    """A store of every meta-test action of a run, each from its first ``shots`` test videos."""
    from fsar_train import load_sources

    run = _load_run(run_dir)
    if sources is None:
        sources, _ = load_sources(run.config, run_dir, progress=False)
    test = sources["test"]
    store = _open(run, None)
    items = []
    for c, name in enumerate(test.class_names):
        positions = [p for p, label in enumerate(test.labels) if label == c][:shots]
        if not positions:
            continue
        items.append((name, *_prototypes_of(run, test, positions), [test.video_ids[p] for p in positions]))
    store.add_many(items, tag=run.config.data.benchmark)
    store.optimize()
    if "val" in sources:
        threshold = calibrate_unknown_threshold(run, sources["val"], shots=shots)
        if threshold is not None:
            store.set_unknown_threshold(threshold)
    return store


def _prototypes_of(run: _Run, source: Any, positions: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    return _store().action_prototype(
        run.head,
        source.visual(positions).float(),
        source.text(positions, "support").float(),
        source.text(positions, "query").float(),
    )


def _query_of(run: _Run, source: Any, position: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A cached video as a store query: its frames and label-free text through the head's query side."""
    return _store().encode_query(
        run.head, source.visual([position])[0].float(), source.text([position], "query")[0].float()
    )


def calibrate_unknown_threshold(run: _Run, val: Any, *, shots: int = 5) -> float | None:
    """The open-set threshold from meta-val: the first half of the val classes are stored (``shots``
    videos each), the other half play unknown actions; every other val video is a query.

    Returns:
        The threshold maximising TPR − FPR, or None when meta-val has fewer than 2 classes.
    """
    n_classes = len(val.class_names)
    if n_classes < 2:
        return None
    known = set(range((n_classes + 1) // 2))
    store = _store().PrototypeStore.open("memory://", run.recipe)
    support: set[int] = set()
    items = []
    for c in sorted(known):
        positions = [p for p, label in enumerate(val.labels) if label == c][:shots]
        support.update(positions)
        items.append((val.class_names[c], *_prototypes_of(run, val, positions), [val.video_ids[p] for p in positions]))
    store.add_many(items)
    accepted, rejected = [], []
    for p, label in enumerate(val.labels):
        if p in support:
            continue
        frames, text = _query_of(run, val, p)
        best = store.query(frames, text, k=1, candidates=None, mpmm=run.head.config.mpmm, threshold=float("-inf"))
        score = torch.tensor(best.confidence)
        if label in known and best.matches[0].action == val.class_names[label]:
            accepted.append(score)
        elif label not in known:
            rejected.append(score)
    if not accepted or not rejected:
        return None
    return _store().calibrate_threshold(torch.stack(accepted), torch.stack(rejected))


def _extract(run: _Run, videos: list[Path], label: str | None) -> list[Any]:
    from fsar_features import FeatureExtractor, VideoReadError, create_backend
    from fsar_train._mllm import backend_kwargs, extraction_config

    backend = create_backend(run.config.features.backend, **backend_kwargs(run.config))
    extractor = FeatureExtractor(backend, extraction_config(run.config))
    if _store().StoreRecipe(dataclasses.asdict(extractor.recipe)).feature_recipe != run.recipe.feature_recipe:
        raise UserError("the videos would be extracted with another feature recipe than the run's cache")
    out = []
    for path in videos:
        if not path.is_file():
            raise UserError(f"no video file at {path}")
        try:
            out.append(extractor.extract(path, label=label, video_id=path.stem))
        except VideoReadError as err:
            raise UserError(f"cannot read {path}: {err}") from None
    return out


@store_app.command("build")
def build(run_dir: RunOpt = DEFAULT_RUN) -> None:
    """Store every meta-test action of a trained run (5 shots each)."""
    store = build_store_from_run(run_dir)
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
    run = _load_run(run_dir)
    features = _extract(run, videos, label=action)
    visual = torch.stack([f.visual for f in features]).float()
    p_v, p_t = _store().action_prototype(
        run.head,
        visual,
        torch.stack([f.text["support"] for f in features]).float(),
        torch.stack([f.text["query"] for f in features]).float(),
    )
    store = _open(run, store_uri)
    version = store.add(action, p_v, p_t, support_ids=[str(v) for v in videos], tag=tag, recipe=run.recipe)
    console.print(f"added {action!r} from {len(videos)} videos (store version {version})")


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
    (features,) = _extract(run, [video], label=None)
    frames, text = _store().encode_query(run.head, features.visual.float(), features.text["query"].float())
    result = store.query(frames, text, k=k, tag=tag, mpmm=run.head.config.mpmm)
    table = Table(title=f"{video.name}: {'unknown action' if result.unknown else result.best}")
    for column in ("rank", "action", "tag", "probability", "score"):
        table.add_column(column)
    for i, m in enumerate(result.matches, 1):
        table.add_row(str(i), m.action, m.tag, f"{m.probability:.3f}", f"{m.score:.3f}")
    console.print(table)


@dataclasses.dataclass(frozen=True)
class StoreEvaluation:
    """Store classification of a split's videos (the store's own support videos left out)."""

    n_queries: int
    n_actions: int
    top1: float  # % of queries whose best match (before the open-set threshold) is their action
    topk: float  # % with their action among the k matches
    k: int
    unknown: float  # % the open-set threshold marks unknown
    top1_ci95: float


def evaluate_store(
    run: _Run, store: PrototypeStore, source: Any, *, k: int = 5, tag: str | None = None
) -> StoreEvaluation:
    """Query every video of ``source`` (cached features) whose action is stored, except the videos the
    prototypes were built from; the ``k`` matches come from the same search + MPMM re-rank as ``query``."""
    stored = {a.action: a for a in store.list(tag=tag)}
    support = {video for a in stored.values() for video in a.support_ids}
    hits1, hitsk, unknown = [], [], []
    for p, label in enumerate(source.labels):
        name = source.class_names[label]
        if name not in stored or source.video_ids[p] in support:
            continue
        frames, text = _query_of(run, source, p)
        result = store.query(frames, text, k=k, tag=tag, mpmm=run.head.config.mpmm)
        ranked = [m.action for m in result.matches]
        hits1.append(bool(ranked) and ranked[0] == name)
        hitsk.append(name in ranked)
        unknown.append(result.unknown)
    if not hits1:
        raise UserError("no video of the split belongs to a stored action (outside the support videos)")
    n = len(hits1)
    top1 = sum(hits1) / n
    return StoreEvaluation(
        n_queries=n,
        n_actions=len(stored),
        top1=100 * top1,
        topk=100 * sum(hitsk) / n,
        k=k,
        unknown=100 * sum(unknown) / n,
        top1_ci95=100 * 1.96 * (top1 * (1 - top1) / n) ** 0.5,
    )


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
    result = evaluate_store(run, store, sources[split], k=k, tag=tag)
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
