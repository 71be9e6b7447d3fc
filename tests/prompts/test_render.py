"""render_prompt: exact texts, the prefix invariant behind visual-feature caching, stable ids and the
safety rules (fsar_prompts/_render.py)."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json

import pytest

from fsar_prompts import (
    RenderedPrompt,
    get_chat_format,
    list_families,
    list_roles,
    list_scenarios,
    list_templates,
    load_templates,
    normalize_label,
    render_prompt,
)

LABEL = "Pushing [something] from left to right"

# Pinned once: the id must not change across processes, machines or Python versions. If this test
# fails, the id recipe (or the shipped wording) changed and every cached text feature is orphaned:
# bump the recipe or the template version on purpose, never by accident.
PINNED_ID = "p-338bdf57e1197e84"  # video-llava, support, temporal, LABEL


def label_for(role: str) -> str | None:
    return None if role == "query" else LABEL


def render_all():
    for family, role, scenario in itertools.product(list_families(), list_roles(), list_scenarios()):
        yield render_prompt(family, role, scenario, label=label_for(role))


# --- exact texts ----------------------------------------------------------------------------------


def test_video_llava_query_text_is_exact():
    prompt = render_prompt("video-llava", "query")
    assert (
        prompt.text == "USER: <video>\nWhat is the person doing in this video? Answer with a short phrase. ASSISTANT:"
    )


def test_video_llava_temporal_support_text_is_exact():
    prompt = render_prompt("video-llava", "support", "temporal", label=LABEL)
    assert prompt.text == (
        'USER: <video>\nThis video shows the action "pushing something from left to right". Briefly explain how '
        "the action is carried out. Pay attention to which way things move and how the hands handle the object. "
        "ASSISTANT:"
    )


def test_qwen2_vl_appearance_query_text_is_exact():
    prompt = render_prompt("qwen2-vl", "query", "appearance")
    assert prompt.text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|video_pad|><|vision_end|>What is the person doing in this video? Answer with a short "
        "phrase. Pay attention to the person, how their body moves, and the surroundings.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_llava_onevision_label_prompt_is_text_only():
    prompt = render_prompt("llava-onevision", "label", label="brush_hair")
    assert prompt.text == '<|im_start|>user\nThe action "brush hair".<|im_end|>\n<|im_start|>assistant\n'
    assert (prompt.prefix, prompt.suffix, prompt.video_placeholder) == (None, None, None)


# --- every shipped template, every family -----------------------------------------------------------


def test_every_shipped_template_renders_for_every_family():
    used = set()
    for prompt in render_all():
        assert isinstance(prompt, RenderedPrompt)
        assert prompt.prompt in prompt.text
        assert "{" not in prompt.prompt
        assert "}" not in prompt.prompt
        used.add(prompt.template_id)
    assert used == set(list_templates())


def test_video_prompts_split_exactly_around_the_one_video_placeholder():
    for prompt in render_all():
        if prompt.role == "label":
            assert get_chat_format(prompt.family).video_placeholder not in prompt.text
            continue
        assert prompt.text.count(prompt.video_placeholder) == 1
        assert prompt.prefix + prompt.video_placeholder + prompt.suffix == prompt.text
        assert prompt.prompt in prompt.suffix


@pytest.mark.parametrize("family", list_families())
def test_text_before_the_video_is_identical_for_every_role_and_scenario(family):
    # docs/prompts.md, "Why the role wording goes after the video": visual hidden states depend only
    # on the tokens before the video, so they can be cached once per video only if no role or
    # scenario wording comes before it.
    prefixes = {
        render_prompt(family, role, scenario, label=label_for(role)).prefix
        for role in ("support", "query")
        for scenario in list_scenarios()
    }
    assert prefixes == {get_chat_format(family).prefix}


def test_prefix_invariant_holds_for_user_templates_too(write_templates, valid_entry):
    templates = load_templates(write_templates(valid_entry), include_defaults=True)
    for family in list_families():
        mine = render_prompt(family, "support", "kitchen", label="whisking eggs", templates=templates)
        assert mine.prefix == render_prompt(family, "query").prefix


def test_query_prompts_never_contain_the_label_and_support_prompts_do():
    for prompt in render_all():
        if prompt.role == "query":
            assert (prompt.label, prompt.label_text, prompt.uses_label) == (None, None, False)
            assert "something" not in prompt.text
        else:
            assert prompt.uses_label
            assert (prompt.label, prompt.label_text) == (LABEL, "pushing something from left to right")
            assert '"pushing something from left to right"' in prompt.prompt


def test_rendered_prompt_records_its_recipe():
    prompt = render_prompt("llava-next-video", "support", "appearance", label="ApplyEyeMakeup")
    assert (prompt.family, prompt.role, prompt.scenario) == ("llava-next-video", "support", "appearance")
    assert (prompt.template_id, prompt.version) == ("support-appearance", 1)
    assert (prompt.label, prompt.label_text, prompt.description) == ("ApplyEyeMakeup", "apply eye makeup", None)
    assert prompt.video_placeholder == "<video>"


def test_a_label_prompt_records_the_generic_template_it_fell_back_to():
    prompt = render_prompt("video-llava", "label", "temporal", label="brush_hair")
    assert (prompt.scenario, prompt.template_id) == ("generic", "label-generic")


def test_a_normalized_label_is_used_as_given():
    verbatim = normalize_label(LABEL, verbatim=True)
    prompt = render_prompt("video-llava", "support", label=verbatim)
    assert f'"{LABEL}"' in prompt.text
    assert (prompt.label, prompt.label_text) == (LABEL, LABEL)


def test_a_description_fills_its_placeholder(write_templates, valid_entry):
    valid_entry["text"] = 'This video shows the action "{label}" ({description}).'
    templates = load_templates(write_templates(valid_entry))
    prompt = render_prompt(
        "video-llava", "support", "kitchen", label="whisk", description=" beating  eggs ", templates=templates
    )
    assert prompt.prompt == 'This video shows the action "whisk" (beating eggs).'
    assert prompt.description == "beating eggs"


def test_rendered_prompt_is_frozen():
    prompt = render_prompt("video-llava", "query")
    with pytest.raises(dataclasses.FrozenInstanceError):
        prompt.text = "x"  # type: ignore[misc]


# --- ids ------------------------------------------------------------------------------------------


def test_id_is_pinned_across_processes():
    assert render_prompt("video-llava", "support", "temporal", label=LABEL).id == PINNED_ID


def test_id_follows_the_documented_recipe():
    fmt = get_chat_format("video-llava")
    payload = {
        "recipe": 1,
        "family": "video-llava",
        "chat_format": fmt.template,
        "role": "support",
        "template_id": "support-temporal",
        "template_text": (
            'This video shows the action "{label}". Briefly explain how the action is carried out. '
            "Pay attention to which way things move and how the hands handle the object."
        ),
        "version": 1,
        "label": LABEL,
        "label_text": "pushing something from left to right",
    }
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert "p-" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16] == PINNED_ID


def test_identical_inputs_give_identical_ids():
    first = render_prompt("qwen2-vl", "support", "appearance", label="brush_hair")
    second = render_prompt("qwen2-vl", "support", "appearance", label="brush_hair")
    assert first == second
    assert first.id == second.id


def test_ids_have_the_p_prefix_and_16_hex_digits():
    for prompt in render_all():
        assert prompt.id.startswith("p-")
        assert len(prompt.id) == 18
        int(prompt.id[2:], 16)


def test_ids_are_unique_across_families_roles_and_scenarios():
    # Label prompts fall back to one template, so their scenarios share an id per family.
    ids = {(p.family, p.role, p.template_id): p.id for p in render_all()}
    assert len(set(ids.values())) == len(ids)


def test_id_changes_with_the_label():
    assert (
        render_prompt("video-llava", "support", label="brush_hair").id
        != render_prompt("video-llava", "support", label="ride_bike").id
    )


def test_id_changes_with_the_label_spelling_even_when_the_text_is_the_same():
    # The original label is part of the recipe, so the cache keeps the dataset's own class name.
    assert (
        render_prompt("video-llava", "support", label="brush_hair").id
        != render_prompt("video-llava", "support", label="BrushHair").id
    )


def test_id_changes_with_verbatim_label_text():
    default = render_prompt("video-llava", "support", label=LABEL)
    verbatim = render_prompt("video-llava", "support", label=normalize_label(LABEL, verbatim=True))
    assert default.id != verbatim.id


def test_id_changes_with_the_family_even_when_the_text_is_the_same():
    llava = render_prompt("video-llava", "query")
    next_video = render_prompt("llava-next-video", "query")
    assert llava.text == next_video.text
    assert llava.id != next_video.id


def _one_template_set(write_templates, valid_entry, name, **change):
    """A set holding the valid user template with ``change`` applied, written to its own file."""
    return load_templates(write_templates(valid_entry | change, name=name))


def test_id_changes_with_the_template_text(write_templates, valid_entry):
    base = _one_template_set(write_templates, valid_entry, "base.toml")
    reworded = _one_template_set(
        write_templates, valid_entry, "reworded.toml", text='The action "{label}". Describe the tools.'
    )
    ids = {render_prompt("video-llava", "support", "kitchen", label="whisk", templates=t).id for t in (base, reworded)}
    assert len(ids) == 2


def test_id_changes_with_the_template_version(write_templates, valid_entry):
    base = _one_template_set(write_templates, valid_entry, "base.toml")
    bumped = _one_template_set(write_templates, valid_entry, "bumped.toml", version=2)
    ids = {render_prompt("video-llava", "support", "kitchen", label="whisk", templates=t).id for t in (base, bumped)}
    assert len(ids) == 2


def test_id_changes_with_the_template_id(write_templates, valid_entry):
    base = _one_template_set(write_templates, valid_entry, "base.toml")
    renamed = _one_template_set(write_templates, valid_entry, "renamed.toml", id="support-kitchen-b")
    ids = {render_prompt("video-llava", "support", "kitchen", label="whisk", templates=t).id for t in (base, renamed)}
    assert len(ids) == 2


def test_id_does_not_depend_on_the_file_a_template_came_from(write_templates, valid_entry):
    first = load_templates(write_templates(valid_entry, name="a.toml"))
    second = load_templates(write_templates(valid_entry, name="b.toml"))
    ids = {render_prompt("video-llava", "support", "kitchen", label="whisk", templates=t).id for t in (first, second)}
    assert len(ids) == 1


def test_id_changes_with_the_description(write_templates, valid_entry):
    templates = load_templates(write_templates(valid_entry | {"text": 'The action "{label}": {description}.'}))
    ids = {
        render_prompt("video-llava", "support", "kitchen", label="whisk", description=d, templates=templates).id
        for d in ("beating eggs", "beating cream")
    }
    assert len(ids) == 2


# --- safety and error paths -----------------------------------------------------------------------


def test_a_label_for_a_query_raises():
    with pytest.raises(ValueError, match=r"role 'query' takes no label: a query prompt never contains a class name"):
        render_prompt("video-llava", "query", label="brush_hair")


def test_an_empty_label_for_a_query_raises_too():
    with pytest.raises(ValueError, match=r"role 'query' takes no label"):
        render_prompt("video-llava", "query", label="")


def test_a_description_for_a_query_raises():
    with pytest.raises(ValueError, match=r"role 'query' takes no description"):
        render_prompt("video-llava", "query", description="beating eggs")


@pytest.mark.parametrize("role", ["support", "label"])
def test_a_role_that_needs_a_label_raises_without_one(role):
    with pytest.raises(ValueError, match=rf"role '{role}' needs a label"):
        render_prompt("video-llava", role)


@pytest.mark.parametrize("label", ["", "   ", "[]"])
def test_an_empty_label_raises(label):
    with pytest.raises(ValueError, match=r"empty label"):
        render_prompt("video-llava", "support", label=label)


def test_a_label_of_the_wrong_type_raises_type_error():
    with pytest.raises(TypeError, match=r"a label must be a string, got int"):
        render_prompt("video-llava", "support", label=3)  # type: ignore[arg-type]


def test_unknown_family_lists_the_families():
    with pytest.raises(ValueError, match=r"unknown chat format 'gpt-4v'; registered chat formats: llava-next-video, "):
        render_prompt("gpt-4v", "query")


def test_unknown_role_lists_the_roles():
    with pytest.raises(ValueError, match=r"unknown role 'teacher'; valid roles: label, query, support"):
        render_prompt("video-llava", "teacher")


def test_unknown_scenario_lists_the_scenarios():
    with pytest.raises(ValueError, match=r"unknown scenario 'ssv2-full'; scenarios: appearance, generic, temporal"):
        render_prompt("video-llava", "query", "ssv2-full")


def test_a_description_for_a_template_without_the_placeholder_raises():
    with pytest.raises(ValueError, match=r"template 'support-generic' has no \{description\} placeholder"):
        render_prompt("video-llava", "support", label="brush_hair", description="combing")


def test_a_template_with_a_description_placeholder_raises_without_one(write_templates, valid_entry):
    templates = load_templates(write_templates(valid_entry | {"text": 'The action "{label}": {description}.'}))
    with pytest.raises(ValueError, match=r"template 'support-kitchen' has a \{description\} placeholder; pass"):
        render_prompt("video-llava", "support", "kitchen", label="whisk", templates=templates)


def test_an_empty_description_raises(write_templates, valid_entry):
    templates = load_templates(write_templates(valid_entry | {"text": 'The action "{label}": {description}.'}))
    with pytest.raises(ValueError, match=r"empty description"):
        render_prompt("video-llava", "support", "kitchen", label="whisk", description=" ", templates=templates)


def test_a_description_of_the_wrong_type_raises_type_error(write_templates, valid_entry):
    templates = load_templates(write_templates(valid_entry | {"text": 'The action "{label}": {description}.'}))
    with pytest.raises(TypeError, match=r"a description must be a string, got list"):
        render_prompt("video-llava", "support", "kitchen", label="w", description=["x"], templates=templates)  # type: ignore[arg-type]


@pytest.mark.parametrize("family", list_families())
def test_a_prompt_containing_the_video_placeholder_raises(family):
    # A second placeholder would be expanded into a second set of video tokens.
    label = normalize_label(f"a {get_chat_format(family).video_placeholder} b", verbatim=True)
    with pytest.raises(ValueError, match=rf"the rendered prompt contains the '{family}' video placeholder"):
        render_prompt(family, "support", label=label)
