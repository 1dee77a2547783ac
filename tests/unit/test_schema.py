"""`llmctl recipes schema`: the JSON Schema editors use accepts every shipped recipe and refuses what `load` does."""

from __future__ import annotations

import tomllib

import jsonschema
import pytest

from llmctl import catalog, recipe


@pytest.fixture(scope="module")
def validator():
    schema = recipe.json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("name", [n for n, _ in catalog.shipped()])
def test_every_shipped_recipe_is_valid(validator, name):
    data = tomllib.loads(catalog.find(name).read_text(encoding="utf-8"))
    assert list(validator.iter_errors(data)) == []


@pytest.mark.parametrize("change", [
    {"train": {"lrr": 1.0}},            # an unknown key
    {"train": {"max_steps": "10"}},     # a string where an integer belongs
    {"train": {"max_steps": 0}},        # out of range
    {"task": "ner"},                    # not a task
])
def test_what_load_refuses_the_schema_refuses(validator, change):
    data = tomllib.loads(catalog.find("tiny/pretrain").read_text(encoding="utf-8"))
    for section, value in change.items():
        if isinstance(value, dict):
            data.setdefault(section, {}).update(value)
        else:
            data[section] = value
    assert list(validator.iter_errors(data))
    with pytest.raises(recipe.RecipeError):
        recipe.validate(data)
