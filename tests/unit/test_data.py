import json

import datasets
import pytest

from llmctl import data, runs
from llmctl import recipe as R
from llmctl import tokenizer as tok_mod

DOCS = ["the cat sat on the mat", "ein Hund läuft", "他们在河边散步。", "x", "a much longer document " * 20]


@pytest.fixture(scope="module")
def tok():
    return tok_mod.train_bpe(DOCS * 10, vocab_size=300, min_frequency=1, eos_token="<|endoftext|>",
                             pad_token="<|pad|>", show_progress=False)


# ---------------------------------------------------------------------------------------------- tokenizer


def test_bpe_round_trips_unicode_and_has_special_tokens(tok, tmp_path):
    for text in DOCS:
        assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    assert tok.eos_token == "<|endoftext|>" and tok.pad_token == "<|pad|>"
    assert len(tok) <= 300
    tok.save_pretrained(tmp_path)
    again = tok_mod.load(str(tmp_path))
    assert again("他们", add_special_tokens=False)["input_ids"] == tok("他们", add_special_tokens=False)["input_ids"]
    assert again.eos_token_id == tok.eos_token_id


def test_missing_tokenizer_is_one_line(tmp_path):
    with pytest.raises(tok_mod.TokenizerError) as info:
        tok_mod.load("no-such-org/no-such-tokenizer")
    assert str(info.value) == ("no-such-org/no-such-tokenizer: cannot load tokenizer: no such local directory, "
                               "and the hub is offline (HF_HUB_OFFLINE=1)")


# ------------------------------------------------------------------------------------------------ packing


def _packed(tok, docs, block_size, tmp_path):
    ds = datasets.Dataset.from_dict({"text": docs})
    ids = data.tokenize(ds, tok, num_proc=1, desc="t")
    stats = data.pack(ids, block_size, tmp_path / "b.arrow")
    return ids, datasets.Dataset.from_file(str(tmp_path / "b.arrow")), stats


@pytest.mark.parametrize("block_size", [2, 7, 16, 1000])
def test_packing_loses_and_duplicates_nothing(tok, tmp_path, block_size):
    docs = DOCS * 50
    ids, blocks, stats = _packed(tok, docs, block_size, tmp_path)
    expected = []
    for d in docs:
        expected += tok(d, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    flat = [t for b in blocks["input_ids"] for t in b]
    assert flat == expected
    assert stats == {"tokens": len(expected), "blocks": len(blocks)}
    lengths = [len(b) for b in blocks["input_ids"]]
    assert all(n == block_size for n in lengths[:-1]) and 0 < lengths[-1] <= block_size


def test_eos_separates_documents(tok, tmp_path):
    _, blocks, _ = _packed(tok, ["aa bb", "cc"], 1000, tmp_path)
    (block,) = blocks["input_ids"]
    eos = tok.eos_token_id
    assert block.count(eos) == 2 and block[-1] == eos
    first = block[: block.index(eos)]
    assert tok.decode(first) == "aa bb"


def test_packing_streams_across_reader_batches(tok, tmp_path):
    # More documents than one reader batch (10,000), so the remainder is carried across batches.
    docs = [f"doc {i}" for i in range(12_345)]
    ids, blocks, stats = _packed(tok, docs, 64, tmp_path)
    assert stats["tokens"] == sum(len(x) for x in ids["input_ids"])
    assert sum(len(b) for b in blocks["input_ids"]) == stats["tokens"]


# ------------------------------------------------------------------------------------------------ readers


def test_txt_documents_split_at_blank_lines(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text("a b\nc\n\n\nd e\n\nf", encoding="utf-8")
    assert [r["text"] for _, r in data.iter_records(p)] == ["a b\nc", "d e", "f"]
    assert [r["text"] for _, r in data.iter_records(p, txt_documents="line")] == ["a b", "c", "d e", "f"]


def test_malformed_jsonl_names_file_and_line(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text('{"text": "ok"}\n\n{"text": broken}\n', encoding="utf-8")
    with pytest.raises(data.DataError) as info:
        list(data.iter_records(p))
    assert str(info.value) == f"{p}:3: invalid JSON: Expecting value (column 10)"


def test_missing_column_names_file_line_and_columns(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text('{"text": "ok"}\n{"body": "no"}\n', encoding="utf-8")
    with pytest.raises(data.DataError) as info:
        list(data._text_generator([str(p)], "text", "blank_line"))
    assert str(info.value) == f"{p}:2: no text column 'text' (columns: 'body')"


def test_csv_tsv_with_bom_and_bare_quotes(tmp_path):
    c = tmp_path / "c.csv"
    c.write_text('label,sentence\n1,"he said ""hi"", then left"\n', encoding="utf-8")
    assert [r for _, r in data.iter_records(c)] == [{"label": "1", "sentence": 'he said "hi", then left'}]
    t = tmp_path / "c.tsv"
    t.write_bytes('\ufeffQuality\t#1 String\n1\tHe said "no\n'.encode("utf-8"))
    assert [r for _, r in data.iter_records(t)] == [{"Quality": "1", "#1 String": 'He said "no'}]


def test_json_document_and_nested_squad(tmp_path):
    p = tmp_path / "rows.json"
    p.write_text(json.dumps({"version": 2, "data": [{"text": "a"}, {"text": "b"}]}, indent=2), encoding="utf-8")
    assert [r["text"] for _, r in data.iter_records(p)] == ["a", "b"]
    q = tmp_path / "squad.json"
    q.write_text(json.dumps({"data": [{"title": "T", "paragraphs": [{"context": "Paris is big.", "qas": [
        {"id": "1", "question": "What is big?", "answers": [{"text": "Paris", "answer_start": 0}]},
        {"id": "2", "question": "Who?", "answers": [], "is_impossible": True},
    ]}]}]}), encoding="utf-8")
    recs = [r for _, r in data.iter_records(q)]
    assert recs[0]["answers"] == {"text": ["Paris"], "answer_start": [0]} and recs[0]["context"] == "Paris is big."
    assert recs[1]["answers"] == {"text": [], "answer_start": []}


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "c.parquet"
    pq.write_table(pa.table({"text": ["x", "y"]}), p)
    assert [r["text"] for _, r in data.iter_records(p)] == ["x", "y"]


def test_missing_and_unsupported_files(tmp_path):
    with pytest.raises(data.DataError, match=r"data file not found"):
        list(data.iter_records(tmp_path / "nope.txt"))
    (tmp_path / "x.docx").write_text("x")
    with pytest.raises(data.DataError, match=r"unsupported file type '.docx'"):
        list(data.iter_records(tmp_path / "x.docx"))


# -------------------------------------------------------------------------------------------------- cache


def _recipe(corpus):
    return R.load(None, [], base={
        "name": "c",
        "tokenizer": {"vocab_size": 300},
        "data": {"train_files": [str(corpus)], "block_size": 16, "validation_fraction": 0.2},
    })


def test_cache_hit_and_miss_on_changed_content(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n\n".join(DOCS * 4), encoding="utf-8")
    run = runs.Run(tmp_path / "run")
    first = data.prepare(_recipe(corpus), run)
    assert not first.cached
    stamp = (run.data / "train").stat().st_mtime_ns
    second = data.prepare(_recipe(corpus), run)
    assert second.cached and second.meta["key"] == first.meta["key"]
    assert (run.data / "train").stat().st_mtime_ns == stamp  # nothing was rewritten
    corpus.write_text("\n\n".join(DOCS * 5), encoding="utf-8")  # same name, new content
    third = data.prepare(_recipe(corpus), run)
    assert not third.cached and third.meta["key"] != first.meta["key"]
    assert third.meta["train"]["tokens"] + third.meta["validation"]["tokens"] > (
        first.meta["train"]["tokens"] + first.meta["validation"]["tokens"])


def test_a_changed_setting_misses_the_cache(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n\n".join(DOCS * 4), encoding="utf-8")
    r = _recipe(corpus)
    assert data.cache_key(r) != data.cache_key(R.load(None, ["data.block_size=32"], base=r.model_dump()))


def test_empty_corpus_is_an_error_and_keeps_old_data(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n\n".join(DOCS * 4), encoding="utf-8")
    run = runs.Run(tmp_path / "run")
    data.prepare(_recipe(corpus), run)
    before = (run.data / "meta.json").read_text()
    corpus.write_text("\n\n  \n", encoding="utf-8")
    with pytest.raises(data.DataError) as info:
        data.prepare(_recipe(corpus), run)
    assert str(info.value) == f"{corpus}: the corpus is empty (no text documents)"
    assert (run.data / "meta.json").read_text() == before
    assert not list(run.root.glob(".preprocess-*"))
