"""Bad input files end in a one-line error naming the file, the line (or record, row, question) and the column,
never in a traceback or a silent misread; their good variants read correctly."""

import copy
import csv
import json
import os
import re
import time
from pathlib import Path

import pytest

from llmctl import data, recipe, tasks
from llmctl.data import DataError

ROOT = Path(__file__).resolve().parents[2]


def records(path):
    return [rec for _, rec in data.iter_records(path)]


def examples(path, task, **columns):
    return data.read_examples([str(path)], tasks.get(task).normalize, recipe.DataSection(**columns))[0]


def fails(fn, message, *args, **kwargs):
    """`fn` raises a DataError whose message is exactly `message`, on one line."""
    assert "\n" not in message
    with pytest.raises(DataError, match=f"^{re.escape(message)}$"):
        fn(*args, **kwargs)


# ------------------------------------------------------------------------------------------- 1. huge CSV cells


@pytest.fixture
def default_csv_limit():
    old = csv.field_size_limit(131072)  # the csv module's default, whatever an earlier test set
    yield
    csv.field_size_limit(old)


@pytest.mark.parametrize("suffix,sep", [(".csv", ","), (".tsv", "\t")])
def test_cells_over_the_csv_field_limit_come_back_whole(tmp_path, default_csv_limit, suffix, sep):
    big = "word " * 60_000  # 300,000 characters
    p = tmp_path / f"big{suffix}"
    p.write_text(f"label{sep}text\n1{sep}{big}\n0{sep}short\n", encoding="utf-8")
    got = records(p)
    assert got == [{"label": "1", "text": big}, {"label": "0", "text": "short"}] and len(got[0]["text"]) == 300_000
    assert examples(p, "classification")[0] == {"text": big, "label": "1"}
    assert csv.field_size_limit() >= 2**31 - 1


# --------------------------------------------------------------------------------------------- 2. deep JSON


def test_json_nested_too_deep(tmp_path):
    one_line = tmp_path / "deep.json"
    one_line.write_text("[" * 100_000, encoding="utf-8")
    fails(records, f"{one_line}:1: JSON nested too deep to read", one_line)
    many_lines = tmp_path / "deep-lines.json"
    many_lines.write_text("[\n" * 100_000, encoding="utf-8")
    fails(records, f"{many_lines}: JSON nested too deep to read", many_lines)
    lines = tmp_path / "deep.jsonl"
    lines.write_text('{"text": "ok"}\n\n{"text": ' + "[" * 100_000 + "\n", encoding="utf-8")
    fails(records, f"{lines}:3: JSON nested too deep to read", lines)
    # JSON Lines in a .json file: the deep line is named too.
    as_json = tmp_path / "deep-in-lines.json"
    as_json.write_text('{"text": "ok"}\n{"text": ' + "[" * 100_000 + "\n", encoding="utf-8")
    fails(records, f"{as_json}:2: JSON nested too deep to read", as_json)


def test_moderately_nested_json_reads(tmp_path):
    value = json.loads("[" * 50 + "]" * 50)
    p = tmp_path / "nested.jsonl"
    p.write_text(json.dumps({"text": "a", "deep": value}) + "\n", encoding="utf-8")
    assert records(p) == [{"text": "a", "deep": value}]
    q = tmp_path / "nested.json"
    q.write_text(json.dumps([{"text": "a", "deep": value}], indent=1), encoding="utf-8")
    assert records(q) == [{"text": "a", "deep": value}]


# ------------------------------------------------------------------------------------- 3. nested SQuAD layout

SQUAD = {"version": "v2.0", "data": [{"title": "T", "paragraphs": [
    {"context": "Ann ran.", "qas": [{"id": "q1", "question": "Who ran?", "answers": [{"text": "Ann", "answer_start": 0}]}]},
    {"context": "Bob sat.", "qas": [
        {"id": "q2", "question": "Who sat?", "answers": [{"text": "Bob", "answer_start": 0}]},
        {"id": "q3", "question": "Why?", "answers": [], "is_impossible": True},
    ]},
]}]}


def squad_file(tmp_path, change=None):
    doc = copy.deepcopy(SQUAD)
    if change:
        change(doc)
    p = tmp_path / "squad.json"
    p.write_text(json.dumps(doc), encoding="utf-8")
    return p


def test_good_nested_squad(tmp_path):
    p = squad_file(tmp_path)
    assert examples(p, "qa") == [
        {"id": "q1", "question": "Who ran?", "context": "Ann ran.", "answers": {"text": ["Ann"], "answer_start": [0]}},
        {"id": "q2", "question": "Who sat?", "context": "Bob sat.", "answers": {"text": ["Bob"], "answer_start": [0]}},
        {"id": "q3", "question": "Why?", "context": "Bob sat.", "answers": {"text": [], "answer_start": []}},
    ]


def _para(doc, j):
    return doc["data"][0]["paragraphs"][j]


def _qa2(doc):
    return _para(doc, 1)["qas"][0]


NESTED_CASES = {
    "answer without text": (lambda d: _qa2(d)["answers"][0].pop("text"),
                            "question 2: answer 1 has no \"text\" (keys: 'answer_start')"),
    "answer without answer_start": (lambda d: _qa2(d)["answers"][0].pop("answer_start"),
                                    "question 2: answer 1 has no \"answer_start\" (keys: 'text')"),
    "answer not an object": (lambda d: _qa2(d).update(answers=["Bob"]),
                             "question 2: answer 1 must be a JSON object with \"text\" and \"answer_start\", got str"),
    "answers not a list": (lambda d: _qa2(d).update(answers={"text": "Bob"}),
                           "question 2: \"answers\" must be a list, got dict"),
    "no answers": (lambda d: _qa2(d).pop("answers"),
                   "question 2: no \"answers\" list (keys: 'id', 'question')"),
    "question without question": (lambda d: _qa2(d).pop("question"),
                                  "question 2: no \"question\" (keys: 'id', 'answers')"),
    "question without id": (lambda d: _qa2(d).pop("id"),
                            "question 2: no \"id\" (keys: 'question', 'answers')"),
    "question not an object": (lambda d: _para(d, 1)["qas"].insert(0, "Who?"),
                               "question 2: expected a JSON object, got str"),
    "paragraph without context": (lambda d: _para(d, 1).pop("context"),
                                  "article 1, paragraph 2: no \"context\" (keys: 'qas')"),
    "paragraph without qas": (lambda d: _para(d, 1).pop("qas"),
                              "article 1, paragraph 2: no \"qas\" list (keys: 'context')"),
    "paragraph not an object": (lambda d: d["data"][0]["paragraphs"].append("text"),
                                "article 1, paragraph 3: expected a JSON object, got str"),
    "article without paragraphs": (lambda d: d["data"].append({"title": "U"}),
                                   "article 2: no \"paragraphs\" list (keys: 'title')"),
    "article not an object": (lambda d: d["data"].append(["x"]), "article 2: expected a JSON object, got list"),
    "answer_start not a number": (lambda d: _qa2(d)["answers"][0].update(answer_start="first"),
                                  "question 2: column 'answers.answer_start' answer 1 must be a non-negative integer "
                                  "(a character offset into the context), got 'first'"),
    "null id": (lambda d: _qa2(d).update(id=None), "question 2: id column 'id' is empty (null)"),
}


@pytest.mark.parametrize("case", list(NESTED_CASES))
def test_bad_nested_squad(tmp_path, case):
    change, message = NESTED_CASES[case]
    p = squad_file(tmp_path, change)
    fails(examples, f"{p}: {message}", p, "qa")


# ----------------------------------------------------------------------------------------- 4. flat QA records

GOOD_QA = {"id": "a1", "question": "Who ran?", "context": "Ann and Bob ran.",
           "answers": {"text": ["Ann", "Bob"], "answer_start": [0, 8]}}


def qa_file(tmp_path, *recs, name="qa.jsonl"):
    p = tmp_path / name
    p.write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")
    return p


def with_answers(**answers):
    return {**GOOD_QA, "answers": {**GOOD_QA["answers"], **answers}}


def test_good_flat_qa_records(tmp_path):
    p = qa_file(tmp_path, GOOD_QA,
                {**GOOD_QA, "id": 7, "answers": {"text": "Bob", "answer_start": 8}},  # single-answer shorthand
                {**GOOD_QA, "id": "a3", "answers": {"text": ["Bob"], "answer_start": ["8"]}},  # digits, as CSV
                {**GOOD_QA, "id": "a4", "answers": {"text": ["Bob"], "answer_start": [8.0]}},
                {**GOOD_QA, "id": "a5", "answers": {"text": [], "answer_start": []}})
    got = examples(p, "qa")
    assert [e["id"] for e in got] == ["a1", "7", "a3", "a4", "a5"]
    assert [e["answers"] for e in got] == [GOOD_QA["answers"], *[{"text": ["Bob"], "answer_start": [8]}] * 3,
                                           {"text": [], "answer_start": []}]
    assert all(type(s) is int for e in got for s in e["answers"]["answer_start"])


def test_qa_column_names_come_from_the_recipe(tmp_path):
    rec = {"qid": "x", "q": "Who ran?", "ctx": "Ann ran.", "ans": {"text": ["Ann"], "answer_start": [0]}}
    p = qa_file(tmp_path, rec)
    cols = {"id_column": "qid", "question_column": "q", "context_column": "ctx", "answers_column": "ans"}
    assert examples(p, "qa", **cols) == [{"id": "x", "question": "Who ran?", "context": "Ann ran.",
                                          "answers": {"text": ["Ann"], "answer_start": [0]}}]
    fails(examples, f"{p}:1: no id column 'id' (columns: 'qid', 'q', 'ctx', 'ans')", p, "qa",
          **{**cols, "id_column": "id"})
    bad = qa_file(tmp_path, {**rec, "ans": {"text": ["Ann"], "answer_start": [-2]}}, name="bad.jsonl")
    fails(examples, f"{bad}:1: column 'ans.answer_start' answer 1 must be a non-negative integer (a character "
                    f"offset into the context), got -2", bad, "qa", **cols)


START = "column 'answers.answer_start' answer {k} must be a non-negative integer (a character offset into the " \
        "context), got {v}"
FLAT_CASES = {
    "no id column": ({k: v for k, v in GOOD_QA.items() if k != "id"},
                     "no id column 'id' (columns: 'question', 'context', 'answers')"),
    "null id": ({**GOOD_QA, "id": None}, "id column 'id' is empty (null)"),
    "empty id": ({**GOOD_QA, "id": ""}, "id column 'id' is empty ('')"),
    "blank id": ({**GOOD_QA, "id": "  "}, "id column 'id' is empty ('  ')"),
    "list id": ({**GOOD_QA, "id": [1]}, "id column 'id' must hold text or an integer, got [1]"),
    "null start": (with_answers(answer_start=[0, None]), START.format(k=2, v="None")),
    "negative start": (with_answers(answer_start=[-1, 8]), START.format(k=1, v="-1")),
    "bool start": (with_answers(answer_start=[0, True]), START.format(k=2, v="True")),
    "fractional start": (with_answers(answer_start=[0.5, 8]), START.format(k=1, v="0.5")),
    "word start": (with_answers(answer_start=[0, "eight"]), START.format(k=2, v="'eight'")),
    "signed string start": (with_answers(answer_start=["-1", 8]), START.format(k=1, v="'-1'")),
    "decimal string start": (with_answers(answer_start=["8.0", 8]), START.format(k=1, v="'8.0'")),
    "shorthand null start": ({**GOOD_QA, "answers": {"text": "Ann", "answer_start": None}},
                             START.format(k=1, v="None")),
    "more texts than starts": (with_answers(answer_start=[0]),
                               "column 'answers' has 2 answer texts but 1 answer_start values; give one start per text"),
    "more starts than texts": (with_answers(text=[]),
                               "column 'answers' has 0 answer texts but 2 answer_start values; give one start per text"),
    "answer text a number": (with_answers(text=["Ann", 5]), "column 'answers.text' answer 2 must be a string, got 5"),
    "answer text null": (with_answers(text=[None, "Bob"]),
                         "column 'answers.text' answer 1 must be a string, got None"),
    "text not a list": (with_answers(text={"a": 1}), "column 'answers.text' must be a list, got {'a': 1}"),
    "starts not a list": (with_answers(answer_start=0), "column 'answers.answer_start' must be a list, got 0"),
    "answers not a dict": ({**GOOD_QA, "answers": ["Ann"]},
                           "column 'answers' must be {\"text\": [...], \"answer_start\": [...]}"),
    "null context": ({**GOOD_QA, "context": None}, "context column 'context' is empty (null)"),
}


@pytest.mark.parametrize("case", list(FLAT_CASES))
def test_bad_flat_qa_record(tmp_path, case):
    rec, message = FLAT_CASES[case]
    p = qa_file(tmp_path, {**GOOD_QA, "id": "first"}, rec)
    fails(examples, f"{p}:2: {message}", p, "qa")


def test_qa_errors_in_a_json_document_name_the_record(tmp_path):
    p = tmp_path / "flat.json"
    p.write_text(json.dumps({"data": [GOOD_QA, {**GOOD_QA, "id": ""}]}, indent=1), encoding="utf-8")
    fails(examples, f"{p}: record 2: id column 'id' is empty ('')", p, "qa")


def test_qa_from_parquet_names_the_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "qa.parquet"
    pq.write_table(pa.Table.from_pylist([GOOD_QA, {**GOOD_QA, "id": None}]), p)
    fails(examples, f"{p}: row 2: id column 'id' is empty (null)", p, "qa")


# ------------------------------------------------------------------------------------ 5. classification labels


def test_integral_float_labels_are_integers(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text('{"text": "a", "label": 1.0}\n{"text": "b", "label": 0}\n{"text": "c", "label": -2.0}\n',
                 encoding="utf-8")
    got = examples(p, "classification")
    assert [e["label"] for e in got] == [1, 0, -2] and all(type(e["label"]) is int for e in got)


@pytest.mark.parametrize("value,shown", [("1.5", "1.5"), ("NaN", "nan"), ("Infinity", "inf")])
def test_fractional_float_label_is_an_error(tmp_path, value, shown):
    p = tmp_path / "c.jsonl"
    p.write_text(f'{{"text": "a", "label": 1}}\n{{"text": "b", "label": {value}}}\n', encoding="utf-8")
    fails(examples, f"{p}:2: label column 'label' holds {shown}, which is not a whole number; labels must be strings "
                    f"or integers", p, "classification")


def test_float_label_column_from_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "c.parquet"
    pq.write_table(pa.table({"text": ["a", "b", "c"], "label": [0.0, 1.0, 0.25]}), p)
    fails(examples, f"{p}: row 3: label column 'label' holds 0.25, which is not a whole number; labels must be "
                    f"strings or integers", p, "classification")
    pq.write_table(pa.table({"text": ["a", "b"], "label": [0.0, 1.0]}), p)
    assert [e["label"] for e in examples(p, "classification")] == [0, 1]


# ------------------------------------------------------------------------------------------- 6. not UTF-8


LATIN1 = [
    ("c.txt", "line one\n\nline three\n" * 2000 + "caf\xe9 au lait\n", 6001, 4),
    ("c.jsonl", '{"text": "x"}\n' * 3000 + '{"text": "caf\xe9"}\n', 3001, 14),
    ("c.json", '{"text": "x"}\n' * 3000 + '{"text": "caf\xe9"}\n', 3001, 14),
    ("doc.json", '[\n' + '{"text": "x"},\n' * 3000 + '{"text": "caf\xe9"}\n]\n', 3002, 14),
    ("c.csv", "label,text\n" + "1,x\n" * 3000 + "0,caf\xe9\n", 3002, 6),
    ("c.tsv", "label\ttext\n" + "1\tx\n" * 3000 + "0\tcaf\xe9\n", 3002, 6),
    ("first.txt", "\xe9t\xe9\n", 1, 1),
]


@pytest.mark.parametrize("name,text,line,column", LATIN1)
def test_latin1_bytes_name_the_line(tmp_path, name, text, line, column):
    p = tmp_path / name
    p.write_bytes(text.encode("latin-1"))
    fails(records, f"{p}:{line}: not valid UTF-8 text (column {column}, byte 0xe9); save the file as UTF-8", p)
    p.write_bytes(text.encode("utf-8"))
    assert records(p)


def test_utf8_bom_is_not_a_column(tmp_path):
    p = tmp_path / "bom.txt"
    p.write_bytes(b"\xef\xbb\xbfab\xe9\n")
    fails(records, f"{p}:1: not valid UTF-8 text (column 3, byte 0xe9); save the file as UTF-8", p)


# ------------------------------------------------------------------------------------------- 7. corrupt Parquet


def test_corrupt_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"not a parquet file at all")
    with pytest.raises(DataError, match=f"^{re.escape(str(garbage))}: cannot read Parquet file: [^\n]+$"):
        records(garbage)
    # A sound footer over damaged pages fails only while reading the rows.
    damaged = tmp_path / "damaged.parquet"
    pq.write_table(pa.table({"text": [f"row {i} " * 20 for i in range(20_000)]}), damaged, row_group_size=5000,
                   compression="none")
    raw = bytearray(damaged.read_bytes())
    raw[len(raw) // 2 : len(raw) // 2 + 2000] = b"\xff" * 2000
    damaged.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=f"^{re.escape(str(damaged))}: cannot read Parquet file past row \\d+: [^\n]+$"):
        records(damaged)


# ------------------------------------------------------------------------ 8. eval --predictions values (issue 8)


def scored(tmp_path, metric, *lines):
    from llmctl.evaluate_cli import score_file

    p = tmp_path / "p.jsonl"
    p.write_text("".join(lines), encoding="utf-8")
    return p, lambda: score_file(p, [metric])


@pytest.mark.parametrize("metric", ["rouge", "sacrebleu", "chrf", "bleu", "exact_match", "squad", "squad_v2"])
@pytest.mark.parametrize("line,message", [
    ('{"prediction": "a", "reference": null}', "'reference' must be text or a list of texts, got null"),
    ('{"prediction": null, "reference": "a"}', "'prediction' must be text, got null"),
    ('{"prediction": "a", "reference": true}', "'reference' must be text or a list of texts, got True"),
    ('{"prediction": "a", "reference": {"text": "a"}}', "'reference' must be text or a list of texts, got {'text': 'a'}"),
    ('{"prediction": "a", "reference": ["a", 3]}', "'reference' item 2 must be text, got 3"),
    ('{"prediction": ["a"], "reference": "a"}', "'prediction' must be text, got ['a']"),
    ('{"prediction": "a", "reference": NaN}', "'reference' must be text or a list of texts, got nan"),
])
def test_predictions_file_with_values_that_are_not_text(tmp_path, metric, line, message):
    p, score = scored(tmp_path, metric, '{"prediction": "a b", "reference": "a b"}\n', line + "\n")
    fails(score, f"{p}:2: {message}")


@pytest.mark.parametrize("metric", ["accuracy", "f1"])
@pytest.mark.parametrize("line,message", [
    ('{"prediction": 1, "reference": null}', "'reference' must be a label (text or an integer), got null"),
    ('{"prediction": 1.5, "reference": 1}', "'prediction' must be a label (text or an integer), got 1.5"),
    ('{"prediction": [1], "reference": 1}', "'prediction' must be a label (text or an integer), got [1]"),
    ('{"prediction": 1, "reference": false}', "'reference' must be a label (text or an integer), got False"),
])
def test_predictions_file_with_values_that_are_not_labels(tmp_path, metric, line, message):
    p, score = scored(tmp_path, metric, '{"prediction": 0, "reference": 0}\n', line + "\n")
    fails(score, f"{p}:2: {message}")


def test_numbers_in_a_predictions_file_are_their_text(tmp_path):
    _, score = scored(tmp_path, "exact_match", '{"prediction": "5", "reference": 5}\n',
                      '{"prediction": 7.5, "reference": "7.5"}\n')
    assert score()["metrics"]["exact_match.exact_match"] == 1.0
    _, score = scored(tmp_path, "accuracy", '{"prediction": 1, "reference": "1"}\n',
                      '{"prediction": 2.0, "reference": 2}\n')
    assert score()["metrics"]["accuracy.accuracy"] == 1.0


# ------------------------------------------------------------------------------- 9. run directories (issue 8)


def llmctl_run(root, *, marker=True):
    from llmctl import catalog, runs
    from llmctl import recipe as recipe_mod

    root.mkdir(parents=True, exist_ok=True)
    r = catalog.resolve_paths(recipe_mod.load(ROOT / "recipes" / "tiny" / "pretrain.toml"))
    (root / "recipe.toml").write_text(recipe_mod.dumps(r), encoding="utf-8")
    (root / "log.jsonl").write_text('{"step": 1}\n', encoding="utf-8")
    if marker:
        runs.mark_run(root, "pretrain")
    return root


def test_which_output_directories_llmctl_takes(tmp_path):
    from llmctl import runs
    from llmctl.runs import RunError, check_output_dir

    assert check_output_dir(tmp_path / "new") == "new"
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / runs.LOCK_NAME).write_text("", encoding="utf-8")  # an earlier attempt's lock file
    assert check_output_dir(tmp_path / "empty") == "empty"
    assert check_output_dir(llmctl_run(tmp_path / "marked")) == "marked"
    # A run from before the marker: llmctl's resolved recipe.toml next to its log.
    assert check_output_dir(llmctl_run(tmp_path / "legacy", marker=False)) == "legacy"
    # recipe.toml alone, or one llmctl did not write, is not enough.
    alone = llmctl_run(tmp_path / "alone", marker=False)
    (alone / "log.jsonl").unlink()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "recipe.toml").write_text('name = "mine"\n', encoding="utf-8")
    (foreign / "log.jsonl").write_text("{}\n", encoding="utf-8")
    for root, holds in ((alone, "recipe.toml"), (foreign, "log.jsonl, recipe.toml")):
        with pytest.raises(RunError, match=f"^{re.escape(str(root))}: not an llmctl run directory and not empty "
                                           f"\\(it holds {re.escape(holds)}\\); "):
            check_output_dir(root)
    bad = llmctl_run(tmp_path / "bad-marker")
    (bad / runs.MARKER_NAME).write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(RunError, match=f"^{re.escape(str(bad / runs.MARKER_NAME))}: not a valid llmctl run marker"):
        check_output_dir(bad)
    afile = tmp_path / "afile"
    afile.write_text("x", encoding="utf-8")
    with pytest.raises(RunError, match="output path exists and is not a directory$"):
        check_output_dir(afile)


def test_overwrite_removes_only_what_llmctl_wrote(tmp_path):
    from llmctl import runs

    root = llmctl_run(tmp_path / "run")
    for name in ("final", "best", "checkpoints/step-2", "tracking/x", "data/train", "tokenizer"):
        (root / name).mkdir(parents=True)
    for name in ("results.json", "predictions.jsonl"):
        (root / name).write_text("{}\n", encoding="utf-8")
    (root / "my-notes.txt").write_text("mine\n", encoding="utf-8")
    (root / "my-folder").mkdir()
    runs.start_run(runs.Run(root), kind="pretrain", resume=False, overwrite=True)
    assert sorted(p.name for p in root.iterdir()) == [runs.MARKER_NAME, "data", "my-folder", "my-notes.txt",
                                                      "recipe.toml", "tokenizer"]


def test_resume_removes_only_results(tmp_path):
    from llmctl import runs

    root = llmctl_run(tmp_path / "run")
    (root / "results.json").write_text("{}\n", encoding="utf-8")
    (root / "final").mkdir()
    runs.start_run(runs.Run(root), kind="pretrain", resume=True, overwrite=False)
    assert sorted(p.name for p in root.iterdir()) == [runs.MARKER_NAME, "final", "log.jsonl", "recipe.toml"]


def test_a_legacy_run_is_adopted(tmp_path):
    from llmctl import runs

    root = llmctl_run(tmp_path / "old", marker=False)
    runs.start_run(runs.Run(root), kind="finetune", resume=False, overwrite=False)
    marker = runs.read_marker(root)
    assert marker["kind"] == "finetune" and "adopted" in marker and "final" in marker["writes"]


# ------------------------------------------------------------------------------ 10. temporary directories


def test_temp_dirs_of_killed_processes_are_removed(tmp_path):
    import subprocess
    import sys

    from llmctl import runs

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    host = runs.temp_dir(".preprocess-", tmp_path).name.split("-")[1]  # this host's name, as temp_dir writes it
    left = tmp_path / f".preprocess-{host}-{int(dead.stdout)}-abc"   # a killed run's
    live = tmp_path / f".preprocess-{host}-{os.getpid()}-def"       # a live one's (this process)
    other = tmp_path / f".preprocess-elsewhere-{int(dead.stdout)}-ghi"  # another machine's: its pid means nothing here
    young = tmp_path / ".preprocess-k2j3h4"                              # an old-style name, fresh
    old = tmp_path / ".preprocess-z9y8x7"                                # an old-style name, two days old
    for p in (left, live, other, young, old):
        p.mkdir()
        (p / "blocks.arrow").write_bytes(b"x")
    os.utime(old, (time.time() - 2 * 86400,) * 2)
    (tmp_path / "mine").mkdir()
    made = runs.temp_dir(".preprocess-", tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert left.name not in names and old.name not in names
    assert {live.name, other.name, young.name, made.name, "mine"} <= names


def test_eval_temp_dir_is_removed_on_error(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    fails(data.text_blocks, f"{empty}: no text documents", [str(empty)], None, 16)  # fails before the tokenizer
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("llmctl-eval-")] == []


# ----------------------------------------------------------------------- 11. damaged caches, stdin (issue 8)


def test_damaged_validation_cache_is_one_line(tmp_path):
    import datasets

    from llmctl import taskdata

    run = tmp_path / "run"
    split = run / "data" / "records" / "validation"
    good = datasets.Dataset.from_dict({"example": ['{"text": "a", "label": 0}', '{"text": "b"'],
                                       "where": ["f.jsonl:1", "f.jsonl:2"]})
    good.save_to_disk(str(split))
    fix = f"; rebuild it: `llmctl preprocess {run / 'recipe.toml'} -o {run}` (after deleting {run / 'data'})"
    fails(taskdata.cached_validation, f"{split}: damaged cache: record 2 is not a JSON object{fix}", run)
    arrow = next(split.glob("*.arrow"))
    arrow.write_bytes(arrow.read_bytes()[:100])
    with pytest.raises(DataError, match=f"^{re.escape(str(split))}: damaged cache: [^\n]+$"):
        taskdata.cached_validation(run)


def test_summarize_stdin_must_be_utf8():
    import io

    from llmctl.summarize import SummarizeError, read_stdin

    assert read_stdin(io.TextIOWrapper(io.BytesIO("\ufeffcaf\xe9\n".encode("utf-8")))) == "caf\xe9\n"
    with pytest.raises(SummarizeError, match=r"^stdin:3: not valid UTF-8 text \(column 4, byte 0xe9\); send UTF-8 "
                                             r"text$"):
        read_stdin(io.TextIOWrapper(io.BytesIO("a\nb\ncaf\xe9\n".encode("latin-1"))))
    with pytest.raises(SummarizeError, match=r"^stdin:1: "):
        read_stdin(io.StringIO("lone \ud800 surrogate"))
