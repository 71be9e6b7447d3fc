"""A LanceDB store of action prototypes for retrieval-style few-shot classification.

One row per action (visual prototype ``[T, D]``, its pooled vector, text prototype ``[D]``), made
by a trained FSAR-LLaVA head from K example videos. A query is a cosine vector search for
candidates (visual and text columns, optionally filtered by tag) followed by MPMM re-ranking of
the candidates, exactly the matching the head uses in episodes. From ``IndexSettings.min_rows``
actions on, the searches use IVF-PQ indexes that writes build and refresh themselves
(``docs/store.md``, "Large stores").

Guarantees (``docs/store.md``, "What the store guarantees, and how it is tested"): the store
records exactly one recipe (features + head): the one the metadata table's first commit holds, so of
several processes creating a store at once exactly one recipe wins and the others get
``StoreMismatchError``; it refuses anything else. ``key`` (``tag/action``) is the tables' unenforced
primary key, so Lance detects concurrent ``merge_insert``s of the same key and retries them: one
row per key whatever the concurrency, the last writer to commit wins. Every change is a table
version that ``restore`` can go back to. Any LanceDB URI works (a local path by default; object
storage with ``storage_options``); the guarantees rest on Lance's atomic put-if-not-exists commit,
which local file systems and S3 (conditional writes) provide.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import re
import subprocess
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import lancedb
import numpy as np
import pyarrow as pa
import torch
from torch import Tensor, nn

from fsar_apps.store import _refresh
from fsar_apps.store._refresh import META_TABLE, RefreshRecord, retry_conflicts
from fsar_apps.store._schema import StoreRecipe, prototype_model
from fsar_metric import MPMMConfig, build_temporal, mpmm_match
from fsar_metric.errors import InputError
from fsar_metric.registry import NoDeclared, Registry

__all__ = [
    "REFRESH_MODES",
    "ActionInfo",
    "IndexSettings",
    "IndexStatus",
    "Match",
    "PrototypeStore",
    "QueryResult",
    "StoreMismatchError",
    "calibrate_threshold",
]

#: How long a process waits for another to create a table it claimed (``_open_or_claim``).
_CLAIM_WAIT_S = 30.0

#: Lance reports file-system faults as RuntimeError("… No space left on device (os error 28) …").
_OS_ERROR = re.compile(r"\(os error (\d+)\)")


@contextlib.contextmanager
def _writing(uri: str) -> Iterator[None]:
    """Turn a full disk, a read-only folder or a refused permission under Lance into ``WriteError``.

    Raises:
        WriteError: one sentence naming the store; what was committed before stays (every commit
            is atomic), so the same command can be run again once the fault is fixed.
    """
    try:
        yield
    except (OSError, RuntimeError) as err:
        code = err.errno if isinstance(err, OSError) else None
        if code is None:
            found = _OS_ERROR.search(str(err))
            code = int(found.group(1)) if found else None
        if code is None:
            raise
        # Imported only on a fault: a store needs nothing else of fsar_features.
        from fsar_features import WriteError, describe_os_error

        message = describe_os_error(OSError(code, os.strerror(code)), f"the store {uri}")
        if message is None or isinstance(err, WriteError):
            raise
        raise WriteError(code, message, uri) from err


def _write_method(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` of a ``PrototypeStore`` with its file-system faults named (``_writing``)."""

    @functools.wraps(method)
    def wrapper(self: PrototypeStore, *args: Any, **kwargs: Any) -> Any:
        with _writing(self.uri):
            return method(self, *args, **kwargs)

    return wrapper


class StoreMismatchError(InputError):
    """Prototypes or a store made with a different feature recipe or head."""


#: Field metadata that makes ``key`` Lance's unenforced primary key: ``merge_insert`` then detects
#: concurrent inserts of the same key (a commit conflict, retried) instead of writing two rows.
_PRIMARY_KEY = {b"lance-schema:unenforced-primary-key": b"true"}
_PRIMARY_KEY_MARKERS = (b"lance-schema:unenforced-primary-key", b"lance-schema:unenforced-primary-key:position")


def _with_primary_key(schema: pa.Schema) -> pa.Schema:
    """``schema`` with its (non-nullable) ``key`` column marked as the primary key."""
    index = schema.get_field_index("key")
    return schema.set(index, schema.field(index).with_nullable(False).with_metadata(_PRIMARY_KEY))


def _has_primary_key(schema: pa.Schema) -> bool:
    return any(marker in (schema.field("key").metadata or {}) for marker in _PRIMARY_KEY_MARKERS)


def _ensure_primary_key(table: Any) -> None:
    """Mark ``key`` as ``table``'s primary key if a store made by an older fsar lacks it."""
    if not _has_primary_key(table.schema):
        try:
            table.set_unenforced_primary_key("key")
        except ValueError:  # another process set it in the meantime
            if not _has_primary_key(table.schema):
                raise


_META_SCHEMA = _with_primary_key(pa.schema([pa.field("key", pa.string()), pa.field("value", pa.string(), False)]))


@dataclass(frozen=True)
class ActionInfo:
    """One stored action, as ``list`` shows it."""

    action: str
    action_text: str
    tag: str
    shots: int
    support_ids: list[str]
    created: datetime


@dataclass(frozen=True)
class Match:
    """One candidate action for a query.

    Attributes:
        action: the action name.
        tag: its collection.
        score: the fused MPMM logit (comparable within one query).
        probability: softmax of the fused logits over the re-ranked candidates.
    """

    action: str
    tag: str
    score: float
    probability: float


@dataclass(frozen=True)
class QueryResult:
    """Top-k matches; ``unknown`` when ``confidence`` = log(M · p_best) is below the store's threshold."""

    matches: list[Match]
    unknown: bool
    threshold: float | None
    n_candidates: int
    confidence: float = 0.0  # log(M · p_best): 0 when the M candidates are equally likely

    @property
    def best(self) -> str | None:
        """The predicted action, or None for an unknown query or an empty store."""
        return None if self.unknown or not self.matches else self.matches[0].action


#: The search columns; each gets an ANN index named ``<column>_idx`` once the table is large.
_SEARCH_COLUMNS = ("vector", "text")


@dataclass(frozen=True)
class IndexSettings:
    """When the store builds approximate (ANN) indexes on its search columns, and how it searches them.

    Below ``min_rows`` rows a query scans every row (exact, and fast enough: 20 ms per column at
    10,000 actions of D = 1024). From ``min_rows`` on, the write that reaches it builds an IVF-PQ
    cosine index on ``vector`` and ``text`` (``merge_insert`` on ``key`` needs no index:
    adding one action takes about 15 ms at 20,000 rows). Rows added afterwards are
    searched exactly by Lance next to the index (its flat fallback over unindexed rows); once more
    than ``max_unindexed`` rows are outside the index, the write that sees it starts an index
    refresh that folds them in (LanceDB's ``optimize``: compaction and an incremental index update,
    no version pruned; 26–37 s at 100,000 actions on 2 cores). ``refresh`` says where it runs
    (``REFRESH_MODES``): ``background`` (default) starts a detached worker process and returns at
    once; ``inline`` runs it in the write; ``manual`` leaves it to ``PrototypeStore.refresh_index``
    (``fsar store index --refresh``).

    Attributes:
        min_rows: rows from which the indexes are built (and kept).
        max_unindexed: rows outside the index that trigger the refresh.
        nprobes: IVF partitions searched per query.
        refine_factor: the index returns ``refine_factor × candidates`` rows by their PQ distance
            and Lance re-scores them with the stored vectors, keeping the ``candidates`` best.
        sub_vector_dim: PQ sub-vector width (``D / sub_vector_dim`` sub-vectors; D must divide).
        refresh: where the index refresh runs: ``background``, ``inline`` or ``manual``.
    """

    min_rows: int = 10_000
    max_unindexed: int = 2_000
    nprobes: int = 20
    refine_factor: int = 10
    sub_vector_dim: int = 16
    refresh: str = "background"

    def __post_init__(self) -> None:
        for name in ("min_rows", "max_unindexed", "nprobes", "refine_factor", "sub_vector_dim"):
            if getattr(self, name) < 1:
                raise InputError(f"IndexSettings.{name} must be >= 1, got {getattr(self, name)}")
        REFRESH_MODES.entry(self.refresh)  # an unknown mode is refused, naming the registered ones

    def partitions(self, n_rows: int) -> int:
        """IVF partitions for ``n_rows`` rows: sqrt(n), LanceDB's rule (100 at 10,000; 316 at 100,000)."""
        return max(1, int(math.sqrt(n_rows)))


#: Where the index refresh runs (``IndexSettings.refresh``): each entry is called with the store
#: by the write that finds more than ``IndexSettings.max_unindexed`` rows outside the index.
REFRESH_MODES: Registry[Callable[[PrototypeStore], None], NoDeclared] = Registry("index refresh mode")


@dataclass(frozen=True)
class IndexStatus:
    """A prototype table's ANN indexes at a glance (``PrototypeStore.index_status``).

    Attributes:
        rows: the table's rows.
        indexed: whether both search columns have an index.
        unindexed: rows outside the ``vector`` index (searched exactly next to it).
        refreshing: whether a refresh is running now (on this machine).
        last_refresh: the latest recorded refresh, or None.
        settings: this process's ``IndexSettings``.
    """

    rows: int
    indexed: bool
    unindexed: int
    refreshing: bool
    last_refresh: RefreshRecord | None
    settings: IndexSettings


def _sql(value: str) -> str:
    """A SQL string literal for LanceDB filters (single quotes doubled)."""
    return "'" + value.replace("'", "''") + "'"


#: The longest action name or tag a store takes (class names of the public benchmarks are < 100).
MAX_NAME_LENGTH = 200


def check_name(kind: str, value: str) -> str:
    """``value`` if it is a usable action name or tag (``kind``: "action" or "tag").

    Not empty, at most ``MAX_NAME_LENGTH`` characters, no control characters; a tag has no ``/`` (the
    row key is ``tag/action``, so a ``/`` in the tag could make two different pairs one key).

    Raises:
        ValueError: what is wrong, quoting at most the first 40 characters.

    Example:
        >>> check_name("tag", "a/b")
        Traceback (most recent call last):
        ...
        fsar_metric.errors.InputError: a tag cannot contain '/' (got 'a/b'): the store's key is tag/action
    """
    shown = repr(value[:40]) + ("…" if len(value) > 40 else "")
    if not value.strip():
        raise InputError(f"an {kind} name cannot be empty" if kind == "action" else f"a {kind} cannot be empty")
    if len(value) > MAX_NAME_LENGTH:
        raise InputError(f"{kind} names are at most {MAX_NAME_LENGTH} characters; got {len(value):,} ({shown})")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise InputError(f"{kind} names cannot contain control characters (got {shown})")
    if kind == "tag" and "/" in value:
        raise InputError(f"a tag cannot contain '/' (got {shown}): the store's key is tag/action")
    return value


def _key(tag: str, action: str) -> str:
    """The row key; unambiguous because a tag holds no ``/``."""
    return f"{check_name('tag', tag)}/{check_name('action', action)}"


def calibrate_threshold(known: Tensor, unknown: Tensor, *, min_tpr: float = 0.5) -> float:
    """The confidence threshold that best separates accepted from rejected queries.

    Args:
        known: ``[A]`` ``QueryResult.confidence`` of queries that should be accepted (their action
            is stored and ranked first), e.g. from meta-val.
        unknown: ``[B]`` confidences of queries whose action is not stored.
        min_tpr: the threshold keeps at least this share of ``known`` accepted. Without it, weak
            features (where the two sides barely separate) can put the best J = TPR − FPR at a
            threshold above almost every query, and the store would call everything unknown.

    Returns:
        The threshold maximising Youden's J = TPR − FPR among those with TPR ≥ ``min_tpr``
        (queries whose confidence is below it are "unknown").

    Raises:
        ValueError: either side is empty, or ``min_tpr`` is outside [0, 1].
    """
    if known.numel() == 0 or unknown.numel() == 0:
        raise InputError(f"calibration needs both known and unknown queries, got {known.numel()} and {unknown.numel()}")
    if not 0.0 <= min_tpr <= 1.0:
        raise InputError(f"min_tpr must be in [0, 1], got {min_tpr}")
    candidates = torch.cat([known, unknown, known.new_tensor([math.inf])]).unique()  # sorted
    tpr = (known[None, :] >= candidates[:, None]).float().mean(1)
    fpr = (unknown[None, :] >= candidates[:, None]).float().mean(1)
    youden = torch.where(tpr >= min_tpr, tpr - fpr, torch.full_like(tpr, -math.inf))  # the lowest keeps TPR = 1
    return float(candidates[youden.argmax()])


class PrototypeStore:
    """Prototypes of actions in a LanceDB database (see the module docstring).

    Open with ``PrototypeStore.open(uri, recipe)``; the first open of a new URI records the recipe.

    Example:
        >>> import tempfile, torch
        >>> from fsar_apps.store import PrototypeStore, StoreRecipe
        >>> from fsar_features import FeatureExtractor
        >>> recipe = StoreRecipe(FeatureExtractor("tiny-video-llava").recipe, head_hash="h0", dim=4, n_frames=2)
        >>> store = PrototypeStore.open(tempfile.mkdtemp(), recipe)
        >>> version = store.add("waving", torch.randn(2, 4), torch.randn(4), support_ids=["v1"])
        >>> [a.action for a in store.list()]
        ['waving']
        >>> store.query(torch.randn(2, 4), torch.randn(4), k=1).matches[0].action
        'waving'
    """

    def __init__(
        self,
        db: Any,
        table: Any,
        meta: Any,
        recipe: StoreRecipe,
        uri: str,
        index: IndexSettings | None = None,
        storage_options: dict[str, str] | None = None,
    ) -> None:
        self._db, self._table, self._meta, self.recipe, self.uri = db, table, meta, recipe, uri
        self._storage_options = storage_options  # handed to a background index refresh
        self.index = index if index is not None else IndexSettings()
        self.auto_index = True

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(
        cls,
        uri: str | Path,
        recipe: StoreRecipe | None = None,
        *,
        table_name: str = "prototypes",
        storage_options: dict[str, str] | None = None,
        index: IndexSettings | None = None,
    ) -> PrototypeStore:
        """Open (or, with a recipe, create) the store at ``uri``.

        Creating is race-free: the metadata table is created with the recipe row in its first
        commit, and Lance writes a table's version 1 once (put-if-not-exists); the store's recipe is
        the one version 1 records. When several processes create the same store at once, a process
        with another recipe gets ``StoreMismatchError`` (and puts the winner's row back if Lance
        retried its losing create as an overwrite), one with the same recipe opens the store.

        Args:
            uri: a local path or any LanceDB URI (``s3://…``, ``memory://``).
            recipe: the recipe of the prototypes you will add or query with. Required to create a
                store; when given for an existing store it must equal the stored one. Without it the
                open is read-only in effect: nothing is created at a URI that holds no store.
            table_name: the prototype table (several can share one store's recipe).
            storage_options: object-store settings passed to ``lancedb.connect`` (for S3:
                ``aws_endpoint``, ``aws_access_key_id``, ``aws_secret_access_key``, ``aws_region``,
                ``allow_http``).
            index: when to build the ANN indexes and how to search them (default ``IndexSettings()``:
                from 10,000 actions on). Not recorded in the store: each process opens with its own.

        Raises:
            StoreMismatchError: ``recipe`` differs from the store's (both are named), or the store
                (made by an older fsar) records several different recipes.
            ValueError: no store at ``uri`` and no recipe to create one, ``uri`` is a file, a recipe with ``dim`` or
                ``n_frames`` below 1, or a metadata table without a recipe.
        """
        uri = str(uri)
        with _writing(uri):  # creating a store writes: a full disk or a read-only folder is named
            store = cls._open(uri, recipe, table_name=table_name, storage_options=storage_options)
        if index is not None:
            store.index = index
        return store

    @classmethod
    def _open(
        cls, uri: str, recipe: StoreRecipe | None, *, table_name: str, storage_options: dict[str, str] | None
    ) -> PrototypeStore:
        """``open`` without the fault translation."""
        missing = f"no prototype store at {uri}: create one by opening it with a StoreRecipe (e.g. `store build`)"
        if "://" not in uri and Path(uri).exists() and not Path(uri).is_dir():
            raise InputError(f"{uri} is a file, not a prototype store (a folder): choose another store path")
        if recipe is None and "://" not in uri and not (Path(uri) / f"{META_TABLE}.lance").is_dir():
            raise InputError(missing)  # a read-only open never creates anything (connect makes the folder)
        if recipe is not None and (recipe.dim < 1 or recipe.n_frames < 1):
            raise InputError(f"a store recipe needs dim >= 1 and n_frames >= 1, got {recipe.describe()}")
        me = uuid.uuid4().hex  # this process's id in table-creation claims (``_open_or_claim``)
        # Read-your-writes across processes: every read sees the latest committed version.
        db = lancedb.connect(uri, read_consistency_interval=timedelta(0), storage_options=storage_options)
        if recipe is None:
            try:
                meta = db.open_table(META_TABLE)
            except ValueError:  # not there (or another process is creating it: not a store yet)
                raise InputError(missing) from None
        else:
            # The first commit holds the recipe and this process's claim to create the prototype table.
            rows = [{"key": "recipe", "value": recipe.to_json()}, {"key": f"table:{table_name}", "value": me}]
            meta = cls._open_or_create(db, META_TABLE, pa.Table.from_pylist(rows, schema=_META_SCHEMA))
        stored_recipe = cls._read_recipe(meta, uri)
        if recipe is not None:
            cls._repair_recipe_row(meta, stored_recipe)  # after our own create, if it lost the race
            if stored_recipe.recorded is not None and dataclasses.replace(stored_recipe, mpmm=recipe.mpmm) == recipe:
                # A store written before recipes held the MPMM settings: its head hash covers the head's
                # whole config, so the same head hash means these are the settings of the head that made it.
                stored_recipe = dataclasses.replace(stored_recipe, mpmm=recipe.mpmm)
        if recipe is not None and recipe != stored_recipe:
            raise StoreMismatchError(
                f"the store at {uri} holds prototypes of {stored_recipe.describe()} "
                f"(recipe {stored_recipe.fingerprint}), not {recipe.describe()} (recipe {recipe.fingerprint})"
            )
        empty = _with_primary_key(prototype_model(stored_recipe.dim).to_arrow_schema()).empty_table()
        table = cls._open_or_claim(db, meta, table_name, empty, uri, me)
        return cls(db, table, meta, stored_recipe, uri, storage_options=storage_options)

    @classmethod
    def _open_or_claim(cls, db: Any, meta: Any, name: str, empty: pa.Table, uri: str, me: str) -> Any:
        """The prototype table ``name``; when it does not exist, exactly one process creates it.

        Lance can retry a losing ``create_table`` as an overwrite, which would empty a table that
        its winner has already written to. So creating is claimed first, and only the claimant
        calls ``create_table``; the others wait for the table to appear. The claim of a new store's
        table is in the metadata table's version 1 (written once, with the recipe); a table added
        to an existing store is claimed by inserting ``table:<name> → <id>`` insert-if-absent on the
        primary key (concurrent inserts of one key conflict, and the retried insert finds the row
        and does nothing). A claim whose table has not appeared after ``_CLAIM_WAIT_S`` (its
        claimant died) is withdrawn and claimed again.

        Raises:
            ValueError: the table did not appear although claimed twice (named, with the store).
        """
        with contextlib.suppress(ValueError):  # not found
            return db.open_table(name)
        key = f"table:{name}"
        owner = next((r["value"] for r in cls._first_version_rows(meta) if r["key"] == key), None)
        for _ in range(2):
            if owner is None:
                _ensure_primary_key(meta)
                claim = pa.Table.from_pylist([{"key": key, "value": me}], schema=meta.schema)
                retry_conflicts(
                    lambda claim=claim: meta.merge_insert("key").when_not_matched_insert_all().execute(claim)
                )
                owner = cls._read_meta(meta).get(key)
            if owner == me:
                return cls._open_or_create(db, name, empty)
            deadline = time.monotonic() + _CLAIM_WAIT_S
            while time.monotonic() < deadline:
                with contextlib.suppress(ValueError):
                    return db.open_table(name)
                time.sleep(0.05)
            # Its claimant died before creating it: withdraw that claim and claim again.
            retry_conflicts(lambda owner=owner: meta.delete(f"key = {_sql(key)} AND value = {_sql(str(owner))}"))
            owner = None
        raise InputError(f"the table {name!r} of the store {uri} was claimed but never created; run the command again")

    @staticmethod
    def _open_or_create(db: Any, name: str, first: pa.Table) -> Any:
        """The table ``name``, created with ``first`` as its first commit if it does not exist.

        Lance writes a table's version 1 once (put-if-not-exists): of concurrent creators one
        writes it; the others open the table (``mode="create"`` refuses an existing one, or Lance
        retries their commit as a later version, which ``_read_recipe`` ignores).

        Raises:
            Exception: the creation error, when the table could not be created and cannot be opened.
        """
        with contextlib.suppress(ValueError):  # not found (listed tables can be half-created ones: always try to open)
            return db.open_table(name)
        try:
            return db.create_table(name, data=first, mode="create")
        except Exception as error:  # "already exists", or a lost race on the first manifest
            try:
                return db.open_table(name)
            except Exception:
                raise error from None

    @staticmethod
    def _recipe_rows(meta: Any) -> list[str]:
        return meta.search().where("key = 'recipe'").limit(None).to_arrow().column("value").to_pylist()

    @classmethod
    def _read_recipe(cls, meta: Any, uri: str) -> StoreRecipe:
        """The store's one recipe: the one in the metadata table's first version.

        Version 1 is written once (put-if-not-exists), so it names one recipe whoever raced to
        create the store. A creator that lost the race can still have its ``create_table`` retried by
        Lance as an overwrite at a later version; reading version 1 ignores that. A store made by an
        older fsar has an empty version 1 and its recipe row(s) in later versions.

        Raises:
            StoreMismatchError: an older store records several different recipes (concurrent
                creators could each add one).
            ValueError: it records none (a creation interrupted with an older fsar).
        """
        rows = [r["value"] for r in cls._first_version_rows(meta) if r["key"] == "recipe"]
        rows = rows or cls._recipe_rows(meta)
        recipes = sorted(set(rows))
        if not recipes:
            raise InputError(f"the store at {uri} records no recipe (an interrupted creation): delete it and rebuild")
        if len(recipes) > 1:
            described = "; ".join(
                f"{r.describe()} (recipe {r.fingerprint})" for r in map(StoreRecipe.from_json, recipes)
            )
            raise StoreMismatchError(
                f"the store at {uri} records {len(recipes)} different recipes ({described}): it was created by "
                "concurrent processes with an older fsar; rebuild it"
            )
        return StoreRecipe.from_json(recipes[0])

    @staticmethod
    def _first_version_rows(meta: Any) -> list[dict[str, str]]:
        """The metadata rows of version 1 (written once); empty for a store whose version 1 is gone."""
        try:
            meta.checkout(1)
            return meta.search().limit(None).to_arrow().to_pylist()
        except (ValueError, RuntimeError, OSError):  # version 1 cleaned up: an older store
            return []
        finally:
            meta.checkout_latest()

    @classmethod
    def _repair_recipe_row(cls, meta: Any, recipe: StoreRecipe) -> None:
        """Put ``recipe`` back as the latest version's recipe row if a losing creator replaced it."""
        rows = cls._recipe_rows(meta)
        if len(rows) <= 1 and rows != [recipe.to_json()]:
            retry_conflicts(lambda: cls._upsert(meta, [{"key": "recipe", "value": recipe.to_json()}]))

    @staticmethod
    def _read_meta(meta: Any) -> dict[str, str]:
        rows = meta.search().limit(None).to_arrow().to_pylist()
        return {row["key"]: row["value"] for row in rows}

    @staticmethod
    def _upsert(table: Any, rows: list[dict[str, Any]] | pa.Table) -> int:
        """Insert or replace ``rows`` by ``key`` in one version; returns it.

        With ``key`` as the primary key Lance detects a concurrent insert of the same key as a
        commit conflict and retries the merge, which then replaces that row: one row per key, the
        last writer to commit wins. A table made by an older fsar gets the primary key first.
        """
        _ensure_primary_key(table)
        if isinstance(rows, pa.Table):
            data = pa.Table.from_arrays(rows.columns, schema=table.schema)
        else:
            data = pa.Table.from_pylist(rows, schema=table.schema)
        result = table.merge_insert("key").when_matched_update_all().when_not_matched_insert_all().execute(data)
        return int(result.version)

    # ------------------------------------------------------------------ writing
    def _check(self, visual: Tensor, text: Tensor, recipe: StoreRecipe | None) -> None:
        if recipe is not None and recipe != self.recipe:
            raise StoreMismatchError(
                f"prototypes of {recipe.describe()} (recipe {recipe.fingerprint}) cannot go into the store at "
                f"{self.uri}, which holds {self.recipe.describe()} (recipe {self.recipe.fingerprint})"
            )
        expected = (self.recipe.n_frames, self.recipe.dim)
        if tuple(visual.shape) != expected or tuple(text.shape) != (self.recipe.dim,):
            raise InputError(
                f"a prototype must be visual [T, D] = {list(expected)} and text [D] = [{self.recipe.dim}], "
                f"got {list(visual.shape)} and {list(text.shape)}"
            )
        if not (torch.isfinite(visual).all() and torch.isfinite(text).all()):
            raise InputError("a prototype holds NaN or inf values")

    def _rows(
        self,
        actions: list[str],
        visual: Tensor,
        text: Tensor,
        support_ids: list[list[str]],
        tag: str,
        action_texts: list[str] | None,
    ) -> pa.Table:
        """The rows of ``actions`` as one Arrow table of the prototype schema.

        Args:
            visual: ``[N, T, D]`` visual prototypes (checked by ``_check``).
            text: ``[N, D]`` text prototypes.

        The vectors go from numpy buffers straight into Arrow: 100,000 actions of ``[8, 1024]``
        through Python lists took minutes.
        """
        keys = [_key(tag, check_name("action", action)) for action in actions]
        visual = visual.detach().float().cpu()
        text = text.detach().float().cpu()
        n, n_frames, dim = visual.shape
        vector = nn.functional.normalize(visual.mean(1), dim=1).numpy().reshape(-1)
        unit_text = nn.functional.normalize(text, dim=1).numpy().reshape(-1)
        frames = np.ascontiguousarray(visual.numpy()).reshape(-1)
        schema = self._table.schema
        frame_rows = pa.FixedSizeListArray.from_arrays(pa.array(frames, pa.float32()), dim)
        offsets = pa.array(np.arange(0, (n + 1) * n_frames, n_frames, dtype=np.int32))
        now = datetime.now(UTC)
        columns = {
            "key": pa.array(keys, pa.string()),
            "action": pa.array(actions, pa.string()),
            "action_text": pa.array(action_texts if action_texts is not None else actions, pa.string()),
            "tag": pa.array([tag] * n, pa.string()),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vector, pa.float32()), dim),
            "frames": pa.ListArray.from_arrays(offsets, frame_rows),
            "text": pa.FixedSizeListArray.from_arrays(pa.array(unit_text, pa.float32()), dim),
            "shots": pa.array([len(ids) for ids in support_ids], pa.int64()),
            "support_ids": pa.array([list(ids) for ids in support_ids], pa.list_(pa.string())),
            "recipe_hash": pa.array([self.recipe.fingerprint] * n, pa.string()),
            "head_hash": pa.array([self.recipe.head_hash] * n, pa.string()),
            "created": pa.array([now] * n, pa.timestamp("us")),
        }
        return pa.Table.from_arrays([columns[f.name].cast(f.type) for f in schema], schema=schema)

    def add(
        self,
        action: str,
        visual: Tensor,
        text: Tensor,
        *,
        support_ids: list[str],
        tag: str = "default",
        action_text: str | None = None,
        recipe: StoreRecipe | None = None,
    ) -> int:
        """Add (or replace) one action's prototype; returns the new table version.

        The row's key is ``tag/action``; an existing row of that key is replaced. Concurrent adds
        of the same key leave one row: the last writer to commit wins.

        Args:
            action: the action name.
            visual: ``[T, D]`` visual prototype P_v.
            text: ``[D]`` text prototype P_t.
            support_ids: the K example videos it was built from.
            tag: the collection (dataset name or user collection).
            action_text: the normalised name, if it differs.
            recipe: the recipe the prototype was made with; refused if it is not the store's.

        Raises:
            StoreMismatchError: ``recipe`` is not the store's.
            ValueError: a bad name or tag (``check_name``), or a prototype of the wrong shape or
                holding NaN/inf.
        """
        return self.add_many(
            [(action, visual, text, support_ids)],
            tag=tag,
            recipe=recipe,
            action_texts=None if action_text is None else [action_text],
        )

    @_write_method
    def add_many(
        self,
        items: list[tuple[str, Tensor, Tensor, list[str]]],
        *,
        tag: str = "default",
        recipe: StoreRecipe | None = None,
        action_texts: list[str] | None = None,
    ) -> int:
        """Add or replace several actions ``(action, visual [T, D], text [D], support_ids)`` in one version.

        One row per key whatever the concurrency (see ``add``); ``action_texts`` gives each action's
        normalised name when it differs.

        Raises:
            StoreMismatchError: ``recipe`` is not the store's.
            ValueError: no items, the same action twice, or an item ``add`` would refuse.
        """
        if not items:
            raise InputError("add_many got no actions")
        names = [item[0] for item in items]
        if len(set(names)) != len(names):
            raise InputError(
                f"add_many got the same action twice: {sorted(n for n in set(names) if names.count(n) > 1)}"
            )
        if action_texts is not None and len(action_texts) != len(items):
            raise InputError(f"add_many got {len(action_texts)} action_texts for {len(items)} actions")
        for _, visual, text, _ in items:
            self._check(visual, text, recipe)
        rows = self._rows(
            names,
            torch.stack([item[1] for item in items]),
            torch.stack([item[2] for item in items]),
            [item[3] for item in items],
            tag,
            action_texts,
        )
        version = self._upsert(self._table, rows)
        if self.auto_index:
            self._maintain_indexes()
        return version

    @_write_method
    def remove(self, action: str, *, tag: str = "default") -> int:
        """Delete one action; returns the new table version.

        Raises:
            ValueError: the action is not in the store (the message lists the tag's actions).
        """
        self._require(action, tag)
        self._table.delete(f"key = {_sql(_key(tag, action))}")
        return self._table.version

    @_write_method
    def rename(self, old: str, new: str, *, tag: str = "default") -> int:
        """Rename an action in place (one new version).

        Raises:
            ValueError: ``old`` is missing, ``new`` exists already, or ``new`` is empty.
        """
        self._require(old, tag)
        check_name("action", new)
        if self._exists(new, tag):
            raise InputError(f"cannot rename {old!r} to {new!r}: {new!r} already exists in tag {tag!r}")
        self._table.update(
            where=f"key = {_sql(_key(tag, old))}", values={"key": _key(tag, new), "action": new, "action_text": new}
        )
        return self._table.version

    def _exists(self, action: str, tag: str) -> bool:
        return self._table.count_rows(f"key = {_sql(_key(tag, action))}") > 0

    def _require(self, action: str, tag: str) -> None:
        if not self._exists(action, tag):
            known = [a.action for a in self.list(tag=tag)]
            raise InputError(f"no action {action!r} in tag {tag!r}; stored: {', '.join(known) or '(none)'}")

    # ------------------------------------------------------------------ versions
    @property
    def version(self) -> int:
        return int(self._table.version)

    def versions(self) -> list[tuple[int, datetime]]:
        """Every version of the prototype table, oldest first."""
        return [(int(v["version"]), v["timestamp"]) for v in self._table.list_versions()]

    @_write_method
    def restore(self, version: int) -> int:
        """Make ``version``'s content the latest (as a new version, so nothing is lost)."""
        known = [v for v, _ in self.versions()]
        if version not in known:
            raise InputError(f"no version {version}; the table has versions {known[0]}..{known[-1]}")
        self._table.restore(version)
        return self.version

    @_write_method
    def optimize(self) -> None:
        """Compact the table's files after bulk appends and fold new rows into the indexes (LanceDB's ``optimize``).

        Versions older than 7 days are pruned (LanceDB's default).
        """
        self._table.optimize()

    def indexed(self) -> bool:
        """Whether both search columns have an ANN index."""
        return set(_SEARCH_COLUMNS) <= {c for index in self._table.list_indices() for c in index.columns}

    def unindexed_rows(self) -> int:
        """Rows outside the ANN index of ``vector`` (searched exactly next to it); all rows when unindexed."""
        return _refresh.unindexed_rows(self._table)

    @_write_method
    def create_indexes(self, *, min_rows: int | None = None) -> bool:
        """Build (or rebuild) the IVF-PQ cosine indexes on ``vector`` and ``text``.

        Writes build them on their own from ``index.min_rows`` rows on (see ``IndexSettings``); this
        is for a bulk load made with ``auto_index = False``. Returns False (and builds nothing)
        below ``min_rows`` rows (default ``index.min_rows``).

        Raises:
            ValueError: D is not a multiple of ``index.sub_vector_dim``.
        """
        from lancedb.index import IvfPq

        n_rows = len(self)
        if n_rows < (self.index.min_rows if min_rows is None else min_rows):
            return False
        dim, width = self.recipe.dim, self.index.sub_vector_dim
        if dim % width:
            raise InputError(f"IVF-PQ needs D divisible by IndexSettings.sub_vector_dim = {width}, got D = {dim}")
        for column in _SEARCH_COLUMNS:
            config = IvfPq(
                distance_type="cosine", num_partitions=self.index.partitions(n_rows), num_sub_vectors=dim // width
            )
            retry_conflicts(lambda column=column, config=config: self._table.create_index(column, config=config))
        return True

    def _maintain_indexes(self) -> None:
        """After a write: build the indexes at ``index.min_rows`` rows; past ``index.max_unindexed``
        unindexed rows, refresh them where ``index.refresh`` says (``REFRESH_MODES``).

        Concurrent writers may both build indexes; Lance commits each as a new version (a
        conflicting one is retried on top). One refresh runs at a time (``refresh_index``).
        """
        if len(self) < self.index.min_rows:
            return
        if not self.indexed():
            self.create_indexes()
        elif self.unindexed_rows() > self.index.max_unindexed:
            REFRESH_MODES.get(self.index.refresh)(self)

    @_write_method
    def refresh_index(self, *, timeout: float | None = None) -> RefreshRecord | None:
        """Fold the rows added since the indexes were built or last refreshed into them, now.

        Waits (up to ``timeout`` seconds; None: as long as it takes) for a refresh another process
        is running, then runs one here unless nothing is left to fold in. The outcome is recorded
        in the store (``index_status``).

        Returns:
            this refresh's record; None when the store has no index yet (``create_indexes``) or no
            row is outside it (nothing to do), or another refresh still held the lock at ``timeout``.

        Raises:
            RuntimeError: Lance's error when the refresh failed (recorded in the store first).
        """
        with _refresh.refresh_lock(self._lock_path, timeout=timeout) as held:
            if not held or not self.indexed() or self.unindexed_rows() == 0:
                return None
            return _refresh.refresh(self._table, self._meta, where="this process")

    def refreshing(self) -> bool:
        """Whether an index refresh of this table is running now (in any process of this machine)."""
        return _refresh.refreshing(self._lock_path)

    def wait_for_refresh(self, timeout: float | None = None) -> bool:
        """Wait until no index refresh of this table is running; False if one still is at ``timeout`` s."""
        with _refresh.refresh_lock(self._lock_path, timeout=timeout) as held:
            return held

    def index_status(self) -> IndexStatus:
        """The table's rows, whether it is indexed, its unindexed rows and its index refreshes."""
        return IndexStatus(
            rows=len(self),
            indexed=self.indexed(),
            unindexed=self.unindexed_rows(),
            refreshing=self.refreshing(),
            last_refresh=_refresh.read_record(self._read_meta(self._meta), self._table.name),
            settings=self.index,
        )

    @property
    def _lock_path(self) -> Path | None:
        return _refresh.lock_path(self.uri, self._table.name)

    # ------------------------------------------------------------------ reading
    def __len__(self) -> int:
        return int(self._table.count_rows())

    def list(self, *, tag: str | None = None) -> list[ActionInfo]:
        """The stored actions (optionally of one tag), sorted by tag then name."""
        query = self._table.search().select(["action", "action_text", "tag", "shots", "support_ids", "created"])
        if tag is not None:
            query = query.where(f"tag = {_sql(tag)}")
        rows = query.limit(None).to_arrow().to_pylist()
        infos = [
            ActionInfo(r["action"], r["action_text"], r["tag"], r["shots"], r["support_ids"], r["created"])
            for r in rows
        ]
        return sorted(infos, key=lambda a: (a.tag, a.action))

    @property
    def unknown_threshold(self) -> float | None:
        """The open-set threshold on ``QueryResult.confidence``, or None (never "unknown")."""
        value = self._read_meta(self._meta).get("unknown_threshold")
        return None if value is None else float(value)

    @_write_method
    def set_unknown_threshold(self, threshold: float | None) -> None:
        """Record (or clear, with None) the open-set threshold, e.g. from ``calibrate_threshold``."""
        if threshold is None:
            self._meta.delete("key = 'unknown_threshold'")
            return
        if math.isnan(threshold):
            raise InputError("the unknown threshold must be a number (a confidence, log(M · p)), got nan")
        self._upsert(self._meta, [{"key": "unknown_threshold", "value": repr(float(threshold))}])

    def _candidates(
        self, frames: Tensor, text: Tensor | None, limit: int | None, tag: str | None, exact: bool = False
    ) -> tuple[list[str], list[str], Tensor, Tensor]:
        """Candidate rows: names, tags, visual prototypes ``[M, T, D]`` and text prototypes ``[M, D]``.

        With an ANN index the searches use ``index.nprobes`` and ``index.refine_factor``; ``exact``
        scans every row instead (the flat search of a store below ``index.min_rows``).
        """
        columns = ["action", "tag", "frames", "text"]
        where = None if tag is None else f"tag = {_sql(tag)}"
        tables = []
        if limit is None:
            query = self._table.search().select(columns)
            tables.append((query.where(where) if where else query).limit(None).to_arrow())
        else:
            probes = [("vector", nn.functional.normalize(frames.mean(0), dim=0))]
            if text is not None:
                probes.append(("text", nn.functional.normalize(text, dim=0)))
            for column, vector in probes:
                query = self._table.search(vector.float().numpy(), vector_column_name=column).distance_type("cosine")
                if exact:
                    query = query.bypass_vector_index()
                else:  # without an index Lance ignores both and scans every row
                    query = query.nprobes(self.index.nprobes).refine_factor(self.index.refine_factor)
                if where:
                    query = query.where(where, prefilter=True)
                tables.append(query.select([*columns, "_distance"]).limit(limit).to_arrow())
        names: list[str] = []
        tags: list[str] = []
        visual_parts, text_parts = [], []
        seen: set[tuple[str, str]] = set()
        n_frames, dim = self.recipe.n_frames, self.recipe.dim
        for table in tables:
            if table.num_rows == 0:
                continue
            # Arrow buffers straight to numpy: converting 8 × 1024 floats per row through Python
            # lists cost more than the vector search itself.
            row_frames = table.column("frames").combine_chunks().flatten().flatten().to_numpy()
            row_text = table.column("text").combine_chunks().flatten().to_numpy()
            row_frames = row_frames.reshape(table.num_rows, n_frames, dim)
            row_text = row_text.reshape(table.num_rows, dim)
            keep = []
            actions, row_tags = table.column("action").to_pylist(), table.column("tag").to_pylist()
            for i, (action, row_tag) in enumerate(zip(actions, row_tags, strict=True)):
                if (row_tag, action) not in seen:
                    seen.add((row_tag, action))
                    keep.append(i)
                    names.append(action)
                    tags.append(row_tag)
            visual_parts.append(torch.from_numpy(np.ascontiguousarray(row_frames[keep])))
            text_parts.append(torch.from_numpy(np.ascontiguousarray(row_text[keep])))
        if not names:
            return [], [], torch.empty(0, n_frames, dim), torch.empty(0, dim)
        return names, tags, torch.cat(visual_parts), torch.cat(text_parts)

    def query(
        self,
        frames: Tensor,
        text: Tensor | None,
        *,
        k: int = 5,
        tag: str | None = None,
        candidates: int | None = 50,
        mpmm: MPMMConfig | None = None,
        threshold: float | None = None,
        exact: bool = False,
    ) -> QueryResult:
        """Classify one query against the stored actions.

        Args:
            frames: ``[T, D]`` the query's frames after the head's query-side encoding.
            text: ``[D]`` its label-free text after MFEM (None for a visual-only MPMM).
            k: how many matches to return.
            tag: only consider this collection.
            candidates: nearest rows per search column (visual and text) to re-rank; None re-ranks
                every stored action (brute force).
            mpmm: MPMM settings that override the store's (default: ``recipe.mpmm``, the settings of
                the head that made the prototypes).
            threshold: the open-set threshold; default: the store's calibrated one.
            exact: find the candidates by scanning every row even when the ANN indexes exist (the
                reference the indexed search is measured against).

        Returns:
            ``QueryResult``; an empty store gives no matches (and ``best`` None).
        """
        if frames.dim() != 2 or frames.shape[-1] != self.recipe.dim:
            raise InputError(f"query frames must be [T, D] with D = {self.recipe.dim}, got {list(frames.shape)}")
        if k < 1:
            raise InputError(f"k must be >= 1, got {k}")
        config = mpmm if mpmm is not None else self.recipe.mpmm
        names, tags, proto_frames, proto_text = self._candidates(
            frames.detach().float().cpu(),
            None if text is None else text.detach().float().cpu(),
            candidates,
            tag,
            exact,
        )
        threshold = self.unknown_threshold if threshold is None else threshold
        if not names:
            return QueryResult([], unknown=True, threshold=threshold, n_candidates=0)
        with torch.no_grad():
            out = mpmm_match(
                frames.detach().float().cpu()[None],
                None if text is None else text.detach().float().cpu()[None],
                proto_frames,
                proto_text,
                build_temporal(config),
                config,
            )
        logits = out.logits[0]  # [M]
        probs = logits.softmax(-1)
        order = logits.argsort(descending=True)[:k]
        matches = [Match(names[i], tags[i], float(logits[i]), float(probs[i])) for i in order.tolist()]
        # Open set on log(M · p_best), the best match's probability relative to the uniform 1/M: a
        # softmax over M candidates (and MPMM's fused log-probabilities) shrink as M grows, so a raw
        # threshold calibrated on a small meta-val store would not transfer to a larger store.
        confidence = math.log(max(matches[0].probability, 1e-30) * len(names))
        unknown = threshold is not None and confidence < threshold
        return QueryResult(matches, unknown, threshold, len(names), confidence)


def _refresh_here(store: PrototypeStore) -> None:
    """Refresh in this process after a write (skipped while another refresh runs). A failed refresh
    is recorded in the store and becomes a warning: the write it follows has committed, the rows
    stay searched exactly, and the next write tries again."""
    try:
        store.refresh_index(timeout=0)
    except (RuntimeError, OSError) as err:
        warnings.warn(
            f"the index refresh of {store.uri} failed ({err}); the new rows stay searched exactly and the next "
            "write tries again (`fsar store index` shows the recorded error)",
            RuntimeWarning,
            stacklevel=5,
        )


@REFRESH_MODES.register("background")
def _refresh_in_background(store: PrototypeStore) -> None:
    """Start a detached refresh worker and return (tens of milliseconds) unless one runs; a store
    without a refresh lock (``memory://``, which lives in this process, or a system without
    ``flock``) refreshes here. A worker that cannot start is a warning: the rows stay searched
    exactly, and the next write tries again."""
    if store._lock_path is None:
        _refresh_here(store)
        return
    if store.refreshing():  # a worker holds the lock: starting another would only find it taken
        return
    try:
        _refresh.start_background(store.uri, store._table.name, store._storage_options)
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as err:
        warnings.warn(
            f"the index refresh of {store.uri} could not start in the background ({err}); the next write "
            "tries again, or run `fsar store index --refresh`",
            RuntimeWarning,
            stacklevel=4,
        )


#: ``inline``: refresh in the write that crossed the threshold (it then takes as long as the refresh).
REFRESH_MODES.register("inline", _refresh_here)


@REFRESH_MODES.register("manual")
def _refresh_manually(store: PrototypeStore) -> None:
    """Leave the refresh to ``PrototypeStore.refresh_index`` (``fsar store index --refresh``)."""
