"""llmctl.tokenizer.load_for_encoding: preprocessing reads a saved generic fast tokenizer with the `tokenizers`
library alone (no transformers, no torch). Its encodings, EOS, vocabulary and saved copy must be those of the
tokenizer transformers loads from the same folder."""

import json

import numpy as np
import pytest
from transformers import AutoTokenizer

from llmctl import data
from llmctl import tokenizer as tok_mod

TEXTS = ["the cat sat on the mat", "Ein Hund läuft <|sep|> durch den Park", "  spaces  and\ttabs\n\nlines ",
         "émojis 🙂 and <|endoftext|> inside a text", ""]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    tok = tok_mod.train_bpe(TEXTS * 20, vocab_size=320, min_frequency=1, eos_token="<|endoftext|>",
                            pad_token="<|pad|>", extra_special_tokens=["<|sep|>"], show_progress=False)
    path = tmp_path_factory.mktemp("tok")
    tok.save_pretrained(path)
    (path / "model.safetensors").write_bytes(b"weights of a model folder")
    return path


def test_encodes_as_the_tokenizer_transformers_loads(folder):
    fast = tok_mod.load_for_encoding(str(folder))
    reference = AutoTokenizer.from_pretrained(folder)
    assert isinstance(fast, tok_mod.SavedTokenizer)
    assert (len(fast), fast.eos_token_id, fast.get_vocab()) == (len(reference), reference.eos_token_id,
                                                                 reference.get_vocab())
    got, want = data._Encoder(fast)(TEXTS), data._Encoder(reference)(TEXTS)
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1]) and got[0].dtype == want[0].dtype
    ids = reference(TEXTS[1], add_special_tokens=False)["input_ids"]
    start = int(got[1][0])  # the second document follows the first and its EOS
    assert list(got[0][start:start + len(ids)]) == ids and reference.convert_tokens_to_ids("<|sep|>") in ids


def test_the_copy_holds_the_tokenizer_and_nothing_else(folder, tmp_path):
    tok_mod.load_for_encoding(str(folder)).save_pretrained(tmp_path / "copy")
    assert sorted(p.name for p in (tmp_path / "copy").iterdir()) == ["tokenizer.json", "tokenizer_config.json"]
    copied = AutoTokenizer.from_pretrained(tmp_path / "copy")
    assert copied(TEXTS)["input_ids"] == AutoTokenizer.from_pretrained(folder)(TEXTS)["input_ids"]


def test_a_model_specific_class_goes_through_transformers(folder, tmp_path):
    other = tmp_path / "gpt2-style"
    other.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (other / name).write_bytes((folder / name).read_bytes())
    config = json.loads((other / "tokenizer_config.json").read_text())
    (other / "tokenizer_config.json").write_text(json.dumps({**config, "tokenizer_class": "GPT2Tokenizer"}))
    assert not isinstance(tok_mod.load_for_encoding(str(other)), tok_mod.SavedTokenizer)
    with pytest.raises(tok_mod.TokenizerError):
        tok_mod.load_for_encoding(str(tmp_path / "missing"))
