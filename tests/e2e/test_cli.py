"""The CLI surface: help, dry runs, and one-line errors with non-zero exit codes for bad input."""

import json
import subprocess
import sys

import pytest

from conftest import ROOT, cli


def last_line(text: str) -> str:
    """The error line; progress bars of earlier steps may stand above it on stderr."""
    return text.strip().splitlines()[-1]

TINY = "recipes/tiny/pretrain.toml"


def test_help_lists_commands_without_importing_torch():
    code = ("import sys; from typer.testing import CliRunner; from llmctl.cli import app; "
            "r = CliRunner().invoke(app, ['--help']); print(r.output); "
            "heavy = [m for m in ('torch', 'transformers', 'datasets', 'accelerate') if m in sys.modules]; "
            "assert not heavy, heavy")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    for command in ("preprocess", "pretrain", "finetune", "eval", "summarize"):
        assert command in proc.stdout


@pytest.mark.parametrize("command", ["preprocess", "pretrain", "finetune", "eval", "summarize"])
def test_each_command_help_shows_an_example(command):
    proc = cli(command, "--help", check=True)
    assert "Example" in proc.stdout and f"llmctl {command}" in proc.stdout


def test_dry_run_of_gpt2_124m_plans_the_real_shape(tmp_path):
    proc = cli("pretrain", "recipes/gpt2-124m.toml", "--dry-run", "--output-dir", str(tmp_path / "r"), check=True)
    # GPT-2 small with tied embeddings, 50,257 tokens and 1,024 positions.
    assert "124,439,808" in proc.stdout
    assert "491,520" in proc.stdout  # tokens per optimizer step: 480 x 1024
    assert not (tmp_path / "r").exists()  # a dry run writes nothing


def test_dry_run_of_preprocess_reports_cache_state(tmp_path):
    proc = cli("preprocess", TINY, "--dry-run", "--output-dir", str(tmp_path / "r"), check=True)
    assert "miss: will preprocess" in proc.stdout and not (tmp_path / "r").exists()


def test_unknown_key_exits_2_with_suggestion():
    proc = cli("pretrain", TINY, "--set", "train.max_step=5", "--dry-run")
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {TINY}: unknown key 'train.max_step' (did you mean 'train.max_steps'?)"
    assert "Traceback" not in proc.stderr


def test_zero_where_positive_needed_exits_2():
    proc = cli("pretrain", TINY, "--set", "train.micro_batch_size=0", "--dry-run")
    assert proc.returncode == 2
    assert f"error: {TINY}: train.micro_batch_size: input should be greater than 0, got 0" in proc.stderr


def test_missing_data_file(tmp_path):
    proc = cli("preprocess", TINY, "--set", 'data.train_files=["nope/missing.txt"]', "-o", str(tmp_path / "r"))
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: nope/missing.txt: data file not found"


def test_malformed_jsonl_line(tmp_path):
    bad = tmp_path / "c.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": "also fine"}\n{"text": oops}\n', encoding="utf-8")
    proc = cli("preprocess", TINY, "--set", f'data.train_files=["{bad}"]', "-o", str(tmp_path / "r"))
    assert proc.returncode == 1
    assert last_line(proc.stderr) == f"error: {bad}:3: invalid JSON: Expecting value (column 10)"
    assert not (tmp_path / "r" / "data").exists()


def test_missing_column(tmp_path):
    bad = tmp_path / "c.jsonl"
    bad.write_text('{"body": "x"}\n', encoding="utf-8")
    proc = cli("preprocess", TINY, "--set", f'data.train_files=["{bad}"]', "-o", str(tmp_path / "r"))
    assert proc.returncode == 1
    assert last_line(proc.stderr) == f"error: {bad}:1: no text column 'text' (columns: 'body')"


def test_empty_corpus(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    proc = cli("preprocess", TINY, "--set", f'data.train_files=["{empty}"]', "-o", str(tmp_path / "r"))
    assert proc.returncode == 1
    assert last_line(proc.stderr) == f"error: {empty}: the corpus is empty (no text documents)"


def test_missing_hub_model_offline_is_one_line(tmp_path):
    proc = cli("eval", "--model", "no-such-org/no-such-model", "--data", str(tmp_path))
    assert proc.returncode == 1
    assert proc.stderr.strip() == ("error: no-such-org/no-such-model: cannot load model: no such local directory, "
                                   "and the hub is offline (HF_HUB_OFFLINE=1)")


def test_resume_and_overwrite_exclude_each_other(tmp_path):
    proc = cli("pretrain", TINY, "-o", str(tmp_path / "r"), "--resume", "--overwrite")
    assert proc.returncode == 2 and proc.stderr.strip() == "error: --resume and --overwrite exclude each other"


def test_resume_refuses_a_changed_model(tmp_path):
    run = tmp_path / "r"
    cli("preprocess", TINY, "-o", str(run), check=True)  # a real run directory: marked, resolved recipe.toml
    proc = cli("pretrain", TINY, "-o", str(run), "--resume", "--set", "model.config.hidden_size=32")
    assert proc.returncode == 1
    assert "cannot resume: the recipe changed model.config.hidden_size " in proc.stderr, proc.stderr
