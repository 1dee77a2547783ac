"""Tokenizing in worker processes and packing flat compact arrays gives, token for token, the blocks of the plain
way: each document through `tokenizer(text, add_special_tokens=False)`, EOS appended, all concatenated and cut
into blocks of `block_size` (the last one shorter). The reference below is that plain way, in Python lists."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from llmctl import catalog, data, recipe, runs
from llmctl import tokenizer as tok_mod
from llmctl.pretrain import prepare_corpus

ROOT = Path(__file__).resolve().parents[2]
DOCS = (ROOT / "data" / "pretrain" / "corpus.txt").read_text(encoding="utf-8").split("\n\n")[:600]
ODD = ["the cat sat on the mat", "ein Hund läuft", "他们在河边散步。", "x", "a literal <|endoftext|> inside",
       "  leading and trailing spaces  ", "tabs\tand\nnew\nlines", "emoji 🙂 and ½"]


def reference_blocks(tokenizer, docs: list[str], block_size: int) -> list[list[int]]:
    flat: list[int] = []
    for doc in docs:
        flat += tokenizer(doc, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return [flat[i : i + block_size] for i in range(0, len(flat), block_size)]


@pytest.fixture(scope="module")
def tok():
    return tok_mod.train_bpe(DOCS + ODD, vocab_size=400, min_frequency=1, eos_token="<|endoftext|>",
                             pad_token="<|pad|>", show_progress=False)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    base = tmp_path_factory.mktemp("packing")
    docs = DOCS * 3 + ODD  # 1,808 documents: more than one batch of documents per split
    (base / "train.txt").write_text("\n\n".join(docs[:1700]) + "\n", encoding="utf-8")
    (base / "val.txt").write_text("\n\n".join(docs[1700:]) + "\n", encoding="utf-8")
    return base


def _recipe(*sets):
    return catalog.resolve_paths(recipe.load(ROOT / "recipes" / "tiny" / "pretrain.toml", list(sets)))


def _docs(path: Path) -> list[str]:
    return [r["text"] for _, r in data.iter_records(path)]


def _blocks(path: Path) -> list[list[int]]:
    return data.load_blocks(path)["input_ids"]


@pytest.mark.parametrize("num_proc", [1, 2])
def test_encoded_batches_are_the_tokenizer_ids_plus_eos(tok, num_proc):
    batches = [DOCS[:250], ODD, [], DOCS[250:300]]
    out = list(data.encode_batches(iter(batches), tok, num_proc=num_proc))  # 2: forked workers, whatever the CPUs
    assert len(out) == len(batches)
    for texts, (flat, lengths) in zip(batches, out):
        expected = [t for doc in texts for t in tok(doc, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]]
        assert flat.dtype == np.uint16 and flat.tolist() == expected
        assert lengths.tolist() == [len(tok(doc, add_special_tokens=False)["input_ids"]) + 1 for doc in texts]


@pytest.mark.parametrize("block_size", [3, 7, 64, 100_000])
def test_tokenize_and_pack_equals_the_reference(tok, tmp_path, block_size, monkeypatch):
    monkeypatch.setattr(data, "DOCS_PER_TASK", 97)  # many batches, so the remainder crosses batches often
    docs = DOCS[:400] + ODD
    import datasets

    ds = datasets.Dataset.from_dict({"text": docs})
    seen = []
    stats = data.tokenize_and_pack(data.text_batches(ds), tok, block_size, tmp_path / "b.arrow", num_proc=2,
                                   progress=seen.append)
    blocks = datasets.Dataset.from_file(str(tmp_path / "b.arrow"))
    expected = reference_blocks(tok, docs, block_size)
    assert blocks["input_ids"] == expected
    assert stats == {"tokens": sum(map(len, expected)), "blocks": len(expected)}
    assert sum(seen) == len(docs) and max(seen) == 97
    assert str(blocks.features["input_ids"].feature.dtype) == "uint16"


def test_prepare_equals_the_reference_and_feeds_int64_to_the_model(tok, corpus, tmp_path, monkeypatch):
    import torch

    from llmctl.tasks import causal_lm

    monkeypatch.setattr(data, "DOCS_PER_TASK", 300)  # 6 batches of training documents over 2 worker processes
    tok_dir = tmp_path / "tok"
    tok.save_pretrained(tok_dir)
    files = recipe.data_overrides([str(corpus / "train.txt")], [str(corpus / "val.txt")])
    r = _recipe(*files, f'tokenizer.path="{tok_dir}"', "data.num_proc=2")
    prepared = data.prepare(r, runs.Run(tmp_path / "run"))
    for split, name in (("train", "train.txt"), ("validation", "val.txt")):
        expected = reference_blocks(tok, _docs(corpus / name), r.data.block_size)
        assert _blocks(getattr(prepared, split)) == expected, split
        assert prepared.meta[split] == {"tokens": sum(map(len, expected)), "blocks": len(expected)}
    # Stored as uint16; what reaches the model is int64, equal to the stored ids.
    train = data.load_train(prepared)
    rows = [train[i] for i in range(3)] + [train[len(train) - 1]]  # the last block is the short one
    batch = causal_lm.collator(tok.pad_token_id)(rows)
    assert batch["input_ids"].dtype == torch.int64 and batch["labels"].dtype == torch.int64
    for i, row in enumerate(rows):
        assert batch["input_ids"][i, : len(row["input_ids"])].tolist() == row["input_ids"]


def test_streamed_and_sharded_blocks_equal_the_reference(tok, corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(data, "DOCS_PER_TASK", 300)
    tok_dir = tmp_path / "tok"
    tok.save_pretrained(tok_dir)
    files = recipe.data_overrides([str(corpus / "train.txt")], [str(corpus / "val.txt")])
    sets = (*files, f'tokenizer.path="{tok_dir}"', "data.num_proc=2")
    size = _recipe(*sets).data.block_size
    train_docs = _docs(corpus / "train.txt")
    streamed = prepare_corpus(_recipe(*sets, "data.streaming=true"), runs.Run(tmp_path / "streamed"))
    assert _blocks(streamed.train) == reference_blocks(tok, train_docs, size)
    assert _blocks(streamed.validation) == reference_blocks(tok, _docs(corpus / "val.txt"), size)
    assert streamed.meta["documents"] == {"train": len(train_docs), "validation": len(DOCS) * 3 + len(ODD) - 1700}
    run = runs.Run(tmp_path / "sharded")
    for index in (1, 2):
        data.prepare_shard(_recipe(*sets), run, index, 2)
    half = data.shard_range(len(train_docs), 1, 2)[1]
    for index, docs in ((1, train_docs[:half]), (2, train_docs[half:])):
        assert _blocks(data.shard_dir(run, index, 2) / "train") == reference_blocks(tok, docs, size), index


def test_compact_type_follows_the_vocabulary(tmp_path):
    class Vocab:
        def __init__(self, n):
            self.n = n

        def __len__(self):
            return self.n

        def get_vocab(self):
            return {"a": 0, "z": self.n - 1}

    assert data.token_dtype(Vocab(4096)) == np.uint16
    assert data.token_dtype(Vocab(1 << 16)) == np.uint16
    assert data.token_dtype(Vocab((1 << 16) + 1)) == np.uint32
    ids = np.array([0, 65_535, 65_536, 151_000, 7], dtype=np.uint32)
    stats = data._write_blocks(iter([ids[:3], ids[3:]]), 2, tmp_path / "b.arrow", np.uint32)
    import datasets

    blocks = datasets.Dataset.from_file(str(tmp_path / "b.arrow"))
    assert blocks["input_ids"] == [[0, 65_535], [65_536, 151_000], [7]] and stats == {"tokens": 5, "blocks": 3}
    assert str(blocks.features["input_ids"].feature.dtype) == "uint32"


def test_a_cache_of_the_old_int32_format_is_rebuilt(tok, corpus, tmp_path, monkeypatch):
    tok_dir = tmp_path / "tok"
    tok.save_pretrained(tok_dir)
    r = _recipe(*recipe.data_overrides([str(corpus / "val.txt")]), f'tokenizer.path="{tok_dir}"')
    run = runs.Run(tmp_path / "run")
    current = data.FORMAT_VERSION
    monkeypatch.setattr(data, "FORMAT_VERSION", 1)  # what a run directory made before compact blocks holds
    old = data.prepare(r, run)
    monkeypatch.setattr(data, "FORMAT_VERSION", current)
    assert data.cached(r, run) is None
    new = data.prepare(r, run)
    assert not new.cached and new.meta["key"] != old.meta["key"] and new.meta["format"] == current


def test_a_failing_worker_stops_the_pool_with_the_error(tok):
    batches = [DOCS[:10], ["fine", None], DOCS[10:20]]  # None is not text: the worker's encoder raises
    with pytest.raises(TypeError):
        list(data.encode_batches(iter(batches), tok, num_proc=2))
