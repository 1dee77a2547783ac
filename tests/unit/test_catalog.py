"""Shipped recipes (llmctl.catalog), `embedded:` data paths (llmctl.embedded) and the `llmctl recipes` sub-app."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmctl import catalog, embedded, recipe, recipes_cli, runs
from llmctl.data import DataError

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = catalog.shipped()
NAMES = [name for name, _ in SHIPPED]


def sha256(path: Path | str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def invoke(*args: str):
    return CliRunner().invoke(recipes_cli.app, list(args), env={"COLUMNS": "240"})


def test_shipped_names():
    assert {"gpt-small", "gpt2-124m", "summarization", "tiny/pretrain", "tiny/classification"} <= set(NAMES)
    assert NAMES == sorted(NAMES)
    assert all(path.is_file() and path.suffix == ".toml" for _, path in SHIPPED)
    # The repository's recipes/ is the package's folder (a symlink), so both spellings are the same files.
    assert (ROOT / "recipes" / "gpt-small.toml").resolve() == catalog.recipes_dir() / "gpt-small.toml"


@pytest.mark.parametrize("name", NAMES)
def test_find_by_name_and_repository_path_from_anywhere(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    expected = catalog.recipes_dir() / f"{name}.toml"
    for spelling in (name, f"{name}.toml", f"recipes/{name}.toml", f"./recipes/{name}.toml"):
        assert catalog.find(spelling) == expected, spelling


def test_an_existing_file_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gpt-small.toml").write_text('name = "mine"\n[data]\ntrain_files = ["a.txt"]\n', encoding="utf-8")
    assert catalog.find("gpt-small.toml") == Path("gpt-small.toml")
    assert catalog.find("gpt-small") == catalog.recipes_dir() / "gpt-small.toml"


def test_find_names_the_missing_recipe(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(recipe.RecipeError) as info:
        catalog.find("recipes/tiny/nope.toml")
    assert info.value.problems == [
        "recipes/tiny/nope.toml: no recipe file of that name, and no shipped recipe called 'tiny/nope' "
        "(see `llmctl recipes`)"
    ]


def test_for_task():
    for task in ("summarization", "translation", "classification", "qa", "multiple_choice"):
        path = catalog.for_task(task)
        assert path == catalog.recipes_dir() / f"{task}.toml"
        assert recipe.load(path).task == task
    with pytest.raises(recipe.RecipeError):
        catalog.for_task("nope")


@pytest.mark.parametrize("name", NAMES)
def test_every_shipped_recipe_resolves_to_existing_data(name):
    r = recipe.load(catalog.find(name))
    assert all(f.startswith("embedded:") for f in (*r.data.train_files, *r.data.validation_files))
    resolved = catalog.resolve_paths(r)
    assert resolved.data.train_files
    for f in (*resolved.data.train_files, *resolved.data.validation_files):
        assert Path(f).is_file(), f
    assert not resolved.model.path.startswith("pkg:")
    if resolved.model.path:
        assert Path(resolved.model.path).is_dir()


def test_resolve_paths_returns_the_same_object_when_nothing_changes(tmp_path):
    r = recipe.validate({"name": "t", "data": {"train_files": [str(tmp_path / "a.txt")]}})
    assert catalog.resolve_paths(r) is r


def test_summary():
    s = catalog.summary(catalog.find("tiny/pretrain"))
    assert (s["name"], s["task"], s["model"]) == ("tiny/pretrain", "causal_lm", "llama")
    assert s["description"].startswith("A seconds-long preset for tests and CI")
    assert catalog.summary(catalog.find("gpt-small"))["description"] == recipe.load(catalog.find("gpt-small")).description


# ------------------------------------------------------------------------------------------------ embedded data


def test_embedded_resolves_to_the_checkout():
    assert embedded.resolve("embedded:pretrain/corpus.txt") == str(ROOT / "data" / "pretrain" / "corpus.txt")
    assert embedded.resolve("embedded:summarization/train.jsonl") == str(ROOT / "data" / "summarization" / "train.jsonl")
    assert embedded.resolve("data/pretrain/corpus.txt") == "data/pretrain/corpus.txt"
    assert set(embedded.names()) == {
        p.relative_to(ROOT / "data").as_posix() for p in (ROOT / "data").glob("*/*") if p.suffix in (".txt", ".jsonl")
    }


def test_unknown_embedded_name():
    with pytest.raises(DataError) as info:
        embedded.resolve("embedded:nope/train.jsonl")
    message = str(info.value)
    assert "\n" not in message and message.startswith("embedded:nope/train.jsonl: ")
    assert "pretrain/corpus.txt" in message


def test_installed_llmctl_generates_the_cache_once(tmp_path, monkeypatch):
    monkeypatch.setattr(embedded, "_checkout_data", lambda: None)
    monkeypatch.setenv("LLMCTL_HOME", str(tmp_path))
    path = Path(embedded.resolve("embedded:classification/train.jsonl"))
    assert path == tmp_path / "data" / embedded.digest() / "classification" / "train.jsonl"
    assert sha256(path) == sha256(ROOT / "data" / "classification" / "train.jsonl")
    assert [p.name for p in (tmp_path / "data").iterdir()] == [embedded.digest()]  # no temporary left behind
    mtime = path.stat().st_mtime_ns
    assert Path(embedded.resolve("embedded:classification/train.jsonl")) == path
    assert Path(embedded.resolve("embedded:qa/validation.jsonl")).is_file()
    assert path.stat().st_mtime_ns == mtime


def test_cache_location_without_llmctl_home(tmp_path, monkeypatch):
    monkeypatch.delenv("LLMCTL_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert embedded.cache_dir() == tmp_path / "xdg" / "llmctl" / "data" / embedded.digest()
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert embedded.cache_dir() == tmp_path / "home" / ".cache" / "llmctl" / "data" / embedded.digest()


# ---------------------------------------------------------------------------------------------------- run roots


def test_runs_root(tmp_path, monkeypatch):
    monkeypatch.delenv("LLMCTL_HOME", raising=False)
    assert runs.runs_root() == Path("runs")
    assert runs.default_root("x") == Path("runs") / "x"
    monkeypatch.setenv("LLMCTL_HOME", str(tmp_path))
    assert runs.default_root("x") == tmp_path / "runs" / "x"
    assert runs.latest_run() is None
    runs.write_json(tmp_path / "runs" / "x" / "results.json", {"task": "causal_lm"})
    assert runs.latest_run() == tmp_path / "runs" / "x"
    assert runs.latest_run(task="qa") is None


# ------------------------------------------------------------------------------------------- `llmctl recipes`


@pytest.mark.parametrize("args", [[], ["list"]])
def test_list(args):
    res = invoke(*args)
    assert res.exit_code == 0, res.output
    for name in NAMES:
        assert name in res.stdout


def test_list_json():
    res = invoke("list", "--json")
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert [row["name"] for row in rows] == NAMES
    assert {"name", "task", "model", "description"} <= set(rows[0])
    assert json.loads(invoke("--json").stdout) == rows


def test_show():
    res = invoke("show", "gpt-small")
    assert res.exit_code == 0, res.output
    assert res.stdout == (catalog.recipes_dir() / "gpt-small.toml").read_text(encoding="utf-8")


def test_copy(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = invoke("copy", "tiny/pretrain")
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines() == ["wrote tiny-pretrain.toml", "run it with: llmctl pretrain tiny-pretrain.toml"]
    copied = tmp_path / "tiny-pretrain.toml"
    assert copied.read_bytes() == catalog.find("tiny/pretrain").read_bytes()
    assert recipe.load(copied).name == "tiny-pretrain"

    again = invoke("copy", "tiny/pretrain")
    assert again.exit_code == 1
    assert again.stderr.strip().splitlines() == ["error: tiny-pretrain.toml already exists; pass --force to overwrite it"]
    copied.write_text("edited", encoding="utf-8")
    assert invoke("copy", "tiny/pretrain", "--force").exit_code == 0
    assert recipe.load(copied).name == "tiny-pretrain"

    (tmp_path / "mine").mkdir()
    res = invoke("copy", "summarization", "mine")
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines()[-1] == f"run it with: llmctl finetune {Path('mine') / 'summarization.toml'}"
    assert recipe.load(tmp_path / "mine" / "summarization.toml").task == "summarization"
    res = invoke("copy", "gpt-small", "other.toml")
    assert res.exit_code == 0 and (tmp_path / "other.toml").is_file()


@pytest.mark.parametrize("args", [["show", "nope"], ["copy", "nope"]])
def test_unknown_name_is_one_line(args, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = invoke(*args)
    assert res.exit_code == 1
    assert res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: nope: no recipe file of that name"), res.stderr
    assert list(tmp_path.iterdir()) == []
