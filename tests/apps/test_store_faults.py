"""File-system faults under the store (full disk, read-only folder): one sentence naming the store,
nothing committed before is lost, the same command works once the fault is fixed."""

from __future__ import annotations

import errno

import lancedb
import pytest

from fsar_apps.store import PrototypeStore
from fsar_features import WriteError

#: What Lance raised on a real 300 KiB tmpfs that filled during an add (lancedb 0.40, lance 13).
LANCE_FULL = (
    "lance error: LanceError(IO): Generic LocalFileSystem error: Unable to copy data to file: "
    "No space left on device (os error 28), lance-table-13.0.0/src/io/commit.rs:1663:50"
)
LANCE_READ_ONLY = "lance error: LanceError(IO): Read-only file system (os error 30), lance-io/src/local.rs:1:1"


def _fail_merges(monkeypatch, store, message):
    real = store._table.merge_insert

    def merge_insert(*args, **kwargs):
        builder = real(*args, **kwargs)

        class Failing:
            def __getattr__(self, name):
                attr = getattr(builder, name)
                if name == "execute":

                    def execute(*a, **k):
                        raise RuntimeError(message)

                    return execute
                return lambda *a, **k: (attr(*a, **k), self)[1]

        return Failing()

    monkeypatch.setattr(store._table, "merge_insert", merge_insert)


@pytest.mark.parametrize(
    ("message", "code", "says"),
    [
        (LANCE_FULL, errno.ENOSPC, "no space left on the device; free some space and run the same command again"),
        (LANCE_READ_ONLY, errno.EROFS, "the file system is read-only; choose a writable folder"),
    ],
)
def test_a_fault_during_an_add_names_the_store_and_keeps_what_was_there(
    store, prototypes, monkeypatch, message, code, says
):
    visual, text = prototypes
    store.add("kept", visual[0], text[0], support_ids=["v0"])
    version = store.version
    _fail_merges(monkeypatch, store, message)
    with pytest.raises(WriteError) as caught:
        store.add("new", visual[1], text[1], support_ids=["v1"])
    assert str(caught.value).startswith(f"cannot write the store {store.uri}: {says}")
    assert caught.value.errno == code
    monkeypatch.undo()
    again = PrototypeStore.open(store.uri)
    assert [a.action for a in again.list()] == ["kept"]
    assert again.version == version
    again.add("new", visual[1], text[1], support_ids=["v1"])  # the same add works once the fault is gone
    assert sorted(a.action for a in again.list()) == ["kept", "new"]


def test_a_fault_while_creating_a_store_names_it(tmp_path, recipe, monkeypatch):
    def full(*args, **kwargs):
        raise RuntimeError(LANCE_FULL)

    monkeypatch.setattr(lancedb.db.LanceDBConnection, "create_table", full)
    with pytest.raises(WriteError, match=r"^cannot write the store .*store: no space left on the device"):
        PrototypeStore.open(tmp_path / "store", recipe)


def test_lance_errors_that_are_not_file_system_faults_pass_through(store, prototypes, monkeypatch):
    visual, text = prototypes
    _fail_merges(monkeypatch, store, "lance error: LanceError(Schema): something else")
    with pytest.raises(RuntimeError, match="something else") as caught:
        store.add("x", visual[0], text[0], support_ids=["v0"])
    assert not isinstance(caught.value, WriteError)


def test_a_store_path_that_is_a_file_is_named(tmp_path, recipe):
    path = tmp_path / "notes.txt"
    path.write_text("mine")
    for wanted in (recipe, None):
        with pytest.raises(ValueError, match=r"notes\.txt is a file, not a prototype store \(a folder\)"):
            PrototypeStore.open(path, wanted)
    assert path.read_text() == "mine"
