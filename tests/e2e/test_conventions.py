"""The conventions users know from other tools: --version, help that shows defaults, exit codes (2 usage, 1 a
failed run, 130/143 interrupts), --quiet, no third-party noise in normal output, experiment trackers."""

from __future__ import annotations

import json
import re

import pytest

from conftest import ROOT, cli

TINY = "recipes/tiny/pretrain.toml"


def test_version():
    from importlib.metadata import version

    proc = cli("--version", check=True)
    assert proc.stdout.strip() == f"llmctl {version('llmctl')}"


def test_help_shows_every_default():
    out = " ".join(cli("eval", "--help", check=True).stdout.replace("│", " ").split())
    for default in ("[default: the task's]", "[default: the latest run's", "[default: the run's validation"):
        assert default in out, default


# The README's exit-code table, row by row: (arguments, exit code, what stderr says).
EXIT_CODES = [
    (["--version"], 0, None),
    (["pretrain", TINY, "--bogus"], 2, "No such option"),
    (["pretrain", TINY, "--resume", "--overwrite"], 2, "--resume and --overwrite exclude each other"),
    (["pretrain", TINY, "--set", "train.lrr=1", "--dry-run"], 2, "unknown key 'train.lrr'"),
    (["pretrain", "no-such-recipe"], 2, "no shipped recipe called 'no-such-recipe'"),
    (["eval", "--task", "foo"], 2, "Invalid value for '--task'"),
    (["summarize", "--format", "xml", "-"], 2, "Invalid value for '--format'"),
    (["finetune"], 2, "give a recipe file or --task"),
    (["-q", "-v", "recipes"], 2, "--quiet and --verbose exclude each other"),
    (["eval", "--predictions", "p.jsonl"], 2, "--predictions needs at least one --metric"),
    (["pretrain", TINY, "--data", "missing.txt"], 1, "missing.txt: data file not found"),
    (["eval", "--model", "no/such/model", "--metric", "rouge"], 1, "no/such/model"),
    (["recipes", "show", "nothing"], 1, "no shipped recipe called 'nothing'"),
]


@pytest.mark.parametrize("args,code,says", EXIT_CODES, ids=[" ".join(a) for a, _, _ in EXIT_CODES])
def test_exit_codes(args, code, says, tmp_path):
    proc = cli(*args, "-o", str(tmp_path / "r")) if args[0] == "pretrain" and "--bogus" not in args else cli(*args)
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    if says is not None:
        assert says in proc.stderr, proc.stderr


# Marks of a third-party warning or progress bar in llmctl's normal output.
NOISE = re.compile(r"[Ww]arning|warn\(|it/s\]|s/it\]|\d+%\|| examples/s|Loading weights|Writing model shards|"
                   r"Saving the dataset|DistributedType|loss_type|FutureWarning|UserWarning")


def _no_noise(proc) -> None:
    for line in (proc.stdout + proc.stderr).splitlines():
        assert not NOISE.search(line), line


def test_normal_output_has_no_third_party_noise_and_quiet_prints_only_results(tmp_path):
    """The demo's commands on the tiny preset, then a fine-tune and its eval: llmctl's own lines only."""
    run = tmp_path / "pre"
    _no_noise(cli("preprocess", TINY, "-o", str(run), check=True))
    trained = cli("pretrain", TINY, "-o", str(run), "--set", "train.max_steps=6", "--set", "train.log_every=3",
                  check=True)
    _no_noise(trained)
    assert "step 3: loss" in trained.stdout
    _no_noise(cli("eval", "--metric", "perplexity", "--model", str(run / "final"), "--data",
                  str(run / "data" / "validation"), check=True))
    ft = tmp_path / "cls"
    tuned = cli("finetune", "recipes/tiny/classification.toml", "-o", str(ft), "--set", "train.max_steps=4",
                "--set", "train.eval_every=2", check=True)
    _no_noise(tuned)
    # Piped output is not wrapped at 80 columns: this line is longer than that and stays whole.
    assert "finetune: training a byte-level BPE tokenizer (vocab 600) on 2,910 training examples" in tuned.stdout
    _no_noise(cli("eval", "--model", str(ft / "final"), check=True))

    quiet = cli("-q", "pretrain", TINY, "-o", str(tmp_path / "q"), "--set", "train.max_steps=4",
                "--set", "train.log_every=2", check=True)
    assert "step 2" not in quiet.stdout and "preprocess:" not in quiet.stdout
    assert "val_perplexity" in quiet.stdout  # the results table


def test_tensorboard_gets_every_logged_value(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "tb"
    cli("pretrain", TINY, "-o", str(run), "--set", "train.max_steps=6", "--set", "train.log_every=2",
        "--set", "train.eval_every=3", "--set", 'train.report_to=["tensorboard"]', check=True)
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    (events,) = [p.parent for p in (run / "tracking").rglob("events.out.tfevents.*") if p.parent.parent.name == "tracking"]
    acc = EventAccumulator(str(events))
    acc.Reload()
    for key in ("loss", "lr", "val_loss", "val_perplexity"):
        logged = [(r["step"], r[key]) for r in log if key in r]
        assert logged, key
        got = [(e.step, e.value) for e in acc.Scalars(key)]
        assert [s for s, _ in got] == [s for s, _ in logged]
        assert [v for _, v in got] == pytest.approx([v for _, v in logged], rel=1e-6)


def test_a_missing_tracker_package_is_one_line(tmp_path):
    import importlib.util

    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    proc = cli("pretrain", TINY, "-o", str(tmp_path / "r"), "--set", 'train.report_to=["wandb"]')
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == ("error: train.report_to: wandb needs the 'wandb' package, which "
                                                    "is not installed")
