"""The task registry, the recipe schema and the column mapping of real dataset layouts."""

import json
import typing

import pytest

from llmctl import data, recipe, tasks
from llmctl.tasks import classification


def test_registry_agrees_with_the_recipe_schema():
    from llmctl import metrics

    schema_tasks = typing.get_args(recipe.Recipe.model_fields["task"].annotation)
    assert set(schema_tasks) == set(tasks.REGISTRY) == set(recipe.TASKS)
    for name, task in tasks.REGISTRY.items():
        assert task.name == name
        assert task.default_metrics and task.families and set(task.auto_classes) == set(task.families)
        if task.finetunable:
            for metric in task.default_metrics:
                assert metrics.resolve_name(metric) == metric
    assert tasks.finetunable() == ["summarization", "translation", "classification", "qa", "multiple_choice"]


def _d(**over):
    return recipe.load(None, [f"data.{k}={json.dumps(v)}" for k, v in over.items()],
                       base={"name": "t", "data": {"train_files": ["x"]}}).data


def read(path, task, **over):
    return data.read_examples([str(path)], tasks.get(task).normalize, _d(**over))


def test_xsum_layout_json_lines_in_a_json_file(tmp_path):
    p = tmp_path / "sample.json"
    p.write_text('{"document": "A long text.", "summary": "Short.", "id": "1"}\n'
                 '{"document": "Another text.", "summary": "Also.", "id": "2"}\n', encoding="utf-8")
    examples, where = read(p, "summarization")
    assert examples == [{"source": "A long text.", "target": "Short."}, {"source": "Another text.", "target": "Also."}]
    assert where == [f"{p}:1", f"{p}:2"]


def test_wmt_layout_nested_and_two_columns(tmp_path):
    nested = tmp_path / "wmt.json"
    nested.write_text('{ "translation": { "en": "Hello there.", "ro": "Salut acolo, ţară." } }\n', encoding="utf-8")
    assert read(nested, "translation")[0] == [{"source": "Hello there.", "target": "Salut acolo, ţară."}]
    flat = tmp_path / "pairs.csv"
    flat.write_text("en,de\nGood day,Guten Tag\n", encoding="utf-8")
    assert read(flat, "translation", target_lang="de")[0] == [{"source": "Good day", "target": "Guten Tag"}]


def test_mrpc_csv_and_glue_tsv_with_bom_and_bare_quotes(tmp_path):
    csv_file = tmp_path / "train.csv"
    csv_file.write_text('label,sentence1,sentence2\nequivalent,"He said ""yes"".",He agreed.\n', encoding="utf-8")
    ex, _ = read(csv_file, "classification", text_column="sentence1", text_pair_column="sentence2")
    assert ex == [{"text": 'He said "yes".', "text_pair": "He agreed.", "label": "equivalent"}]
    tsv = tmp_path / "train.tsv"
    tsv.write_bytes('\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\tA "quote\tB\n'.encode("utf-8"))
    ex, _ = read(tsv, "classification", text_column="#1 String", text_pair_column="#2 String", label_column="Quality")
    assert ex == [{"text": 'A "quote', "text_pair": "B", "label": "1"}]


def test_squad_flat_document_and_nested_layout(tmp_path):
    flat = tmp_path / "sample.json"
    flat.write_text(json.dumps({"version": 2.0, "data": [
        {"id": "a", "question": "Who?", "context": "Ann ran.", "answers": {"text": ["Ann"], "answer_start": [0]}},
        {"id": "b", "question": "Why?", "context": "Ann ran.", "answers": {"text": [], "answer_start": []}},
    ]}, indent=1), encoding="utf-8")
    ex, _ = read(flat, "qa")
    assert [e["id"] for e in ex] == ["a", "b"] and ex[1]["answers"] == {"text": [], "answer_start": []}
    nested = tmp_path / "dev-v2.0.json"
    nested.write_text(json.dumps({"version": "v2.0", "data": [{"title": "T", "paragraphs": [{"context": "Ann ran.",
        "qas": [{"id": "q", "question": "Who?", "answers": [{"text": "Ann", "answer_start": 0}],
                 "is_impossible": False}]}]}]}), encoding="utf-8")
    ex, _ = read(nested, "qa")
    assert ex == [{"id": "q", "question": "Who?", "context": "Ann ran.",
                   "answers": {"text": ["Ann"], "answer_start": [0]}}]


def test_missing_column_is_named_with_file_and_row(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text('{"text": "a", "label": 1}\n{"text": "b"}\n', encoding="utf-8")
    with pytest.raises(data.DataError) as info:
        read(p, "classification")
    assert str(info.value) == f"{p}:2: no label column 'label' (columns: 'text')"


def test_integer_and_string_labels_sort_naturally():
    assert classification.label_map([{"label": x} for x in (10, 2, 1)]) == [1, 2, 10]
    assert classification.label_map([{"label": x} for x in ("10", "2", "1")]) == ["1", "2", "10"]
    assert classification.label_map([{"label": x} for x in ("pos", "neg")]) == ["neg", "pos"]


def test_swag_layout_and_its_errors(tmp_path):
    p = tmp_path / "swag.json"
    rec = {"ending0": "sat down.", "ending1": "flew away.", "label": 1, "sent1": "A bird saw a cat.", "sent2": "The bird"}
    p.write_text(json.dumps(rec) + "\n" + json.dumps({**rec, "label": "0"}) + "\n", encoding="utf-8")
    ex, _ = read(p, "multiple_choice")
    assert ex == [{"context": "A bird saw a cat.", "start": "The bird", "endings": ["sat down.", "flew away."],
                   "label": 1}, {"context": "A bird saw a cat.", "start": "The bird",
                                 "endings": ["sat down.", "flew away."], "label": 0}]
    p.write_text(json.dumps({**rec, "label": 2}) + "\n", encoding="utf-8")
    with pytest.raises(data.DataError) as info:
        read(p, "multiple_choice")
    assert str(info.value) == f"{p}:1: label column 'label' must be the index of the right ending (0-1), got 2"
    examples = [{"endings": ["a", "b"]}, {"endings": ["a", "b", "c"]}]
    with pytest.raises(data.DataError) as info:
        tasks.get("multiple_choice").clean(examples, ["f:1", "f:2"])
    assert str(info.value) == "f:2: 3 endings, but the first record of the split has 2"


def test_shipped_task_recipes_point_at_existing_data():
    from pathlib import Path

    from llmctl import embedded

    root = Path(__file__).resolve().parents[2]
    for name in tasks.finetunable():
        for path in (root / "recipes" / f"{name}.toml", root / "recipes" / "tiny" / f"{name}.toml"):
            r = recipe.load(path)
            assert r.task == name
            for f in (*r.data.train_files, *r.data.validation_files):
                assert f.startswith("embedded:") and Path(embedded.resolve(f)).is_file(), f
