"""Fuzzing of every reader (issue 8, part 9): hypothesis generates malformed recipes (TOML and --set overrides),
JSON Lines, JSON documents, CSV/TSV, text, predictions files, summarize inputs and outputs, run logs, markers and
cached records, and feeds them to the reader functions in-process (and a handful through the CLI entry point).

Every case must end in a correct read or in one of llmctl's own errors with a one-line message; any other
exception fails the test (hypothesis then shrinks it to a minimal input). A case that runs longer than HANG_S
seconds is a hang and fails too. The default suite runs FAST examples per test; `-m slow` runs SLOW per test.
The number of cases run is printed at the end of the module (and in the slow run's too).
"""

from __future__ import annotations

import collections
import contextlib
import csv
import io
import json
import math
import signal
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmctl import data, recipe, runs, tasks
from llmctl.cli import UsageError, _user_errors
from llmctl.recipe import RecipeError

ROOT = Path(__file__).resolve().parents[2]
FAST, SLOW = 40, 1000
HANG_S = 20
CASES: collections.Counter = collections.Counter()
ERRORS = (RecipeError, UsageError, *_user_errors())


def fuzz():
    """The default suite: FAST examples per test, the same ones every run (derandomized), so that it cannot fail
    one day and pass the next; LLMCTL_FUZZ_EXAMPLES=N (the slow test below): N new random examples."""
    import os

    n = int(os.environ.get("LLMCTL_FUZZ_EXAMPLES", FAST))
    return settings(max_examples=n, deadline=None, derandomize=n == FAST, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large, HealthCheck.filter_too_much])


@contextlib.contextmanager
def no_hang(name: str):
    """Count the case, and fail it if it runs past HANG_S seconds (a hang, not a timing: nothing is that slow)."""
    CASES[name] += 1

    def stop(signum, frame):
        raise AssertionError(f"{name}: no answer after {HANG_S} s: a hang")

    old = signal.signal(signal.SIGALRM, stop)
    signal.alarm(HANG_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def outcome(name: str, fn, *args, **kwargs):
    """fn's result, or the llmctl error it raised (checked to be one line); anything else propagates."""
    with no_hang(name):
        try:
            return fn(*args, **kwargs)
        except ERRORS as exc:
            lines = exc.problems if isinstance(exc, RecipeError) else [str(exc)]
            assert lines, f"{type(exc).__name__} without a message"
            for line in lines:
                assert line.strip() and "\n" not in line and "Traceback" not in line, repr(line)
            return exc


@pytest.fixture(scope="module", autouse=True)
def report_cases(request):
    yield
    total = sum(CASES.values())
    detail = ", ".join(f"{k} {v}" for k, v in sorted(CASES.items()))
    line = f"fuzz: {total} cases ({detail})"
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        print(f"\n{line}")


# ------------------------------------------------------------------------------------------------ strategies

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                    st.text(max_size=20))
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                           max_leaves=12)
# Column names the tasks read by default, so that records often get past the first check.
COLUMNS = ["text", "label", "document", "summary", "translation", "en", "ro", "id", "question", "context", "answers",
           "answer_start", "endings", "ending0", "ending1", "sent1", "sent2", "startphrase", "text_pair", "target"]
records = st.dictionaries(st.sampled_from(COLUMNS) | st.text(max_size=6), json_values, max_size=6)
garbage_bytes = st.binary(max_size=300)
lines_of_text = st.lists(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=40), max_size=8)


def jsonl_lines():
    """Lines of a JSON Lines file: objects, other JSON values, broken JSON, blank lines."""
    one = st.one_of(
        records.map(lambda r: json.dumps(r, allow_nan=True)),
        json_values.map(lambda v: json.dumps(v, allow_nan=True)),
        st.text(alphabet=string.printable, max_size=30),
        records.map(lambda r: json.dumps(r)[:-1]),  # cut short
        st.just(""),
    )
    return st.lists(one, max_size=8)


def write(tmp_path: Path, name: str, content: bytes | str) -> Path:
    p = tmp_path / name
    p.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass"))
    return p


# ----------------------------------------------------------------------------------------------- data readers


def read_all(path: Path, **kw) -> list:
    return list(data.iter_records(path, **kw))


@fuzz()
@given(lines=jsonl_lines(), suffix=st.sampled_from([".jsonl", ".json"]))
def test_jsonl(tmp_path_factory, lines, suffix):
    p = write(tmp_path_factory.mktemp("f"), "x" + suffix, "\n".join(lines) + "\n")
    got = outcome("jsonl", read_all, p)
    objects = [json.loads(line) for line in lines if line.strip() and _is_object(line)]
    if not isinstance(got, Exception) and suffix == ".jsonl":
        assert [rec for _, rec in got] == objects or _has_nan(objects)  # a correct read
    elif suffix == ".jsonl" and all(_is_object(line) for line in lines if line.strip()):
        raise AssertionError(f"valid JSON Lines refused: {got}")


def _is_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def _has_nan(value) -> bool:
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, list):
        return any(_has_nan(v) for v in value)
    if isinstance(value, dict):
        return any(_has_nan(v) for v in value.values())
    return False


@fuzz()
@given(doc=st.one_of(json_values,
                     st.lists(records, max_size=4),
                     st.fixed_dictionaries({"data": st.lists(st.one_of(records, json_values), max_size=3)}),
                     st.fixed_dictionaries({"data": st.lists(st.fixed_dictionaries(
                         {"title": scalars, "paragraphs": st.lists(st.one_of(json_values, st.fixed_dictionaries(
                             {"context": scalars, "qas": st.lists(st.one_of(json_values, records), max_size=3)})),
                             max_size=3)}), max_size=2)})),
       indent=st.sampled_from([None, 1]))
def test_json_document(tmp_path_factory, doc, indent):
    p = write(tmp_path_factory.mktemp("f"), "doc.json", json.dumps(doc, indent=indent, allow_nan=True))
    got = outcome("json", read_all, p)
    if isinstance(doc, list) and all(isinstance(r, dict) and "paragraphs" not in r for r in doc) and doc \
            and not isinstance(got, Exception) and not _has_nan(doc):
        assert [rec for _, rec in got] == doc


@fuzz()
@given(raw=st.one_of(garbage_bytes, st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass"))),
       suffix=st.sampled_from([".jsonl", ".json", ".csv", ".tsv", ".txt", ".parquet"]),
       mode=st.sampled_from(["blank_line", "line", "file"]))
def test_any_bytes_in_any_format(tmp_path_factory, raw, suffix, mode):
    p = write(tmp_path_factory.mktemp("f"), "x" + suffix, raw)
    outcome("bytes", read_all, p, txt_documents=mode)


cells = st.text(alphabet=string.ascii_letters + " ,;\"'\t\n\r|é中", max_size=12)


@fuzz()
@given(header=st.lists(st.text(alphabet=string.ascii_lowercase, min_size=1, max_size=6), min_size=1, max_size=4,
                       unique=True),
       rows=st.lists(st.lists(cells, min_size=1, max_size=5), max_size=6),
       delimiter=st.sampled_from([",", "\t"]))
def test_csv_written_by_a_csv_writer(tmp_path_factory, header, rows, delimiter):
    """Rows of the header's width, written by the csv module, read back exactly; other widths are one line."""
    buf = io.StringIO()
    quoting = csv.QUOTE_MINIMAL if delimiter == "," else csv.QUOTE_NONE
    writer = csv.writer(buf, delimiter=delimiter, quoting=quoting, escapechar="\\" if delimiter == "\t" else None,
                        lineterminator="\n")
    try:
        writer.writerow(header)
        for row in rows:
            writer.writerow(row)
    except csv.Error:
        return
    p = write(tmp_path_factory.mktemp("f"), "x.csv" if delimiter == "," else "x.tsv", buf.getvalue())
    got = outcome("csv", read_all, p)
    # A carriage return is not in the writer's line terminator ("\n"), so it is written unquoted, and every CSV
    # reader takes a bare CR for the end of a row: such files are malformed, not "simple".
    simple = delimiter == "," and all(len(r) == len(header) and any(c.strip() for c in r)
                                      and not any("\r" in c for c in r) for r in rows)
    if simple:
        assert not isinstance(got, Exception), got
        assert [rec for _, rec in got] == [dict(zip(header, r)) for r in rows]


@fuzz()
@given(text=st.text(alphabet=string.printable + "\"'é", max_size=300), delimiter=st.sampled_from([",", "\t"]))
def test_csv_any_text(tmp_path_factory, text, delimiter):
    p = write(tmp_path_factory.mktemp("f"), "x.csv" if delimiter == "," else "x.tsv", text)
    outcome("csv", read_all, p)


@fuzz()
@given(rows=st.lists(records, min_size=1, max_size=5))
def test_parquet(tmp_path_factory, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path_factory.mktemp("f") / "x.parquet"
    try:
        pq.write_table(pa.Table.from_pylist(rows), p)
    except (pa.ArrowException, ValueError, TypeError, OverflowError):
        return  # rows pyarrow cannot write are not a reader's concern
    outcome("parquet", read_all, p)


# ---------------------------------------------------------------------------------------- task normalization


@fuzz()
@given(task=st.sampled_from(sorted(tasks.finetunable())), recs=st.lists(records, min_size=1, max_size=4))
def test_task_records(tmp_path_factory, task, recs):
    p = write(tmp_path_factory.mktemp("f"), "x.jsonl", "".join(json.dumps(r, allow_nan=True) + "\n" for r in recs))
    outcome("task-records", data.read_examples, [str(p)], tasks.get(task).normalize, recipe.DataSection())


# ------------------------------------------------------------------------------------------------- recipes

RECIPE_KEYS = {
    "": ["name", "task", "seed", "description"],
    "model": ["arch", "path", "config"],
    "tokenizer": ["vocab_size", "min_frequency", "path"],
    "data": ["train_files", "validation_files", "block_size", "validation_fraction", "txt_documents",
             "max_source_length", "hub_dataset"],
    "train": ["lr", "min_lr", "batch_size", "micro_batch_size", "max_steps", "warmup_steps", "precision",
              "report_to", "grad_clip", "beta1"],
    "eval": ["metrics", "patience", "best_metric"],
    "generation": ["num_beams", "top_p", "max_new_tokens"],
    "lora": ["enabled", "r", "target_modules"],
    "bogus": ["x"],
}
toml_scalars = st.one_of(st.booleans(), st.integers(-2**63, 2**63 - 1), st.floats(allow_nan=True),
                         st.text(max_size=12), st.sampled_from(["causal_lm", "summarization", "gpt2", "fp16", "x"]))
toml_values = st.one_of(toml_scalars, st.lists(toml_scalars, max_size=3),
                        st.dictionaries(st.text(alphabet=string.ascii_lowercase, min_size=1, max_size=5),
                                        toml_scalars, max_size=3))


@st.composite
def recipe_dicts(draw):
    out: dict = {"name": "fuzz", "data": {"train_files": ["x.txt"]}}
    for _ in range(draw(st.integers(0, 8))):
        section = draw(st.sampled_from(sorted(RECIPE_KEYS)))
        key = draw(st.sampled_from(RECIPE_KEYS[section]) | st.text(alphabet=string.ascii_lowercase, min_size=1,
                                                                   max_size=6))
        value = draw(toml_values)
        if section:
            node = out.setdefault(section, {})
            if not isinstance(node, dict):
                continue
            node[key] = value
        else:
            out[key] = value
    if draw(st.booleans()):  # a section that is a value, or a key that is missing
        out[draw(st.sampled_from(["model", "data", "train"]))] = draw(toml_scalars)
    return out


overrides = st.lists(st.one_of(
    st.builds(lambda s, k, v: f"{s}.{k}={v}", st.sampled_from(sorted(RECIPE_KEYS)), st.sampled_from(
        sum(RECIPE_KEYS.values(), [])), st.text(alphabet=string.printable, max_size=12)),
    st.text(alphabet=string.printable, max_size=20)), max_size=3)


@fuzz()
@given(doc=recipe_dicts(), sets=overrides)
def test_recipe_structures(tmp_path_factory, doc, sets):
    try:
        text = recipe.dumps(doc)
    except TypeError:
        return
    p = write(tmp_path_factory.mktemp("f"), "r.toml", text)
    got = outcome("recipe", recipe.load, p, sets)
    if not isinstance(got, Exception):
        assert isinstance(got, recipe.Recipe)
        # A valid recipe is written and read back to the same recipe.
        again = write(p.parent, "again.toml", recipe.dumps(got))
        assert recipe.load(again) == got


@fuzz()
@given(text=st.one_of(st.text(max_size=300), st.text(alphabet=string.printable, max_size=300),
                      garbage_bytes.map(lambda b: b.decode("latin-1"))),
       sets=overrides)
def test_recipe_text(tmp_path_factory, text, sets):
    p = write(tmp_path_factory.mktemp("f"), "r.toml", text)
    outcome("recipe", recipe.load, p, sets)


# ------------------------------------------------------------------------------------------ predictions files

METRICS = ["rouge", "sacrebleu", "chrf", "bleu", "exact_match", "squad", "squad_v2", "accuracy", "f1"]
pred_values = st.one_of(scalars, st.lists(st.one_of(st.text(max_size=10), scalars), max_size=3),
                        st.dictionaries(st.text(max_size=4), scalars, max_size=2))


@fuzz()
@given(rows=st.lists(st.one_of(st.fixed_dictionaries({"prediction": pred_values, "reference": pred_values}),
                               st.fixed_dictionaries({"prediction": st.text(max_size=20),
                                                      "reference": st.text(max_size=20)}),
                               records), max_size=4),
       names=st.lists(st.sampled_from(METRICS), min_size=1, max_size=2, unique=True))
def test_predictions_file(tmp_path_factory, rows, names):
    from llmctl.evaluate_cli import score_file

    p = write(tmp_path_factory.mktemp("f"), "p.jsonl", "".join(json.dumps(r, allow_nan=True) + "\n" for r in rows))
    got = outcome("predictions", score_file, p, names)
    if not isinstance(got, Exception):
        assert got["examples"] == len(rows)


# ------------------------------------------------------------------------------- summarize, logs, run files


@fuzz()
@given(raw=st.one_of(garbage_bytes, lines_of_text.map(lambda ls: "\n".join(ls).encode("utf-8"))))
def test_summarize_stdin(raw):
    from llmctl.summarize import read_inputs

    got = outcome("summarize-stdin", read_inputs, ["-"], stdin=io.TextIOWrapper(io.BytesIO(raw), errors="strict"))
    if not isinstance(got, Exception):
        assert got == [{"id": "stdin", "source": raw.decode("utf-8-sig").strip()}]


@fuzz()
@given(lines=jsonl_lines(), suffix=st.sampled_from([".jsonl", ".json", ".csv"]),
       text_column=st.sampled_from(["text", "document", "x"]))
def test_summarize_dataset_inputs(tmp_path_factory, lines, suffix, text_column):
    from llmctl.summarize import read_inputs

    p = write(tmp_path_factory.mktemp("f"), "in" + suffix, "\n".join(lines) + "\n")
    outcome("summarize-inputs", read_inputs, [str(p)], text_column=text_column)


@fuzz()
@given(raw=st.one_of(garbage_bytes, jsonl_lines().map(lambda ls: "\n".join(ls).encode("utf-8"))))
def test_summarize_output_so_far(tmp_path_factory, raw):
    from llmctl.summarize import done_ids

    p = write(tmp_path_factory.mktemp("f"), "out.jsonl", raw)
    got = outcome("summarize-output", done_ids, p)
    if not isinstance(got, Exception):
        assert isinstance(got, set)
        after = p.read_bytes()
        # Only a torn last line is ever cut; a whole last line that lacks its newline gets one (done_ids), so that
        # the next record starts on a line of its own.
        assert after == raw[: len(after)] or (after == raw + b"\n" and raw.split(b"\n")[-1].strip()), (raw, after)


@fuzz()
@given(raw=st.one_of(garbage_bytes, jsonl_lines().map(lambda ls: "\n".join(ls).encode("utf-8"))))
def test_run_files(tmp_path_factory, raw):
    """A run's log, marker and lock file as something else wrote them: read as far as they are sound."""
    root = tmp_path_factory.mktemp("run")
    for name in ("log.jsonl", runs.MARKER_NAME, runs.LOCK_NAME):
        write(root, name, raw)
    got = outcome("run-files", runs.read_log, root / "log.jsonl")
    assert isinstance(got, (list, Exception))
    marker = outcome("run-files", runs.read_marker, root)
    assert marker is None or isinstance(marker, dict)
    assert outcome("run-files", runs.lock_holder, root) is None  # nobody holds it, whatever it says
    outcome("run-files", runs.check_output_dir, root)


@fuzz()
@given(examples=st.lists(st.one_of(records.map(lambda r: json.dumps(r, allow_nan=True)), st.text(max_size=20)),
                         min_size=1, max_size=5))
def test_cached_records(tmp_path_factory, examples):
    import datasets

    from llmctl import taskdata

    run = tmp_path_factory.mktemp("run")
    datasets.Dataset.from_dict({"example": examples, "where": [f"f:{i}" for i in range(len(examples))]}) \
        .save_to_disk(str(run / "data" / "records" / "validation"))
    got = outcome("cached-records", taskdata.cached_validation, run)
    if not isinstance(got, Exception):
        assert len(got[0]) == len(examples) and all(isinstance(e, dict) for e in got[0])


# -------------------------------------------------------------------------------------- through the CLI entry


@settings(max_examples=6, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(doc=recipe_dicts(), lines=jsonl_lines(), metric=st.sampled_from(METRICS))
def test_through_the_cli(tmp_path_factory, doc, lines, metric):
    """A handful through `llmctl` itself (typer's CliRunner): exit code 0, 1 or 2, one error line, no traceback."""
    from typer.testing import CliRunner

    from llmctl.cli import app

    tmp = tmp_path_factory.mktemp("cli")
    try:
        text = recipe.dumps(doc)
    except TypeError:
        text = "name = 1\n"
    r = write(tmp, "r.toml", text)
    p = write(tmp, "p.jsonl", "\n".join(lines) + "\n")
    runner = CliRunner()
    for args in (["preprocess", str(r), "--dry-run", "-o", str(tmp / "out")],
                 ["eval", "--predictions", str(p), "--metric", metric]):
        with no_hang("cli"):
            result = runner.invoke(app, args)
        assert result.exit_code in (0, 1, 2), (args, result.output, result.exception)
        assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
        assert "Traceback" not in result.output
        if result.exit_code:
            errors = [line for line in result.output.splitlines() if line.startswith("error:")]
            assert errors, result.output


# --------------------------------------------------------------------------------------------- the long run

@pytest.mark.slow
def test_long_run():
    """`-m slow`: this module's fuzz tests again in a fresh pytest, with SLOW examples each and new random
    inputs every time (LLMCTL_FUZZ_EXAMPLES), so that a long run explores beyond the fixed default cases."""
    import os
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider", "-m", "not slow",
                           "-k", "not through_the_cli"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "LLMCTL_FUZZ_EXAMPLES": str(SLOW)})
    cases = [line for line in proc.stdout.splitlines() if line.startswith("fuzz: ")]
    print(cases[-1] if cases else "fuzz: no count")
    assert proc.returncode == 0, proc.stdout[-6000:]
