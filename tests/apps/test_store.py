"""The LanceDB prototype store: operations, guarantees and agreement with episodic evaluation."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys

import pytest
import torch

from fsar_apps.store import (
    PrototypeStore,
    StoreMismatchError,
    StoreRecipe,
    action_prototype,
    calibrate_threshold,
    encode_query,
    head_fingerprint,
)
from fsar_metric import FSARLLaVA, MPMMConfig

DIM, N_FRAMES = 16, 4


def _fill(store, prototypes, tag="default", n=10):
    visual, text = prototypes
    return store.add_many([(f"action {i}", visual[i], text[i], [f"v{i}a", f"v{i}b"]) for i in range(n)], tag=tag)


def test_a_query_near_a_stored_prototype_returns_that_action(store, prototypes):
    _fill(store, prototypes)
    visual, text = prototypes
    noise = torch.Generator().manual_seed(1)
    for i in range(10):
        result = store.query(visual[i] + 0.1 * torch.randn(N_FRAMES, DIM, generator=noise), text[i], k=3)
        assert result.best == f"action {i}"
        assert len(result.matches) == 3
        assert result.matches[0].probability >= result.matches[1].probability


def test_listing_shows_every_action_with_its_support(store, prototypes):
    _fill(store, prototypes, n=3)
    infos = store.list()
    assert [a.action for a in infos] == ["action 0", "action 1", "action 2"]
    assert infos[0].shots == 2
    assert infos[0].support_ids == ["v0a", "v0b"]


def test_re_adding_an_action_replaces_it_in_a_new_version(store, prototypes):
    visual, text = prototypes
    store.add("waving", visual[0], text[0], support_ids=["a"])
    before = store.version
    store.add("waving", visual[1], text[1], support_ids=["b", "c"])
    assert len(store) == 1
    assert store.version > before
    assert store.list()[0].support_ids == ["b", "c"]
    assert store.query(visual[1], text[1], k=1).matches[0].action == "waving"


def test_restore_brings_back_an_earlier_version_as_a_new_one(store, prototypes):
    _fill(store, prototypes, n=3)
    version = store.version
    store.remove("action 1")
    assert len(store) == 2
    new = store.restore(version)
    assert new > version
    assert len(store) == 3
    with pytest.raises(ValueError, match="no version 999"):
        store.restore(999)


def test_rename_and_remove(store, prototypes):
    _fill(store, prototypes, n=2)
    store.rename("action 0", "jumping")
    assert [a.action for a in store.list()] == ["action 1", "jumping"]
    with pytest.raises(ValueError, match="'action 1' already exists"):
        store.rename("jumping", "action 1")
    store.remove("jumping")
    with pytest.raises(ValueError, match="no action 'jumping' in tag 'default'; stored: action 1"):
        store.remove("jumping")


def test_tags_keep_collections_apart(store, prototypes):
    _fill(store, prototypes, tag="ssv2", n=3)
    _fill(store, prototypes, tag="mine", n=2)
    assert len(store) == 5
    assert [a.tag for a in store.list(tag="mine")] == ["mine", "mine"]
    visual, text = prototypes
    result = store.query(visual[0], text[0], tag="mine", k=5)
    assert {m.tag for m in result.matches} == {"mine"}


def test_names_with_quotes_survive_filters(store, prototypes):
    visual, text = prototypes
    store.add("pretending to open something's lid", visual[0], text[0], support_ids=["x"])
    store.rename("pretending to open something's lid", "o'clock")
    assert [a.action for a in store.list()] == ["o'clock"]


def test_a_store_refuses_another_recipe_naming_both(tmp_path, recipe, feature_recipe, prototypes):
    PrototypeStore.open(tmp_path / "s", recipe)
    features = dataclasses.replace(feature_recipe, model_id="video-llava-7b")
    other = StoreRecipe(features, head_hash="head-b", dim=DIM, n_frames=N_FRAMES)
    with pytest.raises(
        StoreMismatchError, match=r"holds prototypes of model=tiny-video-llava, head=head-a.*not model=video-llava-7b"
    ):
        PrototypeStore.open(tmp_path / "s", other)
    store = PrototypeStore.open(tmp_path / "s")  # no recipe: read the stored one
    visual, text = prototypes
    with pytest.raises(StoreMismatchError, match="cannot go into the store"):
        store.add("x", visual[0], text[0], support_ids=["a"], recipe=other)


def test_prototypes_of_the_wrong_shape_are_refused(store):
    with pytest.raises(ValueError, match=r"visual \[T, D\] = \[4, 16\] and text \[D\] = \[16\], got \[5, 16\]"):
        store.add("x", torch.randn(5, DIM), torch.randn(DIM), support_ids=["a"])
    with pytest.raises(ValueError, match="NaN or inf"):
        store.add("x", torch.full((N_FRAMES, DIM), float("nan")), torch.randn(DIM), support_ids=["a"])


def test_opening_a_missing_store_without_a_recipe_says_how_to_create_one(tmp_path):
    with pytest.raises(ValueError, match=r"no prototype store at .*create one by opening it with a StoreRecipe"):
        PrototypeStore.open(tmp_path / "nothing")


def test_a_read_only_open_of_a_mistyped_path_creates_nothing(tmp_path):
    """`store list --store <typo>` must not leave a folder or an empty store behind."""
    typo = tmp_path / "runs" / "defualt" / "store"
    with pytest.raises(ValueError, match="no prototype store at"):
        PrototypeStore.open(typo)
    assert not (tmp_path / "runs").exists()
    empty = tmp_path / "empty"  # an existing folder that holds no store: nothing is added to it
    empty.mkdir()
    with pytest.raises(ValueError, match="no prototype store at"):
        PrototypeStore.open(empty)
    assert list(empty.iterdir()) == []
    with pytest.raises(ValueError, match="no prototype store at memory://"):
        PrototypeStore.open("memory://")


def test_an_empty_store_returns_no_match(store):
    result = store.query(torch.randn(N_FRAMES, DIM), torch.randn(DIM))
    assert result.matches == []
    assert result.best is None
    assert result.n_candidates == 0


def test_the_calibrated_threshold_marks_unknown_queries(store, prototypes):
    _fill(store, prototypes, n=5)
    visual, text = prototypes
    known = torch.stack([torch.tensor(store.query(visual[i], text[i]).confidence) for i in range(5)])
    unknown = torch.stack([torch.tensor(store.query(visual[i], text[i]).confidence) for i in range(5, 10)])
    threshold = calibrate_threshold(known, unknown)
    assert unknown.max() < threshold <= known.min()
    store.set_unknown_threshold(threshold)
    assert store.unknown_threshold == threshold
    assert store.query(visual[0], text[0]).best == "action 0"
    assert store.query(visual[7], text[7]).unknown


def test_confidence_does_not_depend_on_how_many_actions_are_stored(store, prototypes):
    """A query equally close to every stored action has confidence 0 whether 2 or 10 are stored,
    so a threshold calibrated on a small meta-val store transfers to a large one."""
    visual, text = prototypes
    same_frames, same_text = visual[0], text[0]
    for n in (2, 10):
        store.add_many([(f"twin {i}", same_frames, same_text, [f"t{i}"]) for i in range(n)], tag=f"n{n}")
        result = store.query(same_frames, same_text, k=1, tag=f"n{n}")
        assert result.n_candidates == n
        assert result.confidence == pytest.approx(0.0, abs=1e-5)


def test_calibration_keeps_most_known_queries_when_the_sides_barely_separate():
    """Weak features: only the 3 highest of 100 known queries beat every unknown one. Youden's J
    alone would reject 97 % of the known queries; the TPR floor keeps at least half accepted."""
    known = torch.linspace(0.20, 0.30, 100)
    unknown = torch.linspace(0.205, 0.2965, 100)
    unconstrained = calibrate_threshold(known, unknown, min_tpr=0.0)
    assert (known >= unconstrained).float().mean() < 0.1
    threshold = calibrate_threshold(known, unknown)
    assert (known >= threshold).float().mean() >= 0.5
    # Oracle: the best J over all thresholds with TPR >= 0.5, by brute force in float64.
    grid = sorted({*known.tolist(), *unknown.tolist()})
    best = max(
        (g for g in grid if (known >= g).double().mean() >= 0.5),
        key=lambda g: float((known >= g).double().mean() - (unknown >= g).double().mean()),
    )
    assert float((known >= threshold).double().mean() - (unknown >= threshold).double().mean()) == pytest.approx(
        float((known >= best).double().mean() - (unknown >= best).double().mean())
    )
    with pytest.raises(ValueError, match="min_tpr"):
        calibrate_threshold(known, unknown, min_tpr=1.5)


def test_candidate_search_agrees_with_brute_force_on_separated_actions(store, prototypes):
    _fill(store, prototypes)
    visual, text = prototypes
    for i in range(10):
        fast = store.query(visual[i], text[i], k=1, candidates=3)
        brute = store.query(visual[i], text[i], k=1, candidates=None)
        assert fast.best == brute.best == f"action {i}"


_WRITER = """
import sys, torch
from fsar_apps.store import PrototypeStore
path, worker, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
store = PrototypeStore.open(path)
gen = torch.Generator().manual_seed(worker)
for i in range(n):
    store.add(f"w{worker}-{i}", torch.randn(4, 16, generator=gen), torch.randn(16, generator=gen),
              support_ids=[f"{worker}-{i}"])
"""


def test_two_concurrent_writer_processes_lose_no_rows(tmp_path, recipe):
    path = str(tmp_path / "shared")
    PrototypeStore.open(path, recipe)  # create the tables once, then both processes append
    writers = [subprocess.Popen([sys.executable, "-c", _WRITER, path, str(w), "12"]) for w in range(2)]
    assert [w.wait(timeout=240) for w in writers] == [0, 0]
    names = sorted(a.action for a in PrototypeStore.open(path).list())
    assert names == sorted(f"w{w}-{i}" for w in range(2) for i in range(12))


# ----------------------------------------------------------------------------- with a head
def _head(**fields) -> FSARLLaVA:
    torch.manual_seed(0)
    return FSARLLaVA(in_dim=12, dim=DIM, n_heads=2, n_frames=N_FRAMES, **fields).eval()


def test_store_classification_agrees_with_episodic_evaluation(tmp_path, feature_recipe):
    # MPMM settings other than the defaults: a query without ``mpmm`` must match with the recipe's.
    head = _head(mpmm=MPMMConfig(cues=("visual", "text", "cross"), tau=0.2, confidence="entropy"))
    gen = torch.Generator().manual_seed(5)
    support = torch.randn(5, 2, N_FRAMES, 12, generator=gen)
    support_text = torch.randn(5, 2, 12, generator=gen)
    query = torch.randn(7, N_FRAMES, 12, generator=gen)
    query_text = torch.randn(7, 12, generator=gen)
    recipe = StoreRecipe(
        feature_recipe, head_hash=head_fingerprint(head), dim=DIM, n_frames=N_FRAMES, mpmm=head.config.mpmm
    )
    store = PrototypeStore.open(tmp_path / "s", recipe)
    store.add_many([(f"c{c}", *action_prototype(head, support[c], support_text[c]), ["a", "b"]) for c in range(5)])
    with torch.no_grad():
        episodic = head(support, query, support_text=support_text, query_text=query_text)  # [Q, N]
    for q in range(7):
        frames, text = encode_query(head, query[q], query_text[q])
        result = store.query(frames, text, k=5, candidates=None)
        assert [m.action for m in result.matches] == [f"c{c}" for c in episodic[q].argsort(descending=True).tolist()]
        torch.testing.assert_close(
            torch.tensor([m.score for m in result.matches]),
            episodic[q].sort(descending=True).values,
            rtol=1e-4,
            atol=1e-4,
        )


def test_a_head_with_a_cross_class_task_step_is_refused():
    from fsar_metric import CTPCConfig

    head = _head(ctpc=CTPCConfig(task_step="text"))
    with pytest.raises(ValueError, match="builds each action's prototype alone"):
        action_prototype(head, torch.randn(2, N_FRAMES, 12), torch.randn(2, 12))


def test_the_head_fingerprint_changes_with_the_weights():
    head = _head()
    before = head_fingerprint(head)
    assert head_fingerprint(_head()) == before
    with torch.no_grad():
        next(head.parameters()).add_(1e-3)
    assert head_fingerprint(head) != before


def test_the_open_set_threshold_is_calibrated_on_meta_val_classes(feature_recipe):
    from fsar_apps.store import TrainedRun, calibrate_unknown_threshold
    from fsar_train import TensorFeatures

    head = _head()
    gen = torch.Generator().manual_seed(3)
    # Four val classes, eight videos each; each class has its own text direction and trajectory.
    class_visual = torch.randn(4, N_FRAMES, 12, generator=gen)
    class_text = 3 * torch.randn(4, 12, generator=gen)
    labels = [c for c in range(4) for _ in range(8)]
    visual = torch.stack([class_visual[c] + 0.05 * torch.randn(N_FRAMES, 12, generator=gen) for c in labels])
    text = torch.stack([class_text[c] + 0.05 * torch.randn(12, generator=gen) for c in labels])
    val = TensorFeatures(visual, labels, label_aware_text=text, label_free_text=text)
    recipe = StoreRecipe(
        feature_recipe, head_hash=head_fingerprint(head), dim=DIM, n_frames=N_FRAMES, mpmm=head.config.mpmm
    )
    threshold = calibrate_unknown_threshold(TrainedRun(None, head, recipe, None), val, shots=3)
    assert threshold is not None
    assert math.isfinite(threshold)  # a confidence log(M · p), not a probability


def test_names_that_could_collide_or_flood_errors_are_refused(store, prototypes):
    """Key collision: tag 'a' + action 'b/c' and tag 'a/b' + action 'c' would both be 'a/b/c'."""
    visual, text = prototypes
    store.add("b/c", visual[0], text[0], support_ids=["v0"], tag="a")
    with pytest.raises(ValueError, match=r"a tag cannot contain '/' \(got 'a/b'\)"):
        store.add("c", visual[1], text[1], support_ids=["v1"], tag="a/b")
    assert [(a.tag, a.action) for a in store.list()] == [("a", "b/c")]  # the first row is intact
    huge = "x" * 100_000
    with pytest.raises(ValueError, match=r"action names are at most 200 characters; got 100,000") as info:
        store.add(huge, visual[1], text[1], support_ids=["v1"])
    assert len(str(info.value)) < 200  # the name is not echoed whole
    with pytest.raises(ValueError, match="control characters"):
        store.add("wave\nhello", visual[1], text[1], support_ids=["v1"])
    with pytest.raises(ValueError, match="an action name cannot be empty"):
        store.rename("b/c", "  ", tag="a")
    with pytest.raises(ValueError, match="at most 200 characters"):
        store.remove(huge)
    assert len(store) == 1
