"""FeatureRecipe: one record from extraction to the store; recipe.json and its hash stay as written."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from fsar_features import FeatureRecipe, VideoFeatures, visual_width

# recipe.json files written before FeatureRecipe moved to its own module, with the hash their
# shards and fragments record: the first format (mean pooling, no visual_dim) and a 4 × 4 grid.
FIRST_FORMAT = {
    "backend": "video-llava",
    "crop_size": 32,
    "dim": 64,
    "family": "video-llava",
    "format_version": 1,
    "frame_size": 32,
    "layers": [2],
    "model_id": "builtin:tiny-video-llava-synthetic-actions@925bf9074a72",
    "n_frames": 8,
    "n_layers": 2,
    "prompts": {"query": "p-4f2a17f839daa689", "support": "support-temporal@1"},
    "reuse_prefix_cache": True,
    "roles": ["query", "support"],
    "sampling": "uniform",
    "sampling_seed": None,
    "scenario": "temporal",
    "storage_dtype": "float16",
    "text_pooling": "last",
    "visual_pooling": "mean",
}
FIRST_FORMAT_HASH = "d2d362aa56d616fd"
GRID = {**FIRST_FORMAT, "layers": [1], "temporal_centring": True, "visual_dim": 1024, "visual_pooling": "grid4"}
GRID_HASH = "ff00edaddf18c93c"


@pytest.mark.parametrize(("data", "expected"), [(FIRST_FORMAT, FIRST_FORMAT_HASH), (GRID, GRID_HASH)])
def test_an_existing_recipe_json_reads_back_byte_for_byte_with_its_recorded_hash(data, expected) -> None:
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"  # how FeatureCache.create writes it
    recipe = FeatureRecipe.from_json(json.loads(text))
    assert recipe.hash == expected
    assert json.dumps(recipe.to_json(), indent=2, sort_keys=True) + "\n" == text


def test_widths_are_derived_from_the_pooling_and_dim() -> None:
    grid = FeatureRecipe.from_json(GRID)
    assert (grid.dim, grid.visual_dim, grid.text_dim, grid.visual_dim_override) == (64, 1024, 64, None)
    assert FeatureRecipe.from_json(FIRST_FORMAT).visual_dim == 64
    assert (visual_width("grid2", 10), visual_width("cls", 10), visual_width("no-such-pooling", 10)) == (40, 10, None)


def test_replacing_dim_or_visual_pooling_gives_the_matching_visual_dim() -> None:
    grid = FeatureRecipe.from_json(GRID)
    assert dataclasses.replace(grid, dim=128).visual_dim == 16 * 128
    assert dataclasses.replace(grid, visual_pooling="mean").visual_dim == 64
    assert dataclasses.replace(grid, visual_pooling="grid2", dim=32).visual_dim == 4 * 32
    mean = FeatureRecipe.from_json(FIRST_FORMAT)
    assert dataclasses.replace(mean, dim=4096).visual_dim == 4096
    written_out = FeatureRecipe.from_json({**FIRST_FORMAT, "visual_pooling": "grid4", "visual_dim": 1024})
    assert dataclasses.replace(mean, visual_pooling="grid4") == written_out  # derived = the same width given


def test_a_width_the_rule_does_not_give_is_kept_as_an_override_and_written_to_json() -> None:
    odd = FeatureRecipe.from_json({**FIRST_FORMAT, "visual_dim": 100})  # mean pooling, yet 100 ≠ 64 measured
    assert (odd.visual_dim, odd.visual_dim_override) == (100, 100)
    assert odd.to_json()["visual_dim"] == 100
    assert FeatureRecipe.from_json(odd.to_json()) == odd
    assert odd != FeatureRecipe.from_json(FIRST_FORMAT)


def test_a_pooling_without_a_width_rule_reads_a_missing_visual_dim_as_d_in() -> None:
    # A cache of a pooling registered by code this process has not imported still opens, as before.
    unregistered = FeatureRecipe.from_json({**FIRST_FORMAT, "visual_pooling": "unregistered"})
    assert (unregistered.visual_dim, unregistered.visual_dim_override) == (64, None)
    assert "visual_dim" not in unregistered.to_json()
    explicit = FeatureRecipe.from_json({**FIRST_FORMAT, "visual_pooling": "unregistered", "visual_dim": 7})
    assert (explicit.visual_dim, explicit.to_json()["visual_dim"]) == (7, 7)
    with pytest.raises(ValueError, match=r"visual_dim must be an int \(D_v\), got '7'"):
        FeatureRecipe.from_json({**FIRST_FORMAT, "visual_dim": "7"})


def test_every_field_written_out_reads_as_the_same_recipe() -> None:
    # A prototype store written before recipes were typed holds dataclasses.asdict of the recipe.
    grid = FeatureRecipe.from_json(GRID)
    assert FeatureRecipe.from_json(json.loads(json.dumps(grid.as_dict()))) == grid
    assert grid.as_dict()["visual_dim"] == 1024
    assert "visual_dim_override" not in grid.as_dict()


def test_diff_names_each_differing_field() -> None:
    grid = FeatureRecipe.from_json(GRID)
    other = dataclasses.replace(grid, dim=32, layers=(2,))
    assert grid.diff(other) == {"dim": (64, 32), "layers": ((1,), (2,)), "visual_dim": (1024, 512)}
    assert grid.diff(grid) == {}


def test_video_features_carry_the_recipe_and_refuse_bad_roles() -> None:
    recipe = FeatureRecipe.from_json({**FIRST_FORMAT, "roles": ["query"]})

    def features(**changes) -> VideoFeatures:
        values = dict(
            video_id="v",
            visual=torch.zeros(8, 64),
            text={"query": torch.zeros(64)},
            prompt_ids={"query": "p-0"},
            recipe=recipe,
            frame_indices=tuple(range(8)),
        )
        return VideoFeatures(**{**values, **changes})

    assert features().text_poolings == {"query": "last"}
    with pytest.raises(TypeError, match=r"VideoFeatures\.recipe must be a FeatureRecipe, got dict"):
        features(recipe=FIRST_FORMAT)
    with pytest.raises(ValueError, match=r"roles \['support'\] that its recipe does not run \(roles: query\)"):
        features(text={"support": torch.zeros(64)}, prompt_ids={"support": "s"})
    with pytest.raises(ValueError, match=r"text features for roles \['query'\] and prompt ids for \[\]"):
        features(prompt_ids={})
