"""The store's recipe: typed (FeatureRecipe + the head's MPMM settings), compared with ==, the MPMM
settings queries use by default, and stores written before it was typed still open, query and add."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import lancedb
import pyarrow as pa
import pytest
import torch

from fsar_apps.store import PrototypeStore, StoreMismatchError, StoreRecipe, prototype_model
from fsar_apps.store._store import _META_SCHEMA, _with_primary_key
from fsar_features import FeatureRecipe
from fsar_metric import MPMMConfig

DIM, N_FRAMES = 16, 4
#: Settings other than the defaults in every field a query reads.
MPMM = MPMMConfig(cues=("visual", "cross"), tau=0.5, confidence="entropy", selection="hard", visual_per_frame=False)


def test_a_recipe_round_trips_through_its_json_and_equal_recipes_share_a_fingerprint(recipe, feature_recipe):
    typed = dataclasses.replace(recipe, mpmm=MPMM)
    again = StoreRecipe.from_json(typed.to_json())
    assert again == typed
    assert again.fingerprint == typed.fingerprint != recipe.fingerprint
    assert again.feature_recipe == feature_recipe
    assert again.mpmm == MPMM
    assert again.recorded is None
    stored = json.loads(typed.to_json())["feature_recipe"]
    assert stored == json.loads(json.dumps(feature_recipe.to_json()))  # FeatureRecipe's own JSON form
    fixed = dataclasses.replace(recipe, mpmm=MPMMConfig(selection="fixed", fixed_weights=(1.0, 3.0)))
    assert StoreRecipe.from_json(fixed.to_json()) == fixed


def test_describe_names_the_model_head_widths_and_mpmm(recipe):
    assert dataclasses.replace(recipe, mpmm=MPMM).describe() == (
        "model=tiny-video-llava, head=head-a, dim=16, frames=4, mpmm=visual+cross tau=0.5 hard"
    )


def test_untyped_recipes_are_refused_with_a_clear_error(feature_recipe):
    with pytest.raises(TypeError, match=r"feature_recipe must be a FeatureRecipe .*got dict"):
        StoreRecipe({"model": "tiny"}, head_hash="h", dim=DIM, n_frames=N_FRAMES)
    with pytest.raises(TypeError, match=r"mpmm must be an MPMMConfig \(head\.config\.mpmm\), got dict"):
        StoreRecipe(feature_recipe, head_hash="h", dim=DIM, n_frames=N_FRAMES, mpmm={"tau": 0.1})
    good = json.loads(StoreRecipe(feature_recipe, head_hash="h", dim=DIM, n_frames=N_FRAMES).to_json())
    with pytest.raises(ValueError, match=r"store recipe has the keys .*this one has .*'colour'"):
        StoreRecipe.from_json(json.dumps({**good, "colour": "blue"}))
    with pytest.raises(ValueError, match=r"unknown MPMM settings \['colour'\] in a store recipe; valid: "):
        StoreRecipe.from_json(json.dumps({**good, "mpmm": {"colour": "blue"}}))
    with pytest.raises(ValueError, match=r"feature recipe does not read as a FeatureRecipe: unknown recipe fields"):
        StoreRecipe.from_json(json.dumps({**good, "feature_recipe": {"model": "tiny"}}))


def _queries(seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(N_FRAMES, DIM, generator=gen), torch.randn(DIM, generator=gen)) for _ in range(6)]


def _ranking(result) -> list[tuple[str, float]]:
    return [(m.action, round(m.score, 5)) for m in result.matches]


def test_a_query_matches_with_the_recipes_mpmm_unless_given_other_settings(tmp_path, recipe, prototypes):
    store = PrototypeStore.open(tmp_path / "s", dataclasses.replace(recipe, mpmm=MPMM))
    visual, text = prototypes
    store.add_many([(f"a{i}", visual[i], text[i], [f"v{i}"]) for i in range(10)])
    differs = False
    for frames, text_q in _queries():
        default = store.query(frames, text_q, k=10, candidates=None)
        assert _ranking(default) == _ranking(store.query(frames, text_q, k=10, candidates=None, mpmm=MPMM))
        other = store.query(frames, text_q, k=10, candidates=None, mpmm=MPMMConfig())  # an explicit override
        differs |= _ranking(other) != _ranking(default)
    assert differs  # the two settings score differently, so the default really is the recipe's


# ----------------------------------------------------------------------------- stores of older fsar
def _old_recipe_json(feature_recipe: FeatureRecipe, head_hash: str) -> str:
    """The recipe row as fsar wrote it before recipes were typed: ``json.dumps(asdict(StoreRecipe))``
    with ``feature_recipe = dataclasses.asdict(cache.recipe)`` (every field, ``visual_dim`` resolved) and
    no MPMM settings."""
    old = {"feature_recipe": feature_recipe.as_dict(), "head_hash": head_hash, "dim": DIM, "n_frames": N_FRAMES}
    old["feature_recipe"] = json.loads(json.dumps(old["feature_recipe"], sort_keys=True))
    return json.dumps(old, sort_keys=True, separators=(",", ":"))


def _old_store(path, recipe_json: str, visual: torch.Tensor, text: torch.Tensor) -> str:
    """A store as the previous fsar made it: the recipe row and the table claim in the metadata
    table's first commit, and one prototype row recording the recipe's fingerprint then."""
    fingerprint = hashlib.sha256(recipe_json.encode()).hexdigest()[:16]
    db = lancedb.connect(path)
    rows = [{"key": "recipe", "value": recipe_json}, {"key": "table:prototypes", "value": "old-fsar"}]
    db.create_table("fsar_meta", data=pa.Table.from_pylist(rows, schema=_META_SCHEMA))
    schema = _with_primary_key(prototype_model(DIM).to_arrow_schema())
    row = {
        "key": "default/waving",
        "action": "waving",
        "action_text": "waving",
        "tag": "default",
        "vector": torch.nn.functional.normalize(visual.mean(0), dim=0).tolist(),
        "frames": visual.tolist(),
        "text": torch.nn.functional.normalize(text, dim=0).tolist(),
        "shots": 1,
        "support_ids": ["w1"],
        "recipe_hash": fingerprint,
        "head_hash": "head-a",
        "created": pa.scalar(0, pa.timestamp("us", tz="UTC")).as_py(),
    }
    db.create_table("prototypes", data=pa.Table.from_pylist([row], schema=schema))
    return fingerprint


def _row_fingerprints(path) -> dict[str, str]:
    rows = lancedb.connect(path).open_table("prototypes").search().limit(None).to_arrow().to_pylist()
    return {r["action"]: r["recipe_hash"] for r in rows}


def _recipe_rows(path) -> list[str]:
    meta = lancedb.connect(path).open_table("fsar_meta")
    return [r["value"] for r in meta.search().limit(None).to_arrow().to_pylist() if r["key"] == "recipe"]


def test_a_store_of_the_previous_format_opens_queries_and_accepts_adds(tmp_path, recipe, feature_recipe, prototypes):
    visual, text = prototypes
    old_json = _old_recipe_json(feature_recipe, "head-a")
    fingerprint = _old_store(tmp_path / "s", old_json, visual[0], text[0])

    read_only = PrototypeStore.open(tmp_path / "s")
    assert read_only.recipe == recipe  # the typed feature recipe, and MPMMConfig(): what its queries used
    assert read_only.recipe.mpmm == MPMMConfig()
    assert read_only.recipe.fingerprint == fingerprint  # as its rows record it
    assert read_only.query(visual[0], text[0], k=1).best == "waving"

    store = PrototypeStore.open(tmp_path / "s", recipe)  # the run's recipe (default MPMM) is the store's
    store.add("clapping", visual[1], text[1], support_ids=["c1"], recipe=recipe)
    assert _row_fingerprints(tmp_path / "s") == {"waving": fingerprint, "clapping": fingerprint}
    assert store.query(visual[1], text[1], k=2).best == "clapping"
    assert _recipe_rows(tmp_path / "s") == [old_json]  # the recorded recipe is left as it was
    with pytest.raises(StoreMismatchError, match="holds prototypes of model=tiny-video-llava, head=head-a"):
        PrototypeStore.open(tmp_path / "s", dataclasses.replace(recipe, head_hash="head-b"))


def test_a_store_of_the_previous_format_takes_the_mpmm_of_the_head_that_made_it(tmp_path, recipe, prototypes):
    """The head hash covers the head's whole config, its MPMM settings included: a run whose head has
    the store's head hash has the settings of the head that made the store."""
    visual, text = prototypes
    fingerprint = _old_store(tmp_path / "s", _old_recipe_json(recipe.feature_recipe, "head-a"), visual[0], text[0])
    mine = dataclasses.replace(recipe, mpmm=MPMM)
    store = PrototypeStore.open(tmp_path / "s", mine)
    assert store.recipe == mine
    assert store.recipe.fingerprint == fingerprint
    store.add("clapping", visual[1], text[1], support_ids=["c1"], recipe=mine)
    frames, text_q = _queries()[0]
    assert _ranking(store.query(frames, text_q, k=2, candidates=None)) == _ranking(
        store.query(frames, text_q, k=2, candidates=None, mpmm=MPMM)
    )
    assert _row_fingerprints(tmp_path / "s") == {"waving": fingerprint, "clapping": fingerprint}
