"""`llmctl runs`: the listing of run directories and `--diff A B`, on run directories built by hand (and one real
tiny run, to keep the listing in step with what pretraining writes)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmctl import runs, runs_cli
from llmctl.cli import app

from conftest import cli

RECIPE = """\
name = "{name}"
{task_line}seed = 7

[model]
arch = "llama"
config = {{ hidden_size = 64 }}

[data]
train_files = ["corpus.txt"]

[train]
max_steps = {max_steps}
lr = {lr}
"""


def make_run(base: Path, name: str, *, task: str | None = None, max_steps: int = 60, lr: float = 0.001,
             log: list[dict] | None = None, checkpoints: tuple[int, ...] = (), partial_checkpoint: int | None = None,
             results: dict | None = None, data: bool = False, extra_recipe: str = "", mtime: float | None = None):
    root = base / name
    root.mkdir(parents=True)
    task_line = f'task = "{task}"\n' if task else ""
    (root / "recipe.toml").write_text(RECIPE.format(name=name, task_line=task_line, max_steps=max_steps, lr=lr)
                                      + extra_recipe, encoding="utf-8")
    if data:
        (root / "data").mkdir()
        (root / "data" / "meta.json").write_text("{}", encoding="utf-8")
    if log is not None:
        (root / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log), encoding="utf-8")
    for step in checkpoints:
        (root / "checkpoints" / f"step-{step}").mkdir(parents=True)
        (root / "checkpoints" / f"step-{step}" / "trainer_state.json").write_text("{}", encoding="utf-8")
    if partial_checkpoint is not None:  # no trainer_state.json: not a complete checkpoint
        (root / "checkpoints" / f"step-{partial_checkpoint}").mkdir(parents=True)
    if results is not None:
        (root / "results.json").write_text(json.dumps(results), encoding="utf-8")
    if mtime is not None:
        touch_all(root, mtime)
    return root


def touch_all(root: Path, mtime: float) -> None:
    for p in [root, *root.rglob("*")]:
        os.utime(p, (mtime, mtime))


def steps(*numbers: int, elapsed_per_step: float = 1.5) -> list[dict]:
    return [{"step": 0, "val_loss": 6.0}] + [
        {"step": n, "loss": 5.0 - n / 100, "elapsed": round(n * elapsed_per_step, 2)} for n in numbers]


PRETRAIN_RESULTS = {"task": "causal_lm", "steps": 60, "val_perplexity": 123.456, "val_loss": 4.8159,
                    "wall_seconds": 75.2, "train_seconds": 60.0}
FINETUNE_RESULTS = {"task": "classification", "steps": 40, "best_metric": "accuracy", "best_step": 30,
                    "metrics": {"accuracy.accuracy": 0.8125, "f1.f1": 0.8}, "wall_seconds": 3725.0}


def invoke(*args: str):
    result = CliRunner().invoke(app, ["runs", *args], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    return result


def listing(base: Path) -> dict[str, list[str]]:
    """The table's rows by run name, split into cells (no cell in these tests holds two spaces)."""
    lines = invoke("--root", str(base)).output.splitlines()
    assert lines[0].split() == ["name", "task", "status", "steps", "best", "metric", "wall", "time", "path"]
    return {cells[0]: cells for cells in ([c.strip() for c in line.split("  ") if c.strip()] for line in lines[1:])}


def as_json(base: Path) -> list[dict]:
    return json.loads(invoke("--root", str(base), "--json").output)


# ------------------------------------------------------------------------------------------------------- listing


def test_every_status(tmp_path):
    make_run(tmp_path, "done", log=steps(30, 60), checkpoints=(60,), results=PRETRAIN_RESULTS, data=True)
    make_run(tmp_path, "tuned", task="classification", max_steps=60, log=steps(20, 40), checkpoints=(40,),
             results=FINETUNE_RESULTS)
    make_run(tmp_path, "cut", log=steps(10, 20, 30, 40, 45), checkpoints=(20, 40), partial_checkpoint=60)
    make_run(tmp_path, "early", log=steps(5, 10), data=True)
    make_run(tmp_path, "prep", data=True)
    make_run(tmp_path, "bare")
    live = make_run(tmp_path, "live", log=steps(10), checkpoints=(10,))
    (tmp_path / "not-a-run").mkdir()  # neither recipe.toml nor log.jsonl
    (tmp_path / "notes.txt").write_text("x", encoding="utf-8")

    with runs.RunLock(runs.Run(live)):  # lock_holder sees this process's lock as another's
        rows = listing(tmp_path)
    assert set(rows) == {"done", "tuned", "cut", "early", "prep", "bare", "live"}
    assert rows["done"] == ["done", "causal_lm", "finished", "60/60", "val_perplexity=123.46", "1 min 15 s",
                            str(tmp_path / "done")]
    assert rows["tuned"] == ["tuned", "classification", "finished", "40/60", "accuracy=0.8125", "1 h 2 min",
                             str(tmp_path / "tuned")]
    # Interrupted: at the latest complete checkpoint (where --resume continues), not the half-written step-60.
    assert rows["cut"][2:6] == ["interrupted at step 40", "45/60", "-", "1 min 8 s"]
    assert rows["early"][2:6] == ["interrupted at step 10", "10/60", "-", "15 s"]  # no checkpoint: the log's step
    assert rows["prep"][2:6] == ["prepared", "-/60", "-", "-"]
    assert rows["bare"][2:6] == ["new", "-/60", "-", "-"]
    assert rows["live"][2:4] == [f"running (pid {os.getpid()})", "10/60"]
    # Released: the same run reads as interrupted.
    assert listing(tmp_path)["live"][2] == "interrupted at step 10"


def test_json_fields_are_raw_values(tmp_path):
    make_run(tmp_path, "tuned", task="classification", log=steps(20, 40), checkpoints=(40,),
             results=FINETUNE_RESULTS, mtime=1_700_000_000)
    make_run(tmp_path, "cut", log=steps(10, 20), checkpoints=(10,), mtime=1_700_000_100)
    out = as_json(tmp_path)
    assert [r["name"] for r in out] == ["cut", "tuned"]
    cut, tuned = out
    assert set(cut) == {"name", "task", "status", "pid", "step", "max_steps", "checkpoint_step", "best_metric",
                        "best_value", "wall_seconds", "path", "modified", "unreadable"}
    assert cut == {**cut, "task": "causal_lm", "status": "interrupted", "pid": None, "step": 20, "max_steps": 60,
                   "checkpoint_step": 10, "best_metric": None, "best_value": None, "wall_seconds": 30.0,
                   "path": str(tmp_path / "cut"), "unreadable": []}
    assert tuned == {**tuned, "task": "classification", "status": "finished", "step": 40, "max_steps": 60,
                     "best_metric": "accuracy", "best_value": 0.8125, "wall_seconds": 3725.0}
    with runs.RunLock(runs.Run(tmp_path / "cut")):
        assert as_json(tmp_path)[0]["status"] == "running" and as_json(tmp_path)[0]["pid"] == os.getpid()


def test_task_comes_from_results_then_recipe_then_the_default(tmp_path):
    make_run(tmp_path, "a", task="summarization", log=steps(5))
    make_run(tmp_path, "b", log=steps(5))
    make_run(tmp_path, "c", task="summarization", results={**FINETUNE_RESULTS, "task": "translation"})
    assert {r["name"]: r["task"] for r in as_json(tmp_path)} == {"a": "summarization", "b": "causal_lm",
                                                                 "c": "translation"}


def test_sorted_newest_first(tmp_path):
    make_run(tmp_path, "old", log=steps(5), mtime=1_600_000_000)
    make_run(tmp_path, "new", log=steps(5), mtime=1_700_000_000)
    make_run(tmp_path, "mid", log=steps(5), mtime=1_650_000_000)
    assert [r["name"] for r in as_json(tmp_path)] == ["new", "mid", "old"]
    assert list(listing(tmp_path)) == ["new", "mid", "old"]
    # A run that logs another step moves to the top.
    log = tmp_path / "old" / "log.jsonl"
    log.write_text(log.read_text(encoding="utf-8") + json.dumps({"step": 10}) + "\n", encoding="utf-8")
    os.utime(log, (1_750_000_000, 1_750_000_000))
    assert [r["name"] for r in as_json(tmp_path)] == ["old", "new", "mid"]


def test_broken_files_show_a_question_mark(tmp_path):
    broken = make_run(tmp_path, "broken-results", log=steps(10), results={})
    (broken / "results.json").write_text('{"task": "causal_lm", "ste', encoding="utf-8")
    bad_recipe = make_run(tmp_path, "broken-recipe", log=steps(10, 20))
    (bad_recipe / "recipe.toml").write_text("[train\nmax_steps = ", encoding="utf-8")
    torn = make_run(tmp_path, "torn-log", log=steps(10, 20))
    with (torn / "log.jsonl").open("a", encoding="utf-8") as f:
        f.write('{"step": 30, "lo')  # a killed process's last line
    odd = make_run(tmp_path, "odd-results", results={"steps": "many", "metrics": [], "best_metric": "f1"})
    (make_run(tmp_path, "list-results") / "results.json").write_text("[1, 2]", encoding="utf-8")
    (tmp_path / "undecodable").mkdir()
    (tmp_path / "undecodable" / "recipe.toml").write_bytes(b"\xff\xfe name = 1")

    rows = listing(tmp_path)
    assert rows["broken-results"][1:6] == ["causal_lm", "finished", "?/60", "?", "?"]
    assert rows["broken-recipe"][1:4] == ["?", "interrupted at step 20", "20/?"]
    assert rows["torn-log"][2:4] == ["interrupted at step 20", "20/60"]
    assert rows["odd-results"][2:6] == ["finished", "?/60", "f1=?", "?"]
    assert rows["undecodable"][1:3] == ["?", "new"]
    assert rows["list-results"][2:6] == ["finished", "?/60", "?", "?"]
    by_name = {r["name"]: r for r in as_json(tmp_path)}
    assert by_name["broken-results"]["unreadable"] == ["results.json"]
    assert by_name["broken-results"]["step"] is None and by_name["broken-results"]["best_value"] is None
    assert by_name["broken-recipe"]["unreadable"] == ["recipe.toml"] and by_name["broken-recipe"]["task"] is None
    assert odd.exists()


@pytest.mark.parametrize("make_root", [lambda p: p, lambda p: p / "missing"], ids=["empty", "missing"])
def test_no_runs(tmp_path, make_root):
    base = make_root(tmp_path)
    assert invoke("--root", str(base)).output == f"no runs under {base}\n"
    assert json.loads(invoke("--root", str(base), "--json").output) == []


def test_default_root_is_runs_root(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMCTL_HOME", str(tmp_path))
    make_run(tmp_path / "runs", "home-run", log=steps(5))
    assert [r["name"] for r in json.loads(invoke("--json").output)] == ["home-run"]


@pytest.mark.parametrize("seconds, text", [(4.24, "4.2 s"), (42, "42 s"), (59.6, "1 min 0 s"), (75.2, "1 min 15 s"),
                                           (3725, "1 h 2 min"), (90061, "25 h 1 min"), (None, "-")])
def test_format_seconds(seconds, text):
    assert runs_cli.format_seconds(seconds) == text


# ---------------------------------------------------------------------------------------------------------- diff


def env(torch: str = "2.4.1", device: str = "cpu", data: str = "abc") -> dict:
    return {"llmctl": "0.1.0", "packages": {"torch": torch, "transformers": "4.46.0"}, "device": device,
            "data": {"train": data}}


def test_diff_shows_recipe_environment_and_results(tmp_path):
    make_run(tmp_path, "a", lr=0.001, results={**PRETRAIN_RESULTS, "environment": env()})
    make_run(tmp_path, "b", lr=0.0003, extra_recipe="\n[lora]\nenabled = true\n",
             results={**PRETRAIN_RESULTS, "val_perplexity": 99.5, "wall_seconds": 80.0,
                      "environment": env(torch="2.5.0", device="cuda: NVIDIA H100", data="def")})
    lines = invoke("--root", str(tmp_path), "--diff", "a", "b").output.splitlines()
    assert lines == [
        f"A: {tmp_path / 'a'}",
        f"B: {tmp_path / 'b'}",
        "recipe:",
        "  lora.enabled: (missing) -> true",
        '  name: "a" -> "b"',
        "  train.lr: 0.001 -> 0.0003",
        "environment:",
        '  data.train: "abc" -> "def"',
        '  device: "cpu" -> "cuda: NVIDIA H100"',
        '  packages.torch: "2.4.1" -> "2.5.0"',
        "results:",
        "  val_perplexity: 123.456 -> 99.5",  # wall time differs on every run: not shown
    ]


def test_diff_of_equal_runs_by_name_and_path(tmp_path, monkeypatch):
    make_run(tmp_path, "a", results={**FINETUNE_RESULTS, "environment": env(), "wall_seconds": 1.0})
    other = make_run(tmp_path / "elsewhere", "a", results={**FINETUNE_RESULTS, "environment": env()})
    out = invoke("--root", str(tmp_path), "--diff", "a", str(other)).output.splitlines()
    assert out[1:] == [f"B: {other}", "no differences"]
    monkeypatch.chdir(tmp_path / "elsewhere")  # paths relative to the working directory
    out = invoke("--root", str(tmp_path / "no-such-root"), "--diff", "a", "a").output.splitlines()
    assert out == ["A: a", "B: a", "no differences"]


def test_diff_of_metrics_and_an_unfinished_run(tmp_path):
    make_run(tmp_path, "a", task="classification", results=FINETUNE_RESULTS)
    make_run(tmp_path, "b", task="classification",
             results={**FINETUNE_RESULTS, "metrics": {"accuracy.accuracy": 0.75, "f1.f1": 0.8}, "best_step": 40})
    make_run(tmp_path, "c", task="classification", log=steps(10))
    lines = invoke("--root", str(tmp_path), "--diff", "a", "b").output.splitlines()
    assert lines[2:] == ['recipe:', '  name: "a" -> "b"', "results:", "  best_step: 30 -> 40",
                         "  metrics.accuracy.accuracy: 0.8125 -> 0.75"]
    lines = invoke("--root", str(tmp_path), "--diff", "a", "c").output.splitlines()
    assert lines[2:] == ['recipe:', '  name: "a" -> "c"',
                         "note: c has no results.json (unfinished run), so it is not compared"]


def test_diff_of_an_unknown_run_is_one_error_line(tmp_path):
    make_run(tmp_path, "a", log=steps(5))
    result = CliRunner().invoke(app, ["runs", "--root", str(tmp_path), "--diff", "a", "nope"])
    assert result.exit_code == 1
    assert "error: nope: no run of that name under" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------------------------ real run


def test_a_real_run_is_listed(tmp_path, small_corpus):
    base = tmp_path / "runs"
    cli("pretrain", "recipes/tiny/pretrain.toml", "-o", str(base / "tiny"), "--set", "train.max_steps=10",
        "--data", str(small_corpus), check=True)
    results = json.loads((base / "tiny" / "results.json").read_text(encoding="utf-8"))
    (row,) = as_json(base)
    assert row == {**row, "name": "tiny", "task": "causal_lm", "status": "finished", "pid": None, "step": 10,
                   "max_steps": 10, "checkpoint_step": 10, "best_metric": "val_perplexity",
                   "best_value": results["val_perplexity"], "wall_seconds": results["wall_seconds"],
                   "unreadable": []}
    assert listing(base)["tiny"][2:4] == ["finished", "10/10"]
    assert invoke("--root", str(base), "--diff", "tiny", "tiny").output.splitlines()[-1] == "no differences"
