"""Fine-tuning data through datasets (llmctl/taskdata.py): what --data means, the records and features it makes,
the checks across records, and which stages a changed input invalidates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmctl import recipe, runs, taskdata
from llmctl import tasks as registry
from llmctl.data import DataError

ROOT = Path(__file__).resolve().parents[2]


def _recipe(*sets: str, base: str = "recipes/tiny/classification.toml"):
    return recipe.load(ROOT / base, list(sets))


def _shape(family="encoder", context=64):
    return lambda tok: (family, context)


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _reviews(n: int, offset: int = 0) -> list[dict]:
    words = ["good", "bad", "fine"]
    return [{"text": f"review {i} was {words[i % 3]}", "label": words[i % 3]} for i in range(offset, offset + n)]


# ------------------------------------------------------------------------------------------------ --data


def test_data_replaces_training_and_validation_and_set_still_wins():
    r = _recipe(*recipe.data_overrides(["mine.csv"]))
    assert r.data.train_files == ["mine.csv"] and r.data.validation_files == []
    r = _recipe(*recipe.data_overrides(["a.csv", "b.csv"], ["v.csv"]))
    assert r.data.train_files == ["a.csv", "b.csv"] and r.data.validation_files == ["v.csv"]
    r = _recipe(*recipe.data_overrides([], ["v.csv"]), base="recipes/summarization.toml")
    assert r.data.validation_files == ["v.csv"] and r.data.train_files == ["embedded:summarization/train.jsonl"]
    # An explicit --set comes after --data and wins.
    r = _recipe(*recipe.data_overrides(["mine.csv"]), 'data.validation_files=["x.csv"]')
    assert r.data.validation_files == ["x.csv"]


# ------------------------------------------------------------------------------------------------ records


def test_held_out_split_is_the_users_records_with_their_locations(tmp_path):
    data = _jsonl(tmp_path / "mine.jsonl", _reviews(40))
    r = _recipe(*recipe.data_overrides([str(data)]), "data.validation_fraction=0.1")
    task = registry.get("classification")
    counts = taskdata.build_records(r, task, tmp_path / "out", tmp_path)
    assert counts == {"train": 36, "validation": 4, "skipped": 0}
    train = taskdata.load_records(tmp_path / "out" / "records" / "train")
    val_examples, val_where = taskdata.load_records(tmp_path / "out" / "records" / "validation").lists()
    _, train_where = train.lists()
    everything = [f"{data}:{i}" for i in range(1, 41)]
    assert sorted(train_where + val_where, key=lambda w: int(w.rsplit(":", 1)[1])) == everything
    assert not set(train_where) & set(val_where)
    # The examples are the task's normalized records of those lines.
    lines = data.read_text().splitlines()
    for ex, w in zip(val_examples, val_where):
        assert ex == json.loads(lines[int(w.rsplit(":", 1)[1]) - 1])
    # The same seed draws the same split.
    taskdata.build_records(r, task, tmp_path / "again", tmp_path)
    assert taskdata.load_records(tmp_path / "again" / "records" / "validation").lists()[1] == val_where


def test_validation_columns_must_match_training(tmp_path):
    train = _jsonl(tmp_path / "t.jsonl", _reviews(10))
    val = _jsonl(tmp_path / "v.jsonl", [{"text": "x", "label": "good", "stars": 3}])
    r = _recipe(*recipe.data_overrides([str(train)], [str(val)]))
    with pytest.raises(DataError) as info:
        taskdata.build_records(r, registry.get("classification"), tmp_path / "out", tmp_path)
    assert str(info.value) == (f"{val}:1: the validation data's columns differ from the training data's ({train}): "
                               "it adds 'stars'")


def test_labels_written_as_text_and_integers_are_refused(tmp_path):
    data = _jsonl(tmp_path / "t.jsonl", [{"text": "a", "label": 1}, {"text": "b", "label": 0},
                                         {"text": "c", "label": "1"}])
    r = _recipe(*recipe.data_overrides([str(data)]))
    with pytest.raises(DataError) as info:
        taskdata.build_records(r, registry.get("classification"), tmp_path / "out", tmp_path)
    assert str(info.value) == (f"{data}:3: label '1' is text, but the label at {data}:1 (1) is an integer; "
                               "write every label the same way")


def test_too_few_records_for_the_validation_fraction(tmp_path):
    data = _jsonl(tmp_path / "one.jsonl", _reviews(1))
    r = _recipe(*recipe.data_overrides([str(data)]))
    with pytest.raises(DataError) as info:
        taskdata.build_records(r, registry.get("classification"), tmp_path / "out", tmp_path)
    assert str(info.value).startswith(f"{data}: 1 record(s) are too few to hold out data.validation_fraction = 0.03")
    assert "--validation-data" in str(info.value)


# ------------------------------------------------------------------------------------------------ stages


def test_features_equal_the_tasks_features_and_stages_are_reused_or_rebuilt(tmp_path):
    data = _jsonl(tmp_path / "mine.jsonl", _reviews(60))
    r = _recipe(*recipe.data_overrides([str(data)]))
    task = registry.get("classification")
    run = runs.Run(tmp_path / "run")
    first = taskdata.prepare(r, task, run, _shape())
    assert first.reused == []
    examples = list(first.train)
    where = first.train.ds["where"]
    expected, cut = task.features(examples, where, first.tokenizer, first.spec)
    assert [dict(row) for row in first.features] == expected and first.cut == cut

    again = taskdata.prepare(r, task, run, _shape())
    assert again.reused == ["records", "tokenizer", "spec", "features"]
    assert [dict(row) for row in again.features] == expected

    # A length setting changes the spec and the features, not the records or the tokenizer.
    shorter = _recipe(*recipe.data_overrides([str(data)]), "data.max_source_length=4")
    third = taskdata.prepare(shorter, task, run, _shape())
    assert third.reused == ["records", "tokenizer"]
    assert max(len(row["input_ids"]) for row in third.features) == 4

    # Changed content under the same file name: everything is made again.
    _jsonl(data, _reviews(60, offset=100))
    fourth = taskdata.prepare(shorter, task, run, _shape())
    assert fourth.reused == []
    assert "review 100 " in " ".join(ex["text"] for ex in fourth.train)


def test_cached_validation_is_what_eval_reads(tmp_path):
    data = _jsonl(tmp_path / "mine.jsonl", _reviews(30))
    r = _recipe(*recipe.data_overrides([str(data)]), "data.validation_fraction=0.2")
    run = runs.Run(tmp_path / "run")
    td = taskdata.prepare(r, registry.get("classification"), run, _shape())
    assert taskdata.cached_validation(run.root) == td.validation.lists()
    assert len(td.validation) == 6


# ---------------------------------------------------------------------------------------- pretraining inputs


def test_block_size_longer_than_a_pretrained_models_context(tmp_path):
    from transformers import GPT2Config

    from llmctl.modeling import ModelError
    from llmctl.pretrain import check_block_size

    GPT2Config(n_positions=64, n_layer=1, n_embd=16, n_head=2).save_pretrained(tmp_path / "m")
    r = _recipe(f'model.path="{tmp_path / "m"}"', "data.block_size=128", base="recipes/tiny/pretrain.toml")
    with pytest.raises(ModelError) as info:
        check_block_size(r)
    assert str(info.value) == (f"data.block_size (128) is longer than the context of {tmp_path / 'm'} (64 tokens); "
                               "set data.block_size to at most 64")
    check_block_size(_recipe(f'model.path="{tmp_path / "m"}"', "data.block_size=64", base="recipes/tiny/pretrain.toml"))


def test_pretraining_corpus_too_small_for_the_validation_fraction(tmp_path):
    from llmctl import catalog, data

    corpus = tmp_path / "c.txt"
    corpus.write_text("one document\n\nanother document\n", encoding="utf-8")
    r = catalog.resolve_paths(_recipe(*recipe.data_overrides([str(corpus)]), "data.validation_fraction=0.9",
                                      base="recipes/tiny/pretrain.toml"))
    with pytest.raises(DataError) as info:
        data.prepare(r, runs.Run(tmp_path / "run"))
    assert str(info.value).startswith(f"{corpus}: 2 documents are too few to hold out data.validation_fraction = 0.9")


def test_a_split_smaller_than_one_chunk_fills_it_with_repeats_and_larger_splits_are_unchanged():
    import torch

    from llmctl.train import make_sampler

    small = make_sampler(5, seed=3, per_step_chunk=16)
    order = list(small)
    assert len(order) == 16 and set(order) == set(range(5))
    # Each example appears 3 or 4 times: whole permutations, then the start of another.
    assert sorted(order.count(i) for i in range(5)) == [3, 3, 3, 3, 4]
    assert list(make_sampler(5, seed=3, per_step_chunk=16)) == order
    # A split of at least one chunk is one permutation cut to whole chunks, as before.
    big = make_sampler(37, seed=3, per_step_chunk=16)
    g = torch.Generator().manual_seed(3 * 100_003)
    assert list(big) == torch.randperm(37, generator=g)[:32].tolist()


def test_eval_remaps_the_runs_columns_for_another_file():
    from llmctl.evaluate_cli import columns

    run_recipe = _recipe("data.text_column=review", "data.label_column=stars")
    mapped = columns(run_recipe, ["data.text_column=body"])
    assert (mapped.text_column, mapped.label_column) == ("body", "stars")
    assert columns(run_recipe, []) == run_recipe.data
    with pytest.raises(recipe.RecipeError) as info:
        columns(run_recipe, ["train.lr=1"])
    assert info.value.problems == ["--set 'train.lr=1': eval takes only data.* keys (the column mapping)"]
    with pytest.raises(recipe.RecipeError) as info:
        columns(run_recipe, ["data.max_source_length=0"])
    assert info.value.problems[0].startswith("--set data.max_source_length: Input should be greater than 1")
