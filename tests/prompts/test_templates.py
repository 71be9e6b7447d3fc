"""Templates as data: the shipped files, user files, and every load-time rule (fsar_prompts/_templates.py)."""

from __future__ import annotations

import re

import pytest

from fsar_prompts import (
    PromptTemplate,
    TemplateSet,
    default_templates,
    get_role,
    list_roles,
    list_scenarios,
    list_templates,
    load_templates,
)

QUERY = "What is the person doing in this video? Answer with a short phrase."
SUPPORT = 'This video shows the action "{label}". Briefly explain how the action is carried out.'
TEMPORAL = "Pay attention to which way things move and how the hands handle the object."
APPEARANCE = "Pay attention to the person, how their body moves, and the surroundings."

# The shipped wording; docs/prompts.md ("Shipped templates") lists the same table.
SHIPPED = {
    "query-generic": ("query", "generic", QUERY),
    "query-temporal": ("query", "temporal", f"{QUERY} {TEMPORAL}"),
    "query-appearance": ("query", "appearance", f"{QUERY} {APPEARANCE}"),
    "support-generic": ("support", "generic", SUPPORT),
    "support-temporal": ("support", "temporal", f"{SUPPORT} {TEMPORAL}"),
    "support-appearance": ("support", "appearance", f"{SUPPORT} {APPEARANCE}"),
    "label-generic": ("label", "generic", 'The action "{label}".'),
}


# --- the shipped set ---------------------------------------------------------------------------


def test_shipped_templates_have_the_method_wording():
    shipped = {t.id: (t.role, t.scenario, t.text) for t in default_templates()}
    assert shipped == SHIPPED
    assert all(t.version == 1 for t in default_templates())


def test_shipped_templates_name_their_package_file_as_source():
    for template in default_templates():
        assert re.fullmatch(r"fsar_prompts/templates/(generic|temporal|appearance)\.toml", template.source)


def test_every_shipped_scenario_has_a_query_and_a_support_template():
    templates = default_templates()
    for scenario in list_scenarios():
        assert templates.find("query", scenario).role == "query"
        assert templates.find("support", scenario).scenario == scenario


def test_shipped_query_templates_have_no_placeholder_and_support_templates_have_label():
    for template in default_templates():
        expected = frozenset() if template.role == "query" else frozenset({"label"})
        assert template.placeholders == expected, template.id


def test_default_templates_are_loaded_once():
    assert default_templates() is default_templates()


def test_listing_functions_are_sorted_and_match_the_shipped_set():
    assert list_templates() == sorted(SHIPPED)
    assert list_scenarios() == ["appearance", "generic", "temporal"]
    assert list_roles() == ["label", "query", "support"]


def test_label_role_falls_back_to_the_generic_template_for_any_scenario():
    templates = default_templates()
    for scenario in list_scenarios():
        assert templates.find("label", scenario).id == "label-generic"


def test_role_table_states_which_roles_carry_a_label_and_a_video():
    assert (get_role("support").uses_label, get_role("support").has_video) == (True, True)
    assert (get_role("query").uses_label, get_role("query").has_video) == (False, True)
    assert (get_role("label").uses_label, get_role("label").has_video) == (True, False)


# --- user files: valid ---------------------------------------------------------------------------


def test_a_valid_user_file_loads_with_its_path_as_source(write_templates, valid_entry):
    path = write_templates(valid_entry)
    templates = load_templates(path)
    assert templates.ids() == ["support-kitchen"]
    template = templates.get("support-kitchen")
    assert (template.role, template.scenario, template.version) == ("support", "kitchen", 1)
    assert template.source == str(path)
    assert template.placeholders == frozenset({"label"})


def test_a_user_file_extends_the_shipped_set_when_defaults_are_included(write_templates, valid_entry):
    templates = load_templates(write_templates(valid_entry), include_defaults=True)
    assert set(templates.ids()) == set(SHIPPED) | {"support-kitchen"}
    assert "kitchen" in templates.scenarios()


def test_several_user_files_load_into_one_set(write_templates, valid_entry):
    first = write_templates(valid_entry, name="a.toml")
    query = {"id": "query-kitchen", "role": "query", "scenario": "kitchen", "version": 2, "text": "What happens here?"}
    second = write_templates(query, name="b.toml")
    templates = load_templates(first, second)
    assert templates.ids() == ["query-kitchen", "support-kitchen"]
    assert templates.find("query", "kitchen").version == 2


def test_description_placeholder_and_literal_braces_are_allowed(write_templates, valid_entry):
    valid_entry["text"] = 'The action "{label}": {description} {{not a placeholder}}'
    template = load_templates(write_templates(valid_entry)).get("support-kitchen")
    assert template.placeholders == frozenset({"label", "description"})
    assert template.fill(label="a", description="b") == 'The action "a": b {not a placeholder}'


def test_a_template_built_in_python_is_checked_like_one_from_a_file():
    with pytest.raises(ValueError, match=r"<python>: template 'q': a query template must not contain \{label\}"):
        PromptTemplate(id="q", role="query", scenario="generic", text="Is it {label}?", version=1)


# --- user files: every invalid case ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"colour": "red"}, r"unknown key\(s\) 'colour'; valid keys: id, role, scenario, text, version"),
        ({"role": "teacher"}, r"unknown role 'teacher'; valid roles: label, query, support"),
        ({"role": "query"}, r"a query template must not contain \{label\}: a query prompt never carries a class name"),
        (
            {"role": "query", "text": "What is it? {description}"},
            r"a query template must not contain \{description\}",
        ),
        ({"text": 'The action "{label}" in {place}.'}, r"unknown placeholder \{place\}; valid placeholders: "),
        ({"text": 'The action "{label}" {}.'}, r"positional placeholder \{\}"),
        ({"text": 'The action "{label}" {0}.'}, r"positional placeholder \{0\}"),
        ({"text": 'The action "{label!r}".'}, r"placeholder \{label!r\} has a conversion or format spec"),
        ({"text": 'The action "{label:>20}".'}, r"placeholder \{label:>20\} has a conversion or format spec"),
        ({"text": 'The action "{label.upper}".'}, r"unknown placeholder \{label.upper\}"),
        ({"text": 'The action "{label}" }.'}, r"malformed braces"),
        ({"text": "This video shows an action."}, r"a support template must contain \{label\}"),
        ({"role": "label", "text": "An action."}, r"a label template must contain \{label\}"),
        ({"text": ""}, r"text must be a non-empty string"),
        ({"text": "   "}, r"text must be a non-empty string"),
        ({"text": 'The action "{label}".\n'}, r"text has leading or trailing whitespace"),
        ({"text": 3}, r"text must be a non-empty string, got 3"),
        ({"version": 0}, r"version must be an integer >= 1, got 0"),
        ({"version": "1"}, r"version must be an integer >= 1, got '1'"),
        ({"version": True}, r"version must be an integer >= 1, got True"),
        ({"version": 1.5}, r"version must be an integer >= 1, got 1.5"),
        ({"scenario": "Kitchen Sink"}, r"scenario 'Kitchen Sink' is not a name"),
        ({"scenario": ""}, r"scenario '' is not a name"),
    ],
)
def test_an_invalid_template_raises_naming_file_id_and_problem(write_templates, valid_entry, change, message):
    path = write_templates(valid_entry | change)
    with pytest.raises(ValueError, match=message) as error:
        load_templates(path)
    assert str(error.value).startswith(f"{path}: template 'support-kitchen'")


@pytest.mark.parametrize("missing", ["id", "role", "scenario", "text", "version"])
def test_a_missing_field_raises_naming_the_field(write_templates, valid_entry, missing):
    del valid_entry[missing]
    path = write_templates(valid_entry)
    with pytest.raises(ValueError, match=rf"missing key\(s\) '{missing}'; required keys: id, role, scenario") as error:
        load_templates(path)
    expected = f"{path}: template #1" if missing == "id" else f"{path}: template 'support-kitchen'"
    assert str(error.value).startswith(expected)


@pytest.mark.parametrize("bad_id", ["Support Kitchen", "", "-x", 7])
def test_an_id_that_is_not_a_name_raises(write_templates, valid_entry, bad_id):
    path = write_templates(valid_entry | {"id": bad_id})
    with pytest.raises(
        ValueError, match=rf"{re.escape(str(path))}: template id {re.escape(repr(bad_id))} is not a name"
    ):
        load_templates(path)


def test_a_duplicate_id_in_one_file_raises(write_templates, valid_entry):
    path = write_templates(valid_entry, valid_entry | {"scenario": "garden"})
    with pytest.raises(ValueError, match=r"template 'support-kitchen': duplicate id \(also defined in .*mine\.toml\)"):
        load_templates(path)


def test_a_duplicate_id_across_files_names_both_files(write_templates, valid_entry):
    first = write_templates(valid_entry, name="a.toml")
    second = write_templates(valid_entry | {"scenario": "garden"}, name="b.toml")
    with pytest.raises(
        ValueError, match=r"b\.toml: template 'support-kitchen': duplicate id \(also defined in .*a\.toml\)"
    ):
        load_templates(first, second)


def test_redefining_a_shipped_id_raises_when_defaults_are_included(write_templates, valid_entry):
    path = write_templates(valid_entry | {"id": "support-generic"})
    with pytest.raises(ValueError, match=r"'support-generic': duplicate id \(also defined in fsar_prompts/templates/"):
        load_templates(path, include_defaults=True)


def test_a_second_template_for_the_same_role_and_scenario_raises(write_templates, valid_entry):
    path = write_templates(valid_entry, valid_entry | {"id": "support-kitchen-2"})
    with pytest.raises(ValueError, match=r"'support-kitchen-2': a second support template for scenario 'kitchen'"):
        load_templates(path)


def test_a_shipped_role_and_scenario_cannot_be_redefined_alongside_the_defaults(write_templates, valid_entry):
    path = write_templates(valid_entry | {"id": "my-support", "scenario": "temporal"})
    with pytest.raises(ValueError, match=r"template 'support-temporal' in fsar_prompts/templates/temporal\.toml"):
        load_templates(path, include_defaults=True)


def test_invalid_toml_raises_naming_the_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[[template]\nid = ", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: not a valid TOML file"):
        load_templates(path)


def test_a_file_that_is_not_utf8_raises_naming_the_file(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes('[[template]]\ntext = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: not a valid TOML file"):
        load_templates(path)


def test_an_unknown_top_level_key_raises(tmp_path, valid_entry):
    path = tmp_path / "extra.toml"
    path.write_text('title = "mine"\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"extra\.toml: top level .*unknown key\(s\) 'title'; valid keys: template"):
        load_templates(path)


@pytest.mark.parametrize("content", ["", "template = 3\n", "template = []\n", 'template = ["x"]\n'])
def test_a_file_without_template_tables_raises(tmp_path, content):
    path = tmp_path / "empty.toml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: .*template"):
        load_templates(path)


def test_a_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_templates(tmp_path / "nowhere.toml")


def test_loading_nothing_raises():
    with pytest.raises(ValueError, match=r"needs at least one file"):
        load_templates()


def test_load_templates_with_only_the_defaults_equals_the_shipped_set():
    assert load_templates(include_defaults=True) == default_templates()


# --- lookups on a set ---------------------------------------------------------------------------


def test_unknown_template_id_lists_the_ids():
    with pytest.raises(ValueError, match=r"unknown template id 'query-x'; templates: label-generic, query-appearance"):
        default_templates().get("query-x")


def test_find_with_an_unknown_scenario_lists_the_scenarios():
    with pytest.raises(ValueError, match=r"unknown scenario 'temporall'; scenarios: appearance, generic, temporal"):
        default_templates().find("query", "temporall")


def test_find_with_an_unknown_role_lists_the_roles():
    with pytest.raises(ValueError, match=r"unknown role 'teacher'; valid roles: label, query, support"):
        default_templates().find("teacher", "generic")


def test_find_without_a_template_for_the_pair_lists_the_scenarios_that_have_one(write_templates, valid_entry):
    templates = load_templates(write_templates(valid_entry))
    with pytest.raises(
        ValueError, match=r"no query template for scenario 'kitchen'; scenarios with a query template: none"
    ):
        templates.find("query", "kitchen")


def test_a_template_set_holds_only_templates():
    with pytest.raises(ValueError, match=r"a TemplateSet holds PromptTemplate objects, got str"):
        TemplateSet(("query-generic",))  # type: ignore[arg-type]


def test_an_empty_set_is_not_replaced_by_the_defaults():
    empty = TemplateSet(())
    assert list_templates(empty) == []
    assert list_scenarios(empty) == []
