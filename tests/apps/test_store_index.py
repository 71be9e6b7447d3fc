"""The store's ANN indexes: built past a threshold, searched with Lance's flat fallback for new rows, refreshed."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from fsar_apps.store import IndexSettings, PrototypeStore, _refresh
from fsar_metric.errors import InputError

DIM, N_FRAMES = 16, 4
N_CLUSTERS = 30
#: IVF-PQ trains 256 PQ centroids: a table needs a few hundred rows to index.
SMALL = IndexSettings(min_rows=300, max_unindexed=50, nprobes=8, refine_factor=5, sub_vector_dim=4)


def _actions(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` clustered actions: visual ``[n, T, D]`` and text ``[n, D]`` (centre + noise)."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(N_CLUSTERS, N_FRAMES, DIM, generator=torch.Generator().manual_seed(99))
    cluster = torch.arange(n) % N_CLUSTERS
    visual = centres[cluster] + 0.5 * torch.randn(n, N_FRAMES, DIM, generator=gen)
    return visual, centres[cluster].mean(1) + 0.5 * torch.randn(n, DIM, generator=gen)


def _fill(store: PrototypeStore, n: int, prefix: str = "a", seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    visual, text = _actions(n, seed)
    store.add_many([(f"{prefix}{i}", visual[i], text[i], [f"v{i}"]) for i in range(n)])
    return visual, text


@pytest.fixture
def indexed(tmp_path, recipe):
    store = PrototypeStore.open(tmp_path / "store", recipe, index=SMALL)
    return store, *_fill(store, 320)


def test_below_the_threshold_the_store_stays_unindexed_and_queries_exactly(tmp_path, recipe):
    store = PrototypeStore.open(tmp_path / "store", recipe, index=SMALL)
    visual, text = _fill(store, 200)
    assert not store.indexed()
    assert store.unindexed_rows() == 200
    for i in (0, 57, 199):
        assert store.query(visual[i], text[i], k=1).best == f"a{i}"
        assert store.query(visual[i], text[i], k=5) == store.query(visual[i], text[i], k=5, exact=True)


def test_the_write_that_reaches_the_threshold_builds_both_indexes(indexed):
    store, _, _ = indexed
    assert store.indexed()
    assert store.unindexed_rows() == 0
    columns = sorted(c for index in store._table.list_indices() for c in index.columns)
    assert columns == ["text", "vector"]


def test_indexed_queries_return_the_exact_top_1_on_clear_cases(indexed):
    store, visual, text = indexed
    noise = torch.Generator().manual_seed(3)
    for i in range(0, 320, 16):
        frames = visual[i] + 0.05 * torch.randn(N_FRAMES, DIM, generator=noise)
        approx = store.query(frames, text[i], k=5, candidates=20)
        exact = store.query(frames, text[i], k=5, candidates=20, exact=True)
        assert approx.best == exact.best == f"a{i}"


def test_actions_added_after_the_index_are_found_by_queries(indexed):
    store, _, _ = indexed
    gen = torch.Generator().manual_seed(7)
    new_visual, new_text = 3 * torch.randn(N_FRAMES, DIM, generator=gen), 3 * torch.randn(DIM, generator=gen)
    store.add("brand new", new_visual, new_text, support_ids=["n"])
    assert store.unindexed_rows() == 1  # searched by Lance's flat fallback next to the index
    assert store.query(new_visual, new_text, k=1, candidates=10).best == "brand new"


def test_past_max_unindexed_the_write_starts_a_background_refresh_and_returns(indexed):
    store, _, _ = indexed
    assert store.index.refresh == "background"
    versions = [v for v, _ in store.versions()]
    visual, text = _fill(store, SMALL.max_unindexed + 1, prefix="b", seed=1)  # one write: starts the refresh
    assert store.refreshing() or store.unindexed_rows() == 0  # the worker holds the lock until it is done
    assert store.wait_for_refresh(timeout=120)
    status = store.index_status()
    assert (status.rows, status.indexed, status.unindexed, status.refreshing) == (371, True, 0, False)
    record = status.last_refresh
    assert (record.ok, record.where, record.unindexed_before, record.unindexed_after) == (True, "background", 51, 0)
    assert record.describe().startswith("ok at ")
    assert record.describe().endswith("51 rows folded in")
    assert set(versions) <= {v for v, _ in store.versions()}  # nothing pruned: restore still reaches them
    assert store.query(visual[5], text[5], k=1, candidates=10).best == "b5"


def test_inline_refresh_folds_new_rows_in_within_the_write(tmp_path, recipe):
    store = PrototypeStore.open(tmp_path / "store", recipe, index=dataclasses.replace(SMALL, refresh="inline"))
    _fill(store, 320)
    versions = [v for v, _ in store.versions()]
    visual, text = _fill(store, SMALL.max_unindexed + 1, prefix="b", seed=1)
    assert store.unindexed_rows() == 0
    assert store.index_status().last_refresh.where == "this process"
    assert set(versions) <= {v for v, _ in store.versions()}
    assert store.query(visual[5], text[5], k=1, candidates=10).best == "b5"


def test_manual_refresh_waits_for_refresh_index(tmp_path, recipe):
    store = PrototypeStore.open(tmp_path / "store", recipe, index=dataclasses.replace(SMALL, refresh="manual"))
    assert store.refresh_index() is None  # no index yet: nothing to refresh
    _fill(store, 320)
    assert store.refresh_index() is None  # indexed, nothing outside the index
    _fill(store, 3 * SMALL.max_unindexed, prefix="b", seed=1)
    assert not store.refreshing()
    assert store.unindexed_rows() == 3 * SMALL.max_unindexed  # writes never refresh in this mode
    record = store.refresh_index()
    assert (record.ok, record.where, record.unindexed_before, record.unindexed_after) == (
        True,
        "this process",
        3 * SMALL.max_unindexed,
        0,
    )
    assert store.index_status().last_refresh == record
    assert PrototypeStore.open(store.uri).index_status().last_refresh == record  # recorded in the store


def test_one_refresh_at_a_time_a_busy_lock_starts_none_and_the_next_write_does(indexed):
    store, _, _ = indexed
    with _refresh.refresh_lock(store._lock_path, timeout=0) as held:  # another refresh "runs"
        assert held
        assert store.refreshing()
        _fill(store, SMALL.max_unindexed + 1, prefix="b", seed=1)  # its worker finds the lock taken and exits
        assert store.refresh_index(timeout=0.2) is None  # nor does a refresh in this process wait forever
    assert not store.refreshing()
    assert store.wait_for_refresh(timeout=0)
    assert store.unindexed_rows() == SMALL.max_unindexed + 1
    _fill(store, 1, prefix="c", seed=2)  # the next write starts one
    assert store.wait_for_refresh(timeout=120)
    assert store.unindexed_rows() == 0


def test_a_killed_refresh_leaves_no_lock_behind(indexed):
    store, _, _ = indexed
    holder = subprocess.Popen(
        [sys.executable, "-c", _LOCK_HOLDER, str(store._lock_path)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "locked"
    assert store.refreshing()
    holder.kill()  # SIGKILL: no clean-up runs; the kernel drops the flock with the process
    holder.wait(timeout=30)
    holder.stdout.close()
    assert not store.refreshing()
    assert store.refresh_index(timeout=0) is None  # free at once (and nothing to fold in)


_LOCK_HOLDER = """
import sys, time
from pathlib import Path
from fsar_apps.store._refresh import refresh_lock
with refresh_lock(Path(sys.argv[1]), timeout=0) as held:
    print("locked" if held else "busy", flush=True)
    time.sleep(600)
"""


def test_a_failed_refresh_is_recorded_and_raised(tmp_path, recipe, monkeypatch):
    store = PrototypeStore.open(tmp_path / "store", recipe, index=dataclasses.replace(SMALL, refresh="manual"))
    _fill(store, 320)
    _fill(store, 5, prefix="b", seed=1)

    def fail(**_: object) -> None:
        raise RuntimeError("LanceError(IO): simulated failure\nsecond line")

    monkeypatch.setattr(store._table, "optimize", fail)
    with pytest.raises(RuntimeError, match="simulated failure"):
        store.refresh_index()
    record = store.index_status().last_refresh
    assert (record.ok, record.error, record.unindexed_before, record.unindexed_after) == (
        False,
        "RuntimeError: LanceError(IO): simulated failure",
        5,
        5,
    )
    assert record.describe().startswith("failed at ")
    assert record.describe().endswith("simulated failure")


def test_an_interrupted_refresh_is_recorded_as_failed(tmp_path, recipe, monkeypatch):
    store = PrototypeStore.open(tmp_path / "store", recipe, index=dataclasses.replace(SMALL, refresh="manual"))
    _fill(store, 320)
    _fill(store, 5, prefix="b", seed=1)

    def interrupt(**_: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(store._table, "optimize", interrupt)
    with pytest.raises(KeyboardInterrupt):
        store.refresh_index()
    record = store.index_status().last_refresh
    assert (record.ok, record.error, record.unindexed_after) == (False, "KeyboardInterrupt", 5)


def test_an_inline_refresh_that_fails_warns_and_keeps_the_write(tmp_path, recipe, monkeypatch):
    store = PrototypeStore.open(tmp_path / "store", recipe, index=dataclasses.replace(SMALL, refresh="inline"))
    _fill(store, 320)

    def fail(**_: object) -> None:
        raise RuntimeError("LanceError(IO): simulated failure")

    monkeypatch.setattr(store._table, "optimize", fail)
    with pytest.warns(RuntimeWarning, match=r"index refresh of .* failed .*simulated failure.*next write tries again"):
        visual, text = _fill(store, SMALL.max_unindexed + 1, prefix="b", seed=1)
    assert len(store) == 320 + SMALL.max_unindexed + 1  # the write committed
    assert store.index_status().last_refresh.ok is False
    assert store.query(visual[3], text[3], k=1, candidates=10).best == "b3"


def test_a_worker_that_cannot_start_is_a_warning_and_the_rows_stay_searchable(indexed, monkeypatch):
    store, _, _ = indexed

    def broken(*_: object) -> bool:
        raise RuntimeError("the index refresh worker did not start: simulated")

    monkeypatch.setattr(_refresh, "start_background", broken)
    with pytest.warns(RuntimeWarning, match=r"could not start in the background .*simulated.*fsar store index"):
        visual, text = _fill(store, SMALL.max_unindexed + 1, prefix="b", seed=1)
    assert store.unindexed_rows() == SMALL.max_unindexed + 1
    assert store.query(visual[7], text[7], k=1, candidates=10).best == "b7"


def test_a_memory_store_refreshes_in_its_own_process(recipe):
    store = PrototypeStore.open("memory://", recipe, index=SMALL)
    assert store._lock_path is None
    _fill(store, 320)
    _fill(store, SMALL.max_unindexed + 1, prefix="b", seed=1)
    assert store.unindexed_rows() == 0
    assert store.index_status().last_refresh.where == "this process"


def test_the_lock_of_an_object_store_lives_in_the_temporary_folder():
    local = _refresh.lock_path("/data/store", "prototypes")
    assert local == Path("/data/store/.fsar-refresh-prototypes.lock")
    remote = _refresh.lock_path("s3://bucket/store", "prototypes")
    assert remote.parent == Path(tempfile.gettempdir())
    assert remote.name.startswith("fsar-refresh-")
    assert remote != _refresh.lock_path("s3://bucket/other", "prototypes")
    assert _refresh.lock_path("memory://", "prototypes") is None


def test_the_store_index_command_shows_the_index_and_refreshes_it(tmp_path, recipe, capsys):
    from fsar_apps.cli import main

    path = tmp_path / "store"
    cli = ["store", "index", "--store", str(path)]
    store = PrototypeStore.open(path, recipe, index=dataclasses.replace(SMALL, refresh="manual"))
    _fill(store, 200)
    assert main([*cli, "--refresh"]) == 0  # the command's default settings: no index below 10,000 actions
    out = capsys.readouterr().out
    assert "no index below 10,000 actions" in out
    for row in (
        "actions +│ 200 ",
        r"indexed +│ no \(built at 10,000 actions\)",
        r"outside the index +│ 200 \(refreshed",
    ):
        assert re.search(row, out), row
    assert re.search("refresh running +│ no ", out)
    assert re.search("last refresh +│ never ", out)
    _fill(store, 120, prefix="b", seed=1)  # the write that reaches 300 rows indexes all 320, then 40 outside
    _fill(store, 40, prefix="c", seed=2)
    assert store.unindexed_rows() == 40
    assert main([*cli, "--refresh"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"refresh ok at .* \(this process\) in [0-9.]+ s: 40 rows folded in", out)
    assert re.search(r"indexed +│ yes ", out)
    assert re.search(r"outside the index +│ 0 \(refreshed past 2,000\)", out)
    assert re.search(r"last refresh +│ ok at ", out)
    assert main([*cli, "--refresh"]) == 0
    assert "nothing to refresh" in capsys.readouterr().out


def test_an_unknown_refresh_mode_is_refused_naming_the_registered_ones():
    with pytest.raises(
        InputError,
        match=re.escape(
            "unknown index refresh mode 'sometimes'; registered index refresh modes: background, inline, manual"
        ),
    ):
        IndexSettings(refresh="sometimes")


def test_a_store_reopened_with_other_settings_uses_them_and_existing_stores_keep_opening(tmp_path, recipe):
    path = tmp_path / "store"
    store = PrototypeStore.open(path, recipe)  # default settings: 10,000 rows before any index
    _fill(store, 320)
    assert not store.indexed()
    reopened = PrototypeStore.open(path, recipe, index=SMALL)
    assert reopened.index == SMALL
    reopened.add("one more", *(t[0] for t in _actions(1, seed=4)), support_ids=["x"])
    assert reopened.indexed()
    assert PrototypeStore.open(path).query(*(t[3] for t in _actions(4)), k=1).best == "a3"


def test_without_auto_index_writes_never_index_until_asked(tmp_path, recipe):
    store = PrototypeStore.open(tmp_path / "store", recipe, index=SMALL)
    store.auto_index = False
    _fill(store, 320)
    assert not store.indexed()
    assert store.create_indexes(min_rows=1000) is False  # below the given threshold: nothing built
    assert store.create_indexes() is True
    assert store.indexed()


def test_rows_read_back_as_written(store, prototypes):
    # The rows go from numpy straight into Arrow: the stored values are the prototypes, bit for bit.
    visual, text = prototypes
    store.add_many([(f"x{i}", visual[i], text[i], [f"s{i}"] * (i + 1)) for i in range(3)], action_texts=["p", "q", "r"])
    rows = store._table.search().limit(None).to_arrow().sort_by("key").to_pylist()
    assert [(r["key"], r["action_text"], r["shots"]) for r in rows] == [
        ("default/x0", "p", 1),
        ("default/x1", "q", 2),
        ("default/x2", "r", 3),
    ]
    for i, row in enumerate(rows):
        assert torch.equal(torch.tensor(row["frames"]), visual[i])
        torch.testing.assert_close(torch.tensor(row["vector"]), torch.nn.functional.normalize(visual[i].mean(0), dim=0))
        torch.testing.assert_close(torch.tensor(row["text"]), torch.nn.functional.normalize(text[i], dim=0))
        assert row["support_ids"] == [f"s{i}"] * (i + 1)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"min_rows": 0}, "IndexSettings.min_rows must be >= 1, got 0"),
        ({"nprobes": -1}, "IndexSettings.nprobes must be >= 1, got -1"),
        ({"refine_factor": 0}, "IndexSettings.refine_factor must be >= 1, got 0"),
    ],
)
def test_bad_index_settings_are_refused_naming_the_field(fields, message):
    with pytest.raises(InputError, match=message):
        IndexSettings(**fields)


def test_a_width_the_pq_sub_vectors_do_not_divide_is_refused(tmp_path, recipe):
    store = PrototypeStore.open(tmp_path / "store", recipe, index=IndexSettings(min_rows=1, sub_vector_dim=5))
    store.auto_index = False
    _fill(store, 3)
    with pytest.raises(
        InputError, match=re.escape("IVF-PQ needs D divisible by IndexSettings.sub_vector_dim = 5, got D = 16")
    ):
        store.create_indexes()


def test_add_many_refuses_a_wrong_number_of_action_texts(store, prototypes):
    visual, text = prototypes
    with pytest.raises(InputError, match="add_many got 1 action_texts for 2 actions"):
        store.add_many([("a", visual[0], text[0], ["v"]), ("b", visual[1], text[1], ["v"])], action_texts=["x"])


_WRITER = """
import sys, torch
from fsar_apps.store import IndexSettings, PrototypeStore
from fsar_apps.store import _refresh
path, w = sys.argv[1], int(sys.argv[2])
settings = IndexSettings(min_rows=300, max_unindexed=20, nprobes=8, refine_factor=5, sub_vector_dim=4)
store = PrototypeStore.open(path, index=settings)
gen = torch.Generator().manual_seed(w)
for b in range(6):
    visual, text = torch.randn(30, 4, 16, generator=gen), torch.randn(30, 16, generator=gen)
    store.add_many([(f"w{w}-{b}-{i}", visual[i], text[i], ["v"]) for i in range(30)])
"""


def test_concurrent_writers_across_the_threshold_and_refreshes_lose_no_row(tmp_path, recipe):
    path = str(tmp_path / "shared")
    store = PrototypeStore.open(path, recipe)
    store.auto_index = False
    _fill(store, 200)  # the writers cross 300 rows together, then refresh every 20 unindexed rows
    writers = [subprocess.Popen([sys.executable, "-c", _WRITER, path, str(w)]) for w in range(2)]
    assert [w.wait(timeout=300) for w in writers] == [0, 0]
    reopened = PrototypeStore.open(path, index=SMALL)
    assert reopened.wait_for_refresh(timeout=120)  # a background refresh they started may still run
    names = {a.action for a in reopened.list()}
    assert names == {f"a{i}" for i in range(200)} | {
        f"w{w}-{b}-{i}" for w in range(2) for b in range(6) for i in range(30)
    }
    assert reopened.indexed()
    visual, text = _actions(200)
    assert reopened.query(visual[42], text[42], k=1, candidates=10).best == "a42"
