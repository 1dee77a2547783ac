"""The real entry point against hostile or careless use (issue 8, parts 2, 3 and 7): llmctl writes only into
directories it made, deletes nothing it did not write, refuses a second process on the same run, cache or output
file by naming the holder's pid, takes over a lock whose holder was killed, and answers every bad input below
with one line and a non-zero exit code, never a traceback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import ROOT, cli

TINY = "recipes/tiny/pretrain.toml"


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under `root` with its content (None for a folder)."""
    return {str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes()) for p in sorted(root.rglob("*"))}


def one_line_error(proc, code: int = 1) -> str:
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


@pytest.fixture
def project(tmp_path) -> Path:
    """A user's project folder: a data/ folder, a recipe.toml of their own, notes."""
    root = tmp_path / "project"
    (root / "data" / "pretrain").mkdir(parents=True)
    (root / "data" / "pretrain" / "corpus.txt").write_text("my corpus\n\nsecond document\n", encoding="utf-8")
    (root / "data" / "generate.py").write_text("print('my generator')\n", encoding="utf-8")
    (root / "recipe.toml").write_text('name = "mine"\n', encoding="utf-8")
    (root / "notes.txt").write_text("do not lose me\n", encoding="utf-8")
    return root


# ----------------------------------------------------------------------------------- 2. marked, guarded runs


@pytest.mark.parametrize("args", [
    ["preprocess", TINY],
    ["pretrain", TINY],
    ["pretrain", TINY, "--overwrite"],
    ["pretrain", TINY, "--resume"],
    ["finetune", "recipes/tiny/classification.toml", "--overwrite"],
], ids=lambda a: " ".join(a[:1] + a[2:]))
def test_a_foreign_folder_is_refused_and_left_untouched(project, args):
    """The issue's example: `llmctl preprocess recipes/tiny/pretrain.toml -o .` in a repository deleted its data/."""
    before = snapshot(project)
    args = [str(ROOT / a) if a.startswith("recipes/") else a for a in args]
    line = one_line_error(cli(*args, "-o", ".", cwd=project))
    assert line.startswith("error: .: not an llmctl run directory and not empty (it holds data, notes.txt, "
                           "recipe.toml)")
    assert "--output-dir" in line
    assert snapshot(project) == before  # not even a lock file or a marker


def test_a_foreign_folder_that_looks_like_a_run_is_refused(tmp_path):
    """final/, checkpoints/, log.jsonl and results.json of someone else: --overwrite deletes none of them."""
    root = tmp_path / "theirs"
    for d in ("final", "checkpoints/step-5"):
        (root / d).mkdir(parents=True)
        (root / d / "weights.bin").write_bytes(b"\0" * 16)
    (root / "log.jsonl").write_text('{"step": 1}\n', encoding="utf-8")
    (root / "results.json").write_text("{}\n", encoding="utf-8")
    (root / "recipe.toml").write_text('name = "theirs"\n', encoding="utf-8")  # not one llmctl wrote
    before = snapshot(root)
    line = one_line_error(cli("pretrain", TINY, "-o", str(root), "--overwrite"))
    assert line.startswith(f"error: {root}: not an llmctl run directory and not empty")
    assert snapshot(root) == before


def test_preprocess_marks_its_output_and_a_rerun_is_accepted(tmp_path, small_corpus):
    out = tmp_path / "prep"
    cli("preprocess", TINY, "--data", str(small_corpus), "-o", str(out), check=True)
    marker = json.loads((out / ".llmctl-run.json").read_text(encoding="utf-8"))
    assert marker["kind"] == "preprocess" and "data" in marker["writes"] and marker["llmctl_version"]
    (out / "mine.txt").write_text("a user's file in a run directory\n", encoding="utf-8")
    again = cli("preprocess", TINY, "--data", str(small_corpus), "-o", str(out), check=True)
    assert "cache hit" in again.stdout
    assert (out / "mine.txt").read_text(encoding="utf-8") == "a user's file in a run directory\n"


def test_a_refused_resume_deletes_nothing(tmp_path):
    """A finished run resumed with a changed recipe: refused, and results.json (and everything else) stays."""
    from llmctl import catalog, recipe, runs

    root = tmp_path / "done"
    r = catalog.resolve_paths(recipe.load(ROOT / TINY))
    root.mkdir()
    runs.mark_run(root, "pretrain")
    (root / "recipe.toml").write_text(recipe.dumps(r), encoding="utf-8")
    runs.write_json(root / "results.json", {"task": "causal_lm", "steps": 5})
    (root / "log.jsonl").write_text('{"step": 5, "loss": 1.0}\n', encoding="utf-8")
    before = snapshot(root)
    line = one_line_error(cli("pretrain", TINY, "-o", str(root), "--resume", "--set", "data.block_size=32"))
    assert "cannot resume: the recipe changed data.block_size" in line
    after = snapshot(root)
    after.pop(".llmctl.lock", None)  # the lock file, emptied
    before.pop(".llmctl.lock", None)
    assert after == before


# ------------------------------------------------------------------------------------------------- 3. locks


def hold_lock(code: str) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, stdout=subprocess.PIPE,
                             text=True)
    assert child.stdout.readline().strip() == "locked"
    return child


def kill9(child: subprocess.Popen) -> None:
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    child.stdout.close()


def test_two_preprocess_on_one_cache(tmp_path, small_corpus):
    """A second preprocess of the same cache is refused with the holder's pid; once the holder is killed with
    SIGKILL, its lock is taken over."""
    out = tmp_path / "cache"
    child = hold_lock(f"""
        import time
        from pathlib import Path
        from llmctl import runs
        runs.mark_run(Path({str(out)!r}), "preprocess")
        with runs.RunLock(runs.Run(Path({str(out)!r}))):
            print("locked", flush=True)
            time.sleep(300)
    """)
    try:
        line = one_line_error(cli("preprocess", TINY, "--data", str(small_corpus), "-o", str(out)))
        assert line.startswith(f"error: {out}: another llmctl process (pid {child.pid} on ")
        assert not (out / "data").exists()
    finally:
        kill9(child)
    cli("preprocess", TINY, "--data", str(small_corpus), "-o", str(out), check=True)
    assert (out / "data" / "meta.json").exists()


def test_two_summarize_on_one_output(tmp_path):
    """Two summarize appending to one file would write the same ids twice: the second is refused with the pid."""
    output = tmp_path / "out" / "summaries.jsonl"
    output.parent.mkdir()
    output.write_text('{"id": "a", "source": "x", "summary": "y"}\n', encoding="utf-8")
    doc = tmp_path / "doc.txt"
    doc.write_text("A document.\n", encoding="utf-8")
    child = hold_lock(f"""
        import time
        from pathlib import Path
        from llmctl import runs
        with runs.RunLock.for_file(Path({str(output)!r})):
            print("locked", flush=True)
            time.sleep(300)
    """)
    try:
        line = one_line_error(cli("summarize", "--model", str(tmp_path / "no-model"), str(doc), "-o", str(output)))
        assert line == (f"error: {output}: another llmctl process (pid {child.pid} on {os.uname().nodename}, "
                        f"started {json.loads((output.parent / '.summaries.jsonl.llmctl.lock').read_text())['started']})"
                        " is writing to this output file; wait for it to finish or stop it")
    finally:
        kill9(child)
    # The killed holder's lock is taken over: the command gets as far as the (missing) model.
    line = one_line_error(cli("summarize", "--model", str(tmp_path / "no-model"), str(doc), "-o", str(output)))
    assert "another llmctl process" not in line and "no-model" in line
    assert output.read_text(encoding="utf-8") == '{"id": "a", "source": "x", "summary": "y"}\n'


# ------------------------------------------------------------------------------------------ 7. no tracebacks


def test_output_dir_that_is_a_file_or_cannot_be_made(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("mine\n", encoding="utf-8")
    assert one_line_error(cli("preprocess", TINY, "-o", str(afile))) == \
        f"error: {afile}: output path exists and is not a directory"
    assert one_line_error(cli("pretrain", TINY, "-o", str(afile / "sub"))).startswith(
        f"error: {afile / 'sub'}: cannot use this output directory: ")
    assert afile.read_text(encoding="utf-8") == "mine\n"


def test_eval_output_that_is_a_folder(tmp_path):
    preds = tmp_path / "p.jsonl"
    preds.write_text('{"prediction": "a b", "reference": "a b"}\n', encoding="utf-8")
    folder = tmp_path / "folder"
    folder.mkdir()
    assert one_line_error(cli("eval", "--predictions", str(preds), "--metric", "rouge", "-o", str(folder)), 2) == \
        f"error: --output {folder}: is a folder; give a file name, e.g. {folder / 'results.json'}"
    assert one_line_error(cli("eval", "--predictions", str(preds), "--metric", "rouge", "-o",
                              str(preds / "r.json")), 2) == f"error: --output {preds / 'r.json'}: {preds} is a file, not a folder"
    assert list(folder.iterdir()) == []


def test_eval_predictions_with_null_and_numeric_references(tmp_path):
    """Null was a TypeError traceback for squad; numbers are read as their text (the other cases and metrics are
    checked in-process in tests/unit/test_bad_input.py)."""
    preds = tmp_path / "p.jsonl"
    preds.write_text('{"prediction": "a", "reference": "a"}\n{"prediction": "a", "reference": null}\n',
                     encoding="utf-8")
    assert one_line_error(cli("eval", "--predictions", str(preds), "--metric", "squad")) == \
        f"error: {preds}:2: 'reference' must be text or a list of texts, got null"
    preds.write_text('{"prediction": "5", "reference": 5}\n{"prediction": 7, "reference": "7"}\n', encoding="utf-8")
    cli("eval", "--predictions", str(preds), "--metric", "squad", "-o", str(tmp_path / "r.json"), check=True)
    assert json.loads((tmp_path / "r.json").read_text())["metrics"]["squad.exact_match"] == 100.0


def test_latin1_bytes_on_summarize_stdin(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "llmctl", "summarize", "--model", str(tmp_path / "m"), "-"],
                          input="first line\ncaf\xe9 au lait\n".encode("latin-1"), capture_output=True, cwd=ROOT,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "LC_ALL": "C", "PYTHONUTF8": "0"})
    proc.stderr, proc.stdout = proc.stderr.decode(), proc.stdout.decode()
    assert one_line_error(proc) == "error: stdin:2: not valid UTF-8 text (column 4, byte 0xe9); send UTF-8 text"
