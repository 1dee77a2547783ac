"""`data.streaming = true`: documents flow from the files through the tokenizer into packed blocks with no raw-text
Arrow cache; with the same validation file, the blocks and tokenizer equal the non-streaming ones token for token."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmctl import catalog, data, recipe, runs
from llmctl.pretrain import prepare_corpus

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    docs = (ROOT / "data" / "pretrain" / "corpus.txt").read_text(encoding="utf-8").split("\n\n")[:300]
    base = tmp_path_factory.mktemp("stream")
    (base / "train.txt").write_text("\n\n".join(docs[:270]) + "\n", encoding="utf-8")
    (base / "val.txt").write_text("\n\n".join(docs[270:]) + "\n", encoding="utf-8")
    return base


def _recipe(*sets):
    return catalog.resolve_paths(recipe.load(ROOT / "recipes" / "tiny" / "pretrain.toml", list(sets)))


def _tokens(path: Path) -> list[int]:
    return [t for row in data.load_blocks(path)["input_ids"] for t in row]


def test_streamed_blocks_equal_the_materialised_ones(corpus, tmp_path, monkeypatch):
    files = recipe.data_overrides([str(corpus / "train.txt")], [str(corpus / "val.txt")])
    plain = data.prepare(_recipe(*files), runs.Run(tmp_path / "plain"))

    import datasets

    def no_cache(*args, **kwargs):
        raise AssertionError("streaming must not materialise the raw text")

    monkeypatch.setattr(datasets.Dataset, "from_generator", no_cache)
    streamed = prepare_corpus(_recipe(*files, "data.streaming=true"), runs.Run(tmp_path / "streamed"))
    assert streamed.meta["streaming"] is True and streamed.meta["key"] != plain.meta["key"]
    for split in ("train", "validation"):
        assert _tokens(getattr(streamed, split)) == _tokens(getattr(plain, split)), split
        assert streamed.meta[split] == plain.meta[split]
    assert (streamed.tokenizer / "tokenizer.json").read_bytes() == (plain.tokenizer / "tokenizer.json").read_bytes()
    assert streamed.meta["unigram_perplexity"] == pytest.approx(plain.meta["unigram_perplexity"])
    # Unchanged: the second call is a cache hit.
    assert prepare_corpus(_recipe(*files, "data.streaming=true"), runs.Run(tmp_path / "streamed")).cached


def test_streamed_held_out_split_is_every_kth_document(corpus, tmp_path):
    r = _recipe(*recipe.data_overrides([str(corpus / "train.txt")]), "data.streaming=true",
                "data.validation_fraction=0.1")
    prepared = prepare_corpus(r, runs.Run(tmp_path / "r"))
    assert prepared.meta["documents"] == {"train": 243, "validation": 27}  # 270 documents, every 10th held out


def test_a_stream_too_short_for_the_validation_fraction(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("one document\n\nanother one\n", encoding="utf-8")
    r = _recipe(*recipe.data_overrides([str(corpus)]), "data.streaming=true", "data.validation_fraction=0.1")
    with pytest.raises(data.DataError) as info:
        prepare_corpus(r, runs.Run(tmp_path / "r"))
    assert "the validation split has no documents: the stream holds fewer than 10 documents" in str(info.value)
