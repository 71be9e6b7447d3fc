"""The prototype store under concurrent writer processes, on a local path and on S3 (a moto server).

Worker processes run a plan of steps; before each step every worker waits at a file barrier, so
the steps really race. A module fixture runs the default plan once per backend and the tests check
its outcome: one recipe per store, one row per key (last writer wins), no row lost.
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lancedb
import pyarrow as pa
import pytest

from fsar_apps.store import IndexSettings, PrototypeStore, StoreMismatchError, StoreRecipe
from fsar_features import FeatureRecipe

DIM, N_FRAMES = 16, 4
N_WORKERS = 4
BUCKET = "fsar-store"

# One worker: runs job["steps"] in order, waiting at the barrier before each; prints one JSON
# outcome per step. An "add" step opens the store before the barrier, so only the write races.
_WORKER = """
import importlib.util, json, sys, time
from pathlib import Path
import types
import torch
import fsar_apps

# The store modules without the packages' re-exports (they import transformers: 3 s instead of 10):
# fsar_apps.store, and of fsar_features only the recipe and the pooling registry it reads widths from.
package = types.ModuleType("fsar_apps.store")
package.__path__ = [str(Path(fsar_apps.__file__).parent / "store")]
sys.modules["fsar_apps.store"] = package
features = types.ModuleType("fsar_features")
features.__path__ = list(importlib.util.find_spec("fsar_features").submodule_search_locations)
sys.modules["fsar_features"] = features
import fsar_features._decode
features.FeatureRecipe = fsar_features._recipe.FeatureRecipe
from fsar_apps.store._schema import StoreRecipe
from fsar_apps.store._store import PrototypeStore, StoreMismatchError

job = json.loads(sys.argv[1])
sync, worker = Path(job["sync"]), job["worker"]
outcomes = []
for index, step in enumerate(job["steps"]):
    options = step["storage_options"]
    store = PrototypeStore.open(step["uri"], storage_options=options) if step["op"] == "add" else None
    (sync / f"ready-{index}-{worker}").touch()
    while not (sync / f"go-{index}").exists():
        time.sleep(0.001)
    try:
        if step["op"] == "create":
            PrototypeStore.open(step["uri"], StoreRecipe.from_json(step["recipes"][worker]), storage_options=options)
            outcomes.append({"ok": True})
        elif step["op"] == "create-add":  # open a new store and write to it at once
            store = PrototypeStore.open(
                step["uri"], StoreRecipe.from_json(step["recipes"][worker]), storage_options=options
            )
            gen = torch.Generator().manual_seed(worker)
            version = store.add(
                f"w{worker}", torch.randn(step["n_frames"], step["dim"], generator=gen),
                torch.randn(step["dim"], generator=gen), support_ids=[f"writer-{worker}"],
            )
            outcomes.append({"ok": True, "version": version})
        else:
            gen = torch.Generator().manual_seed(1000 * index + worker)
            visual = torch.randn(step["n_frames"], step["dim"], generator=gen)
            text = torch.randn(step["dim"], generator=gen)
            name = step["name"].format(worker=worker)
            version = store.add(name, visual, text, support_ids=[f"writer-{worker}"])
            outcomes.append({"ok": True, "version": version})
    except StoreMismatchError as error:
        outcomes.append({"ok": False, "mismatch": str(error)})
print(json.dumps(outcomes))
"""


FEATURES = FeatureRecipe(
    backend="tiny-video-llava", model_id="tiny-video-llava", family="video-llava", dim=32, n_layers=2, layers=(2,),
    visual_pooling="mean", text_pooling="last", n_frames=N_FRAMES, sampling="uniform", sampling_seed=None,
    frame_size=32, crop_size=32, scenario="generic", roles=("query", "support"),
)  # fmt: skip


def _recipe(head: str, dim: int = DIM) -> StoreRecipe:
    return StoreRecipe(FEATURES, head_hash=head, dim=dim, n_frames=N_FRAMES)


#: Worker w's recipe in a race of different recipes (worker 3's has another width too).
DIFFERENT = [_recipe("head-a"), _recipe("head-b"), _recipe("head-c"), _recipe("head-d", dim=2 * DIM)]


@dataclass(frozen=True)
class Backend:
    """Where the stores live: a local folder or a bucket prefix, and how to reach it."""

    name: str
    root: str
    storage_options: dict[str, str] | None

    def uri(self, name: str) -> str:
        return f"{self.root}/{name}"


@dataclass(frozen=True)
class Races:
    """The plan the workers ran, and each worker's outcome of each step."""

    steps: list[dict[str, Any]]
    outcomes: list[list[dict[str, Any]]]  # [worker][step]
    seconds: float

    def split(self, backends: list[Backend], sizes: list[int]) -> dict[str, Races]:
        """The races of consecutive plans, by backend name."""
        out, start = {}, 0
        for backend, size in zip(backends, sizes, strict=True):
            part = slice(start, start + size)
            out[backend.name] = Races(self.steps[part], [o[part] for o in self.outcomes], self.seconds)
            start += size
        return out

    def of(self, kind: str) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
        """The steps of one kind with every worker's outcome of each."""
        return [(s, [o[i] for o in self.outcomes]) for i, s in enumerate(self.steps) if s["kind"] == kind]


def _plan(
    backend: Backend, tag: str, *, different: int, same: int, dupes: int, create_adds: int = 1
) -> list[dict[str, Any]]:
    """Race steps: creations with different recipes, with one recipe, creations each followed at once
    by an add, then adds of one name and of many."""
    options = {"storage_options": backend.storage_options}
    recipes_different = [r.to_json() for r in DIFFERENT]
    recipes_same = [_recipe("head-a").to_json()] * N_WORKERS
    steps: list[dict[str, Any]] = []
    for trial in range(different):
        uri = backend.uri(f"{tag}-different-{trial}")
        steps.append({"kind": "different", "op": "create", "uri": uri, "recipes": recipes_different, **options})
    for trial in range(same):
        uri = backend.uri(f"{tag}-same-{trial}")
        steps.append({"kind": "same", "op": "create", "uri": uri, "recipes": recipes_same, **options})
    for trial in range(create_adds):
        uri = backend.uri(f"{tag}-create-add-{trial}")
        step = {"op": "create-add", "uri": uri, "recipes": recipes_same, "dim": DIM, "n_frames": N_FRAMES, **options}
        steps.append({**step, "kind": "create-add"})
    for trial in range(dupes):
        uri = backend.uri(f"{tag}-adds-{trial}")
        PrototypeStore.open(uri, _recipe("head-a"), storage_options=backend.storage_options)
        add = {"op": "add", "uri": uri, "dim": DIM, "n_frames": N_FRAMES, **options}
        steps.append({**add, "kind": "dupe", "name": "dupe"})
        steps.extend({**add, "kind": "distinct", "name": f"w{{worker}}-{i}"} for i in range(2))
    return steps


def _race(steps: list[dict[str, Any]], sync: Path, timeout: float = 240.0) -> Races:
    """Run ``steps`` in ``N_WORKERS`` processes, releasing each step when all are at its barrier."""
    sync.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, json.dumps({"sync": str(sync), "worker": w, "steps": steps})],
            stdout=subprocess.PIPE,
            text=True,
        )
        for w in range(N_WORKERS)
    ]
    try:
        for index in range(len(steps)):
            while not all((sync / f"ready-{index}-{w}").exists() for w in range(N_WORKERS)):
                assert all(p.poll() in (None, 0) for p in workers), "a worker died before the barrier"
                assert time.monotonic() - start < timeout, "the workers did not reach the barrier in time"
                time.sleep(0.002)
            (sync / f"go-{index}").touch()
        outputs = [p.communicate(timeout=timeout)[0] for p in workers]
    finally:
        for p in workers:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in workers] == [0] * N_WORKERS
    return Races(steps, [json.loads(out.strip().splitlines()[-1]) for out in outputs], time.monotonic() - start)


# ----------------------------------------------------------------------------- backends
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_options() -> dict[str, str]:
    """A local moto S3 server (in a thread of this process) with one bucket; its storage_options."""
    import boto3  # moto[server] is a dev dependency (`uv sync`): without it the S3 tests error, not skip
    from moto.server import ThreadedMotoServer

    quiet = logging.getLogger("werkzeug")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # one log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
    try:
        server.start()
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        boto3.client(
            "s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1"
        ).create_bucket(Bucket=BUCKET)
    except Exception:
        server.stop()
        raise
    yield {
        "aws_endpoint": endpoint,
        "aws_access_key_id": "test",
        "aws_secret_access_key": "test",
        "aws_region": "us-east-1",
        "allow_http": "true",
    }
    server.stop()
    quiet.setLevel(level)


def _backends(tmp_path_factory, s3: dict[str, str]) -> list[Backend]:
    return [
        Backend("local", str(tmp_path_factory.mktemp("stores")), None),
        Backend("s3", f"s3://{BUCKET}/{tmp_path_factory.mktemp('s3').name}", s3),
    ]


@pytest.fixture(scope="module")
def races(tmp_path_factory, s3_options) -> dict[str, Races]:
    """The default plan, on both backends in the same four workers (their imports are the cost):
    per backend 2 races of different recipes, 1 of one recipe, 1 of adds of one name and of many."""
    backends = _backends(tmp_path_factory, s3_options)
    plans = [_plan(b, "default", different=2, same=1, dupes=1) for b in backends]
    both = _race([step for plan in plans for step in plan], tmp_path_factory.mktemp("sync"))
    return both.split(backends, [len(plan) for plan in plans])


# ----------------------------------------------------------------------------- checks
def _stored_recipes(uri: str, options: dict[str, str] | None) -> list[str]:
    """Every recipe row of the store's metadata table, read straight from LanceDB."""
    meta = lancedb.connect(uri, storage_options=options).open_table("fsar_meta")
    return [row["value"] for row in meta.to_arrow().to_pylist() if row["key"] == "recipe"]


def _check_one_recipe_won(races: Races, kind: str) -> None:
    for step, outcomes in races.of(kind):
        options = step["storage_options"]
        stored = _stored_recipes(step["uri"], options)
        assert len(stored) == 1, f"{step['uri']}: {len(stored)} recipe rows"
        winner = StoreRecipe.from_json(stored[0])
        assert PrototypeStore.open(step["uri"], storage_options=options).recipe == winner
        for worker, outcome in enumerate(outcomes):
            mine = StoreRecipe.from_json(step["recipes"][worker])
            if mine == winner:
                assert outcome == {"ok": True}, f"worker {worker} had the winning recipe but got {outcome}"
            else:
                assert not outcome["ok"], f"worker {worker} opened a store of another recipe"
                assert mine.fingerprint in outcome["mismatch"]
                assert winner.fingerprint in outcome["mismatch"]


def _check_last_writer_won(races: Races) -> None:
    """One ``dupe`` row per store, the one of the add that committed the newest version."""
    for step, outcomes in races.of("dupe"):
        store = PrototypeStore.open(step["uri"], storage_options=step["storage_options"])
        rows = [a for a in store.list() if a.action == "dupe"]
        assert len(rows) == 1, f"{step['uri']}: {len(rows)} rows for key default/dupe"
        last = max(range(N_WORKERS), key=lambda w: outcomes[w]["version"])
        assert rows[0].support_ids == [f"writer-{last}"]
        assert len({o["version"] for o in outcomes}) == N_WORKERS  # one version per add


def _check_no_row_lost(races: Races) -> None:
    for step, _ in races.of("dupe"):
        store = PrototypeStore.open(step["uri"], storage_options=step["storage_options"])
        names = sorted(a.action for a in store.list())
        assert names == sorted(["dupe", *(f"w{w}-{i}" for w in range(N_WORKERS) for i in range(2))])


def _check_created_and_written(races: Races) -> None:
    """Processes that open a new store and add at once: every add is there (no create wiped one)."""
    for step, outcomes in races.of("create-add"):
        assert all(o["ok"] for o in outcomes), outcomes
        store = PrototypeStore.open(step["uri"], storage_options=step["storage_options"])
        assert sorted(a.action for a in store.list()) == [f"w{w}" for w in range(N_WORKERS)]


WHERE = pytest.mark.parametrize("where", ["local", "s3"])


@WHERE
def test_concurrent_creation_with_different_recipes_records_exactly_one(races, where):
    """Four processes create one store at once with four recipes: one wins, three are refused."""
    _check_one_recipe_won(races[where], "different")
    for _, outcomes in races[where].of("different"):
        assert sum(o["ok"] for o in outcomes) == 1


@WHERE
def test_concurrent_creation_with_one_recipe_opens_it_everywhere(races, where):
    _check_one_recipe_won(races[where], "same")
    for _, outcomes in races[where].of("same"):
        assert all(o["ok"] for o in outcomes)


@WHERE
def test_concurrent_adds_of_one_name_leave_one_row_of_the_last_writer(races, where):
    _check_last_writer_won(races[where])


@WHERE
def test_concurrent_adds_of_different_names_lose_no_row(races, where):
    _check_no_row_lost(races[where])


@WHERE
def test_processes_creating_a_store_and_writing_at_once_lose_no_row(races, where):
    _check_created_and_written(races[where])


@pytest.mark.slow
def test_many_concurrent_races_keep_one_recipe_and_one_row_per_key(tmp_path_factory, s3_options):
    """The default races five to ten times over on both backends (about 40 s on 2 cores)."""
    backends = _backends(tmp_path_factory, s3_options)
    plans = [_plan(b, "slow", different=10, same=3, dupes=5, create_adds=5) for b in backends]
    both = _race([step for plan in plans for step in plan], tmp_path_factory.mktemp("sync"), timeout=600.0)
    for races in both.split(backends, [len(plan) for plan in plans]).values():
        _check_one_recipe_won(races, "different")
        _check_one_recipe_won(races, "same")
        _check_last_writer_won(races)
        _check_no_row_lost(races)
        _check_created_and_written(races)


# ----------------------------------------------------------------------------- S3 and old stores
def test_a_read_only_open_of_an_empty_bucket_path_creates_nothing(s3_options):
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=s3_options["aws_endpoint"],
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    )
    before = client.list_objects_v2(Bucket=BUCKET).get("KeyCount", 0)
    uri = f"s3://{BUCKET}/nothing-here/store"
    with pytest.raises(ValueError, match=f"no prototype store at {uri}"):
        PrototypeStore.open(uri, storage_options=s3_options)
    assert client.list_objects_v2(Bucket=BUCKET, Prefix="nothing-here").get("KeyCount", 0) == 0
    assert client.list_objects_v2(Bucket=BUCKET).get("KeyCount", 0) == before


def test_a_store_works_on_s3(s3_options, prototypes):
    uri = f"s3://{BUCKET}/plain/store"
    store = PrototypeStore.open(uri, _recipe("head-a"), storage_options=s3_options)
    visual, text = prototypes
    store.add_many([(f"action {i}", visual[i], text[i], [f"v{i}"]) for i in range(3)])
    store.add("action 0", visual[3], text[3], support_ids=["again"])
    reopened = PrototypeStore.open(uri, storage_options=s3_options)
    assert [(a.action, a.support_ids) for a in reopened.list()] == [
        ("action 0", ["again"]),
        ("action 1", ["v1"]),
        ("action 2", ["v2"]),
    ]
    assert reopened.query(visual[1], text[1], k=1).best == "action 1"
    with pytest.raises(StoreMismatchError, match=f"the store at {uri} holds prototypes of"):
        PrototypeStore.open(uri, _recipe("head-b"), storage_options=s3_options)


def test_a_background_index_refresh_works_on_s3(s3_options):
    """The detached refresh worker gets the object-store settings (through its environment) and folds
    the new rows into the index of an S3 store; its lock lives in the temporary folder."""
    import torch

    settings = IndexSettings(min_rows=300, max_unindexed=50, nprobes=8, refine_factor=5, sub_vector_dim=4)
    uri = f"s3://{BUCKET}/indexed/store"
    store = PrototypeStore.open(uri, _recipe("head-a"), storage_options=s3_options, index=settings)
    gen = torch.Generator().manual_seed(0)
    visual, text = torch.randn(400, N_FRAMES, DIM, generator=gen), torch.randn(400, DIM, generator=gen)
    store.add_many([(f"a{i}", visual[i], text[i], ["v"]) for i in range(320)])  # builds the indexes
    assert store.indexed()
    store.add_many([(f"b{i}", visual[i], text[i], ["v"]) for i in range(320, 400)])  # 80 outside: a refresh starts
    assert store.wait_for_refresh(timeout=120)
    status = store.index_status()
    assert (status.unindexed, status.last_refresh.ok, status.last_refresh.where) == (0, True, "background")
    assert store.query(visual[350], text[350], k=1, candidates=20).best == "b350"


def _old_store(path: Path, recipes: list[StoreRecipe]) -> None:
    """A store as an older fsar made it: no primary key, and (after a race) possibly several recipes."""
    db = lancedb.connect(path)
    meta_schema = pa.schema([pa.field("key", pa.string(), False), pa.field("value", pa.string(), False)])
    rows = [{"key": "recipe", "value": r.to_json()} for r in recipes]
    db.create_table("fsar_meta", data=pa.Table.from_pylist(rows, schema=meta_schema))
    from fsar_apps.store import prototype_model

    db.create_table("prototypes", schema=prototype_model(DIM))


def test_an_old_store_with_several_recipes_is_refused_naming_them(tmp_path):
    _old_store(tmp_path / "s", [_recipe("head-a"), _recipe("head-b")])
    a, b = _recipe("head-a").fingerprint, _recipe("head-b").fingerprint
    with pytest.raises(StoreMismatchError, match=rf"records 2 different recipes .*{a}.*{b}|records 2 .*{b}.*{a}"):
        PrototypeStore.open(tmp_path / "s")


def test_an_old_store_gets_its_primary_key_on_the_first_write(tmp_path, prototypes):
    _old_store(tmp_path / "s", [_recipe("head-a"), _recipe("head-a")])  # the same recipe twice reads as one
    store = PrototypeStore.open(tmp_path / "s", _recipe("head-a"))
    visual, text = prototypes
    store.add("waving", visual[0], text[0], support_ids=["a"])
    store.add("waving", visual[1], text[1], support_ids=["b"])
    schema = lancedb.connect(tmp_path / "s").open_table("prototypes").schema
    assert schema.field("key").metadata  # the unenforced primary key is recorded
    assert [(a.action, a.support_ids) for a in store.list()] == [("waving", ["b"])]
