"""The four tasks through the real CLI on tiny presets, across model families: finetune -> eval."""

import json
import math

import pytest

from conftest import cli


def results(run):
    return json.loads((run / "results.json").read_text())


def train_losses(run):
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


@pytest.fixture(scope="module")
def pretrained(small_corpus, tmp_path_factory):
    """A tiny causal LM from `llmctl pretrain`: the lifecycle's start."""
    run = tmp_path_factory.mktemp("pre") / "run"
    cli("pretrain", "recipes/tiny/pretrain.toml", "-o", str(run), "--set", f'data.train_files=["{small_corpus}"]',
        "--set", "data.block_size=128", "--set", "train.max_steps=10", check=True)
    return run / "final"


def check_run(run, metric_keys):
    res = results(run)
    for key in metric_keys:
        assert key in res["metrics"], (key, sorted(res["metrics"]))
        assert math.isfinite(res["metrics"][key])
    losses = train_losses(run)
    assert losses[-1] < losses[0], losses
    preds = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == res["validation_examples"] and {"prediction", "reference"} <= set(preds[0])
    for name in ("final/config.json", "final/tokenizer.json", "recipe.toml", "data/records/validation",
                 "data/features/train", "data/meta.json"):
        assert (run / name).exists(), name
    # Every prediction names the validation record it was made for, and they are the cached split's records.
    from llmctl.taskdata import cached_validation

    _, where = cached_validation(run)
    assert [p["where"] for p in preds] == where
    return res


def test_summarization_encoder_decoder_then_eval_and_summarize(tmp_path):
    run = tmp_path / "runs" / "sum"
    cli("finetune", "recipes/tiny/summarization.toml", "-o", str(run), check=True)
    res = check_run(run, ["rouge.rouge1", "rouge.rouge2", "rouge.rougeL", "rouge.rougeLsum"])
    assert res["family"] == "seq2seq" and res["max_new_tokens"] > 20  # derived, not generate's 20
    assert res["baseline_metrics"]["rouge.rougeL"] > 0

    # `llmctl eval --metric rouge` with nothing else: the latest run under ./runs on its validation split.
    out = tmp_path / "r.json"
    cli("eval", "--metric", "rouge", "--output", str(out), cwd=tmp_path, check=True)
    again = json.loads(out.read_text())
    assert again["model"] == "runs/sum/final"
    for key in ("rouge.rouge1", "rouge.rougeL"):
        assert again["metrics"][key] == pytest.approx(res["metrics"][key], abs=1e-9)
    assert again["metrics"]["rouge.tokenizer"] in ("default", "char")
    assert (tmp_path / "r.predictions.jsonl").exists()

    # summarize: files and stdin; a rerun skips what is done.
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(3):
        (docs / f"d{i}.txt").write_text(f"Ulla Brenk opened bakery number {i} in Varnhold on 3 May.\n",
                                        encoding="utf-8")
    summaries = tmp_path / "s.jsonl"
    first = cli("summarize", "--model", str(run / "final"), str(docs), "--output", str(summaries), check=True)
    assert "3 new, 0 already" in first.stdout
    rows = [json.loads(line) for line in summaries.read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == ["d0.txt", "d1.txt", "d2.txt"]
    assert {"id", "source", "summary"} <= set(rows[0])
    again = cli("summarize", "--model", str(run / "final"), str(docs), "--output", str(summaries), check=True)
    assert "0 new, 3 already" in again.stdout
    empty = cli("summarize", "--model", str(run / "final"), str(tmp_path / "nothing-here.txt"))
    assert empty.returncode == 1 and "nothing-here.txt" in empty.stderr


def test_summarization_on_the_pretrained_causal_lm(pretrained, tmp_path):
    run = tmp_path / "sum-causal"
    cli("finetune", "--task", "summarization", "--model", str(pretrained), "-o", str(run),
        "--set", "train.max_steps=8", "--set", "train.batch_size=8", "--set", "train.micro_batch_size=8",
        "--set", "train.eval_every=4", "--set", "eval.max_samples=4", "--set", 'data.validation_files=[]',
        "--set", "data.validation_fraction=0.01", "--set", "train.log_every=4", "--set", 'train.packing="auto"',
        check=True)
    res = check_run(run, ["rouge.rougeL"])
    assert res["family"] == "causal"
    # packing = "auto" found that this model keeps packed examples apart, so the rows were packed.
    assert res["batches"]["packing"] is True and res["batches"]["group_by_length"] is False
    assert res["batches"]["padding_efficiency"] >= res["batches"]["random_order_padding_efficiency"]


def test_translation_marian(tmp_path):
    run = tmp_path / "tr"
    cli("finetune", "recipes/tiny/translation.toml", "-o", str(run), check=True)
    res = check_run(run, ["sacrebleu.score", "chrf.score"])
    assert res["family"] == "seq2seq"


def test_classification_encoder_then_eval_and_predictions_file(tmp_path):
    run = tmp_path / "cls"
    cli("finetune", "recipes/tiny/classification.toml", "-o", str(run), check=True)
    res = check_run(run, ["accuracy.accuracy", "f1.f1"])
    config = json.loads((run / "final" / "config.json").read_text())
    assert set(config["label2id"]) == {"negative", "neutral", "positive"}
    assert config["llmctl"]["task"] == "classification"
    # A data file instead of the run's validation split: the run's column mapping applies.
    on_file = tmp_path / "file.json"
    cli("eval", "--model", str(run / "final"), "--data", "data/classification/validation.jsonl",
        "--metric", "accuracy", "--output", str(on_file), check=True)
    got = json.loads(on_file.read_text())
    assert got["examples"] == 210 and 0 <= got["metrics"]["accuracy.accuracy"] <= 1

    out = tmp_path / "scored.json"
    cli("eval", "--predictions", str(run / "predictions.jsonl"), "--metric", "accuracy", "--output", str(out),
        check=True)
    assert json.loads(out.read_text())["metrics"]["accuracy.accuracy"] == pytest.approx(
        res["metrics"]["accuracy.accuracy"])


def test_classification_pairs_on_a_causal_lm(pretrained, tmp_path):
    run = tmp_path / "pair"
    cli("finetune", "--task", "classification", "--model", str(pretrained), "-o", str(run),
        "--data", "data/classification-pair/train.jsonl",
        "--set", "data.text_column=sentence1", "--set", "data.text_pair_column=sentence2",
        "--set", 'data.validation_files=["data/classification-pair/validation.jsonl"]',
        "--set", "train.max_steps=8", "--set", "train.batch_size=16", "--set", "train.micro_batch_size=16",
        "--set", "train.eval_every=4", "--set", "train.log_every=4", "--set", "train.lr=1e-3", check=True)
    res = check_run(run, ["accuracy.accuracy"])
    assert res["family"] == "causal"


def test_qa_with_lora_on_the_pretrained_minilm(tmp_path):
    run = tmp_path / "qa"
    cli("finetune", "--task", "qa", "-o", str(run), "--set", "lora.enabled=true", "--set", "train.max_steps=12",
        "--set", "train.batch_size=8", "--set", "train.micro_batch_size=8", "--set", "train.eval_every=6",
        "--set", "train.log_every=4", "--set", "train.lr=3e-3", "--set", "train.warmup_steps=2",
        "--set", "data.max_source_length=128",
        "--set", 'data.validation_files=[]', "--set", "data.validation_fraction=0.01", check=True)
    res = check_run(run, ["squad_v2.exact", "squad_v2.f1", "squad_v2.HasAns_f1", "squad_v2.NoAns_f1"])
    assert res["lora"] and res["trainable_parameters"] < res["parameters"] / 10
    assert (run / "adapter" / "adapter_config.json").exists()
    assert not (run / "final" / "adapter_config.json").exists()  # final/ is the merged plain model


def test_qa_encoder_from_scratch(tmp_path):
    run = tmp_path / "qa2"
    cli("finetune", "recipes/tiny/qa.toml", "-o", str(run), check=True)
    check_run(run, ["squad_v2.f1"])


# ------------------------------------------------------------------------------------------------ bad input


def test_multiple_choice_beats_its_baseline_then_eval(tmp_path):
    """The fifth task, through the same CLI: SWAG-style records, a multiple-choice head on the pretrained
    encoder, accuracy above always picking the most frequent position (chance is 0.25)."""
    run = tmp_path / "runs" / "mc"
    cli("finetune", "recipes/tiny/multiple_choice.toml", "-o", str(run), check=True)
    res = check_run(run, ["accuracy.accuracy"])
    assert res["family"] == "encoder"
    assert res["metrics"]["accuracy.accuracy"] > res["baseline_metrics"]["accuracy.accuracy"] + 0.1, res
    out = tmp_path / "mc.json"
    cli("eval", "--metric", "accuracy", "--output", str(out), cwd=tmp_path, check=True)
    again = json.loads(out.read_text())
    assert again["model"] == "runs/mc/final" and again["task"] == "multiple_choice"
    assert again["metrics"]["accuracy.accuracy"] == pytest.approx(res["metrics"]["accuracy.accuracy"], abs=1e-9)


def test_translation_with_an_encoder_only_model_is_refused(tmp_path):
    proc = cli("finetune", "--task", "translation", "--set", "model.arch=bert", "-o", str(tmp_path / "x"))
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: model.arch 'bert': bert is encoder-only and cannot do translation "
        "(needs encoder-decoder or decoder-only)")


def test_missing_target_column_names_file_row_and_column(tmp_path):
    bad = tmp_path / "s.jsonl"
    bad.write_text('{"document": "a b c", "summary": "a"}\n{"document": "d e f"}\n', encoding="utf-8")
    proc = cli("finetune", "recipes/tiny/summarization.toml", "--data", str(bad), "-o", str(tmp_path / "x"))
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == f"error: {bad}:2: no target column 'summary' (columns: 'document')"


def test_qa_answers_not_in_context(tmp_path):
    bad = tmp_path / "q.jsonl"
    rows = [{"id": str(i), "question": "Who?", "context": "Ann met Bob.", "answers": {"text": ["Zed"],
             "answer_start": [0]}} for i in range(3)]
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    proc = cli("finetune", "recipes/tiny/qa.toml", "--data", str(bad), "-o", str(tmp_path / "x"))
    assert proc.returncode == 1
    assert "no answer is in its context" in proc.stderr.strip().splitlines()[-1]


def test_label_unseen_in_training(tmp_path):
    train = tmp_path / "t.jsonl"
    val = tmp_path / "v.jsonl"
    train.write_text("".join(json.dumps({"text": f"s {i}", "label": "a" if i % 2 else "b"}) + "\n"
                             for i in range(40)), encoding="utf-8")
    val.write_text(json.dumps({"text": "x", "label": "a"}) + "\n" + json.dumps({"text": "y", "label": "c"}) + "\n",
                   encoding="utf-8")
    proc = cli("finetune", "recipes/tiny/classification.toml", "--data", str(train), "-o", str(tmp_path / "x"),
               "--set", f'data.validation_files=["{val}"]')
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: {val}:2: label 'c' was not seen in training (known labels: 'a', 'b')")


def test_unknown_metric_lists_the_valid_ones(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text('{"prediction": "a", "reference": "a"}\n', encoding="utf-8")
    proc = cli("eval", "--predictions", str(p), "--metric", "rogue")
    assert proc.returncode == 1
    assert proc.stderr.strip() == ("error: unknown metric 'rogue' (did you mean 'rouge'?); valid metrics: accuracy, "
                                   "bleu, chrf, exact_match, f1, perplexity, rouge, sacrebleu, squad, squad_v2")


def test_predictions_file_with_several_acceptable_answers(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text('{"prediction": "the Paris", "reference": ["Paris", "France"]}\n'
                 '{"prediction": "Rome", "reference": ["Milan"]}\n', encoding="utf-8")
    out = tmp_path / "o.json"
    cli("eval", "--predictions", str(p), "--metric", "squad", "--output", str(out), check=True)
    assert json.loads(out.read_text())["metrics"]["squad.exact_match"] == pytest.approx(50.0)


def test_early_stopping_keeps_the_best_checkpoint(tmp_path):
    """With a learning rate too small to change any prediction, no evaluation beats the first: patience 1
    stops at the first evaluation after step 0, and final/ is the best (initial) checkpoint."""
    run = tmp_path / "stop"
    cli("finetune", "recipes/tiny/classification.toml", "-o", str(run), "--set", "train.lr=1e-12",
        "--set", "train.min_lr=0.0", "--set", "train.eval_every=2", "--set", "eval.patience=1",
        "--set", "train.log_every=2", check=True)
    res = results(run)
    assert res["stopped_early"] and res["steps"] == 2 and res["best_step"] == 0
    assert (run / "checkpoints" / "step-2").exists()


def test_finetune_resume_continues_the_same_run(tmp_path):
    """A finished fine-tuning run continued to more steps keeps its log, best-metric state and step count."""
    run = tmp_path / "res"
    common = ["--set", "train.eval_every=10", "--set", "train.log_every=10", "--set", "train.checkpoint_every=10"]
    cli("finetune", "recipes/tiny/classification.toml", "-o", str(run), "--set", "train.max_steps=20", *common,
        check=True)
    first = results(run)
    proc = cli("finetune", "recipes/tiny/classification.toml", "-o", str(run), "--resume",
               "--set", "train.max_steps=30", *common, check=True)
    assert "resume: continuing from" in proc.stdout and "step 20 of 30" in proc.stdout
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert steps == [0, 10, 20, 30]
    again = results(run)
    assert again["steps"] == 30 and first["steps"] == 20
    assert again["best_step"] in (0, 10, 20, 30)


def test_preprocess_once_then_finetune_resume_and_eval_reuse_the_data(tmp_path):
    """`preprocess` of a fine-tuning recipe prepares what `finetune` then reuses; resume and eval reuse it too."""
    run = tmp_path / "cls"
    base = ["recipes/tiny/classification.toml", "-o", str(run), "--set", "train.eval_every=2",
            "--set", "train.checkpoint_every=2", "--set", "train.log_every=2"]
    args = [*base, "--set", "train.max_steps=4"]
    first = cli("preprocess", *args, check=True)
    assert "training examples" in first.stdout and (run / "data" / "features" / "train").is_dir()
    trained = cli("finetune", *args, check=True)
    assert "reused records, tokenizer, spec, features" in trained.stdout
    resumed = cli("finetune", *base, "--set", "train.max_steps=6", "--resume", check=True)
    assert "reused records, tokenizer, spec, features" in resumed.stdout
    scored = cli("eval", "--model", str(run / "final"), check=True)
    assert "the run's validation split, 90 examples from its cache" in scored.stdout


def test_packing_demanded_where_it_cannot_apply_is_one_line(tmp_path):
    done = cli("finetune", "recipes/tiny/classification.toml", "-o", str(tmp_path / "pk"),
               "--set", "train.packing=true")
    assert done.returncode == 1
    assert done.stderr.strip() == ("error: train.packing = true: packing is for text-to-text tasks on decoder-only "
                                   "models, not classification on bert (encoder-only); set train.packing = \"auto\" "
                                   "or false")
