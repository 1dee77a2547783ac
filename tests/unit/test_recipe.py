import tomllib
from pathlib import Path

import pytest

from llmctl import recipe as R

ROOT = Path(__file__).resolve().parents[2]
BASE = {"name": "t", "data": {"train_files": ["x.txt"]}}


def write(tmp_path, text: str) -> Path:
    p = tmp_path / "r.toml"
    p.write_text(text, encoding="utf-8")
    return p


def problems(path, overrides=()):
    with pytest.raises(R.RecipeError) as info:
        R.load(path, list(overrides))
    return info.value.problems


@pytest.mark.parametrize("path", sorted((ROOT / "recipes").rglob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_recipe_validates(path):
    r = R.load(path)
    assert r.name


def test_unknown_key_names_closest_valid_key(tmp_path):
    p = write(tmp_path, 'name = "t"\n[data]\ntrain_files = ["a.txt"]\n[train]\nlrr = 0.1\n')
    assert problems(p) == [f"{p}: unknown key 'train.lrr' (did you mean 'train.lr'?)"]


def test_unknown_section_key(tmp_path):
    p = write(tmp_path, 'name = "t"\n[data]\ntrain_files = ["a.txt"]\nblock_sise = 3\n')
    assert problems(p) == [f"{p}: unknown key 'data.block_sise' (did you mean 'data.block_size'?)"]


def test_unknown_key_with_a_newline_stays_one_line(tmp_path):
    # Found by the long fuzz run: `--set $'0\n0='` printed the key across two lines.
    p = write(tmp_path, 'name = "t"\n[data]\ntrain_files = ["a.txt"]\n')
    assert problems(p, ["0\n0="]) == [f"{p}: unknown key '0\\n0'"]


def test_wrong_type_names_key_value_and_expectation(tmp_path):
    p = write(tmp_path, 'name = "t"\n[data]\ntrain_files = ["a.txt"]\n[train]\nmax_steps = "ten"\n')
    assert problems(p) == [f"{p}: train.max_steps: expected an integer, got str 'ten'"]


def test_out_of_range_values(tmp_path):
    p = write(tmp_path, 'name = "t"\n[data]\ntrain_files = ["a.txt"]\nblock_size = 0\n[train]\nlr = -1.0\n')
    assert problems(p) == [
        f"{p}: data.block_size: input should be greater than 1, got 0",
        f"{p}: train.lr: input should be greater than 0, got -1.0",
    ]


def test_all_errors_reported_at_once(tmp_path):
    p = write(tmp_path, '[data]\ntrain_files = ["a.txt"]\n[train]\nmax_steps = 0\nbogus = 1\n')
    got = problems(p)
    assert got == [
        f"{p}: missing required key 'name'",
        f"{p}: train.max_steps: input should be greater than 0, got 0",
        f"{p}: unknown key 'train.bogus'",
    ]


def test_cross_field_rule(tmp_path):
    p = write(tmp_path, 'name = "t"\n[data]\ntrain_files = ["a.txt"]\n[train]\nbatch_size = 10\nmicro_batch_size = 4\n')
    assert problems(p) == [
        f"{p}: train: train.batch_size (10) must be a multiple of train.micro_batch_size (4)"
    ]


def test_invalid_toml_and_missing_file(tmp_path):
    p = write(tmp_path, "name = \n")
    (line,) = problems(p)
    assert line.startswith(f"{p}: invalid TOML: ")
    assert problems(tmp_path / "nope.toml") == [f"{tmp_path / 'nope.toml'}: recipe file not found"]


def test_overrides_are_typed_as_toml():
    assert R.parse_override("train.lr=3e-4") == (["train", "lr"], 3e-4)
    assert R.parse_override("train.max_steps=50") == (["train", "max_steps"], 50)
    assert R.parse_override("model.path=runs/x/final") == (["model", "path"], "runs/x/final")
    assert R.parse_override('sample.prompts=["a", "b"]') == (["sample", "prompts"], ["a", "b"])
    assert R.parse_override("x.flag=true") == (["x", "flag"], True)
    r = R.load(None, ["train.max_steps=7", "model.config.n_layer=3"], base=BASE)
    assert r.train.max_steps == 7 and r.model.config == {"n_layer": 3}


def test_override_must_keep_type():
    with pytest.raises(R.RecipeError) as info:
        R.load(None, ["train.max_steps=1.5"], base=BASE)
    assert info.value.problems == ["recipe: train.max_steps: expected an integer, got float 1.5"]


def test_bad_override_syntax():
    with pytest.raises(R.RecipeError) as info:
        R.parse_override("train.lr")
    assert info.value.problems == ["--set 'train.lr': expected KEY=VALUE, e.g. train.lr=3e-4"]


def test_resolved_recipe_round_trips():
    r = R.load(ROOT / "recipes" / "gpt-small.toml", ["train.max_steps=9"])
    again = R.validate(tomllib.loads(R.dumps(r)))
    assert again == r
    assert again.train.max_steps == 9
