"""run_summarize on tiny saved models: every input kind, both output formats, resume, and the error messages."""

import io
import json

import pytest
import torch

from llmctl import data, generation
from llmctl import tokenizer as tok_mod
from llmctl.summarize import SummarizeError, read_inputs, run_summarize

DOCS = {
    "a.txt": "The cat sat on the mat all day.\nIt was warm.\n",
    "notes/b.md": "# Dogs\n\nA dog ran home before the rain.",
    "notes/deep/c.txt": "Ein Hund läuft durch den Park.",
    "notes/skip.json": "{}",  # not a document type: folders hold .txt and .md only
}
T5_INFO = {"task": "summarization", "source_prefix": "summarize: ", "max_new_tokens": 5, "max_source_length": 64}
GPT2_INFO = {"task": "summarization", "prompt": "Text: {source}\nTL;DR:", "max_new_tokens": 4}


def _tokenizer():
    texts = [t for t in DOCS.values()] + ["summarize: the end", "Text: x TL;DR: y"]
    return tok_mod.train_bpe(texts * 10, vocab_size=300, min_frequency=1, eos_token="<|endoftext|>",
                             pad_token="<|pad|>", show_progress=False)


def _save(model, tok, path, info):
    if info is not None:
        model.config.llmctl = info
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from transformers import GPT2Config, GPT2LMHeadModel, T5Config, T5ForConditionalGeneration

    root = tmp_path_factory.mktemp("models")
    tok = _tokenizer()
    torch.manual_seed(0)
    t5 = T5ForConditionalGeneration(T5Config(
        vocab_size=len(tok), d_model=32, d_ff=64, d_kv=16, num_layers=1, num_heads=2,
        decoder_start_token_id=tok.pad_token_id, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
    ))
    with torch.no_grad():  # larger weights than the default make the output depend on the input
        for p in t5.parameters():
            p.normal_(0, 0.5)
    gpt2_config = dict(vocab_size=len(tok), n_layer=1, n_embd=32, n_head=2, n_positions=64,
                       bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    gpt2 = GPT2LMHeadModel(GPT2Config(**gpt2_config))
    plain = GPT2LMHeadModel(GPT2Config(**gpt2_config))
    # A model that cannot end its output: every summary runs into max_new_tokens.
    endless = GPT2LMHeadModel(GPT2Config(**gpt2_config))
    endless.generation_config.suppress_tokens = [tok.eos_token_id, tok.pad_token_id]
    return {
        "t5": _save(t5, tok, root / "t5", T5_INFO),
        "gpt2": _save(gpt2, tok, root / "gpt2", GPT2_INFO),
        "plain": _save(plain, tok, root / "plain", None),
        "endless": _save(endless, tok, root / "endless", {"max_new_tokens": 3}),
    }


@pytest.fixture
def docs(tmp_path):
    for name, text in DOCS.items():
        path = tmp_path / "docs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return tmp_path / "docs"


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def expected(model_dir, sources):
    """What the generation module gives for these model inputs, with the settings stored in the model."""
    from llmctl.summarize import default_settings, load_model

    model, tok, info = load_model(model_dir)
    return generation.generate(model, tok, sources, default_settings(info)).outputs


# --------------------------------------------------------------------------------------------- task info


def test_task_info_round_trips_through_config_json(models):
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(models["t5"]).llmctl == T5_INFO
    assert json.loads(open(f"{models['gpt2']}/config.json").read())["llmctl"] == GPT2_INFO
    assert not hasattr(AutoConfig.from_pretrained(models["plain"]), "llmctl")


# ------------------------------------------------------------------------------------------------ inputs


def test_files_folder_stdin_and_datasets_become_documents(docs, tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"id": 7, "article": "first row"}\n{"article": "second row"}\n', encoding="utf-8")
    table = tmp_path / "rows.csv"
    table.write_text("key,article\nk1,a csv row\n", encoding="utf-8")
    got = read_inputs([str(docs / "a.txt"), str(docs), "-", str(rows)], text_column="article",
                      stdin=io.StringIO("  from stdin \n"))
    assert got == [
        {"id": str(docs / "a.txt"), "source": "The cat sat on the mat all day.\nIt was warm."},
        {"id": "a.txt", "source": "The cat sat on the mat all day.\nIt was warm."},
        {"id": "notes/b.md", "source": "# Dogs\n\nA dog ran home before the rain."},
        {"id": "notes/deep/c.txt", "source": "Ein Hund läuft durch den Park."},
        {"id": "stdin", "source": "from stdin"},
        {"id": "7", "source": "first row"},
        {"id": f"{rows}:2", "source": "second row"},
    ]
    assert read_inputs([str(table)], text_column="article", id_column="key") == [{"id": "k1", "source": "a csv row"}]
    # A column the user names must exist (the default "id" may be absent: ids fall back to <file>:<n>).
    with pytest.raises(SummarizeError) as err:
        read_inputs([str(table)], text_column="article", id_column="kee")
    assert str(err.value) == f"{table}: no record has the id column 'kee' (--id-column); columns: key, article"


@pytest.mark.parametrize("make, message", [
    (lambda p: [], "no inputs: give files, a folder, '-' for stdin, or a JSONL file"),
    (lambda p: [str(p / "nope.txt")], "{p}/nope.txt: no such file or folder"),
    (lambda p: [str(p / "empty")], "{p}/empty: no .txt or .md files in this folder"),
    (lambda p: [str(p / "blank.txt")], "{p}/blank.txt: empty document"),
    (lambda p: ["-"], "stdin: empty document"),
    (lambda p: [str(p / "x.pdf")], "{p}/x.pdf: unsupported input type '.pdf'; give .txt/.md files, a folder, '-' for "
                                   "stdin, or a .jsonl/.json/.csv/.tsv/.parquet file"),
    (lambda p: [str(p / "ok.txt"), str(p / "ok.txt")], "{p}/ok.txt: duplicate document id (resuming relies on "
                                                       "unique ids)"),
    (lambda p: [str(p / "dup.jsonl")], "1: duplicate document id (resuming relies on unique ids)"),
], ids=["none", "missing", "empty-folder", "empty-file", "empty-stdin", "pdf", "twice", "duplicate-id"])
def test_input_errors_are_one_line(tmp_path, make, message):
    (tmp_path / "blank.txt").write_text("  \n\n", encoding="utf-8")
    (tmp_path / "ok.txt").write_text("fine", encoding="utf-8")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "data.json").write_text("{}", encoding="utf-8")
    (tmp_path / "x.pdf").write_bytes(b"%PDF")
    (tmp_path / "dup.jsonl").write_text('{"id": 1, "text": "a"}\n{"id": 1, "text": "b"}\n', encoding="utf-8")
    with pytest.raises(SummarizeError) as info:
        read_inputs(make(tmp_path), stdin=io.StringIO(" \n"))
    assert str(info.value) == message.format(p=tmp_path)


def test_dataset_errors_name_file_and_line(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"text": "fine"}\n{"body": "no text column"}\n', encoding="utf-8")
    with pytest.raises(data.DataError) as info:
        read_inputs([str(rows)])
    assert str(info.value) == f"{rows}:2: no text column 'text' (columns: 'body')"
    rows.write_text('{"text": "fine"}\n{"text": "   "}\n', encoding="utf-8")
    with pytest.raises(SummarizeError) as info:
        read_inputs([str(rows)])
    assert str(info.value) == f"{rows}:2: empty document"


# ------------------------------------------------------------------------------------------------ summarize


@pytest.mark.parametrize("which", ["t5", "gpt2"])
def test_summarize_folder_to_jsonl(models, docs, tmp_path, which):
    out = tmp_path / "out" / "summaries.jsonl"
    result = run_summarize(models[which], [str(docs)], output=out, settings=None)
    assert result == {"done": 3, "skipped": 0, "output": str(out), "capped": result["capped"], "warning":
                      result["warning"]}
    rows = read_jsonl(out)
    assert sorted(r["id"] for r in rows) == ["a.txt", "notes/b.md", "notes/deep/c.txt"]
    assert all(set(r) == {"id", "source", "summary"} for r in rows)
    sources = {r["id"]: r["source"] for r in rows}
    assert sources["notes/deep/c.txt"] == "Ein Hund läuft durch den Park."
    assert "läuft" in out.read_text(encoding="utf-8")  # ensure_ascii=False
    ids = ["a.txt", "notes/b.md", "notes/deep/c.txt"]
    if which == "t5":
        inputs = ["summarize: " + sources[i] for i in ids]
    else:
        inputs = [f"Text: {sources[i]}\nTL;DR:" for i in ids]
    assert {r["id"]: r["summary"] for r in rows} == dict(zip(ids, expected(models[which], inputs)))


def test_causal_model_without_task_info_uses_default_prompt(models, tmp_path, capsys):
    result = run_summarize(models["plain"], ["-"], output=None, settings=generation.GenerationSettings(
        max_new_tokens=3), stdin=io.StringIO("The cat sat on the mat all day.\n"))
    assert result["done"] == 1 and result["output"] is None
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    from llmctl.summarize import load_model

    model, tok, _ = load_model(models["plain"])
    want = generation.generate(model, tok, ["The cat sat on the mat all day.\nSummary:"],
                               generation.GenerationSettings(max_new_tokens=3)).outputs[0]
    assert row == {"id": "stdin", "source": "The cat sat on the mat all day.", "summary": want}


def test_jsonl_dataset_and_text_output(models, tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"text": f"document number {i} about cats"}) + "\n" for i in range(5)),
                    encoding="utf-8")
    out = tmp_path / "out.txt"
    result = run_summarize(models["t5"], [str(rows)], output=out, fmt="text", settings=None)
    assert result["done"] == 5
    lines = out.read_text(encoding="utf-8").split("\n")
    assert lines[-1] == "" and len(lines) == 6  # one line per summary, in input order
    inputs = [f"summarize: document number {i} about cats" for i in range(5)]
    assert lines[:5] == [" ".join(s.splitlines()) for s in expected(models["t5"], inputs)]
    with pytest.raises(SummarizeError) as info:
        run_summarize(models["t5"], [str(rows)], output=out, fmt="text", settings=None)
    assert str(info.value) == (f"{out}: already exists; text output cannot be resumed (it holds no ids): remove "
                               "it, or use --format jsonl")


# --------------------------------------------------------------------------------------------------- resume


def test_resume_skips_done_ids_and_appends_new_ones(models, docs, tmp_path):
    out = tmp_path / "s.jsonl"
    first = run_summarize(models["gpt2"], [str(docs)], output=out, settings=None)
    assert first["done"] == 3
    before = out.read_bytes()
    # Nothing left to do: the model is not even loaded (a missing directory would fail).
    again = run_summarize(str(tmp_path / "no-model"), [str(docs)], output=out, settings=None)
    assert again == {"done": 0, "skipped": 3, "output": str(out), "capped": 0, "warning": None}
    assert out.read_bytes() == before
    (docs / "new.txt").write_text("A new document about birds.", encoding="utf-8")
    third = run_summarize(models["gpt2"], [str(docs)], output=out, settings=None)
    assert (third["done"], third["skipped"]) == (1, 3)
    after = out.read_bytes()
    assert after.startswith(before)
    assert [r["id"] for r in read_jsonl(out)][3:] == ["new.txt"]


def test_resume_repairs_a_torn_last_line(models, docs, tmp_path):
    out = tmp_path / "s.jsonl"
    run_summarize(models["gpt2"], [str(docs)], output=out, settings=None)
    complete = out.read_bytes()
    lines = complete.split(b"\n")
    torn_id = json.loads(lines[2])["id"]
    out.write_bytes(b"\n".join(lines[:2]) + b"\n" + lines[2][:15])  # an interruption in the middle of a write
    result = run_summarize(models["gpt2"], [str(docs)], output=out, settings=None)
    assert (result["done"], result["skipped"]) == (1, 2)
    assert out.read_bytes() == complete  # greedy: the same line again, after the two kept
    assert [r["id"] for r in read_jsonl(out)][2] == torn_id


def test_a_complete_last_line_without_newline_is_kept(models, docs, tmp_path):
    out = tmp_path / "s.jsonl"
    run_summarize(models["gpt2"], [str(docs / "a.txt")], output=out, settings=None)
    out.write_bytes(out.read_bytes().rstrip(b"\n"))
    result = run_summarize(models["gpt2"], [str(docs / "a.txt"), str(docs / "notes" / "b.md")], output=out,
                           settings=None)
    assert (result["done"], result["skipped"]) == (1, 1)
    assert [r["id"] for r in read_jsonl(out)] == [str(docs / "a.txt"), str(docs / "notes" / "b.md")]


def test_refuses_to_append_to_a_file_that_is_not_its_output(models, docs, tmp_path):
    out = tmp_path / "s.jsonl"
    out.write_text('{"id": "x", "summary": "fine"}\nnot json\n{"id": "y"}\n', encoding="utf-8")
    with pytest.raises(SummarizeError) as info:
        run_summarize(models["gpt2"], [str(docs)], output=out, settings=None)
    assert str(info.value) == (f"{out}:2: not a JSON line with an \"id\"; not an llmctl summarize output, refusing "
                               "to append to it (choose another --output)")


# ------------------------------------------------------------------------------------------ model and warnings


def test_missing_model_directory(docs, tmp_path):
    with pytest.raises(SummarizeError) as info:
        run_summarize(str(tmp_path / "no-model"), [str(docs)], output=None, settings=None)
    assert str(info.value) == f"{tmp_path / 'no-model'}: model directory not found"
    (tmp_path / "empty-model").mkdir()
    with pytest.raises(SummarizeError) as info:
        run_summarize(str(tmp_path / "empty-model"), [str(docs)], output=None, settings=None)
    assert str(info.value).startswith(f"{tmp_path / 'empty-model'}: cannot load model: ")
    assert "\n" not in str(info.value)


def test_capped_outputs_are_reported(models, docs, tmp_path, capsys):
    out = tmp_path / "s.jsonl"
    result = run_summarize(models["endless"], [str(docs)], output=out, settings=None)
    message = ("3 of 3 outputs (100%) stopped at max_new_tokens=3 without an end-of-sequence token and are "
               "probably cut short; raise max_new_tokens")  # 3: the max_new_tokens stored in the model
    assert result["capped"] == 3 and result["warning"] == message
    assert capsys.readouterr().err == f"warning: {message}\n"


def test_terminal_console_gets_progress_and_the_warning(models, docs, tmp_path):
    from rich.console import Console

    console = Console(file=io.StringIO(), force_terminal=True, width=300)
    out = tmp_path / "s.jsonl"
    result = run_summarize(models["endless"], [str(docs)], output=out, settings=None, console=console)
    assert result["done"] == 3 and len(read_jsonl(out)) == 3
    text = console.file.getvalue()
    assert "summarize" in text and "━" in text  # the progress bar was drawn
    assert f"warning:\x1b[0m {result['warning']}" in text
    run_summarize(models["endless"], [str(docs)], output=out, settings=None, console=console)
    assert f"summarize: all 3 documents are already in {out}; nothing to do" in console.file.getvalue()


def test_overrides_apply_over_the_settings_stored_in_the_model():
    from llmctl.summarize import default_settings

    assert default_settings(T5_INFO) == generation.GenerationSettings(max_new_tokens=5, max_source_length=64)
    assert default_settings({}) == generation.GenerationSettings(max_new_tokens=64)
    got = default_settings(T5_INFO, {"num_beams": 4, "max_new_tokens": None, "batch_size": 2})
    assert got == generation.GenerationSettings(max_new_tokens=5, max_source_length=64, num_beams=4, batch_size=2)
    with pytest.raises(SummarizeError) as info:
        default_settings(T5_INFO, {"beams": 4})
    assert str(info.value).startswith("unknown generation setting(s): beams (known: max_new_tokens, num_beams, ")
