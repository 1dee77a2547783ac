"""Train a byte-level BPE tokenizer with `tokenizers` and save it in transformers format, or load an existing one."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path


class TokenizerError(Exception):
    """A tokenizer that cannot be loaded or trained (one line)."""


def train_bpe(
    texts: Iterable[str],
    *,
    vocab_size: int,
    min_frequency: int,
    eos_token: str,
    pad_token: str,
    extra_special_tokens: list[str] = (),
    show_progress: bool = True,
):
    """Train a byte-level BPE tokenizer on `texts` and wrap it as a transformers fast tokenizer.

    Byte-level means every string, in any script, encodes without unknown tokens. The EOS token separates
    documents and doubles as BOS; the pad token is only ever masked out.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    special = list(dict.fromkeys([eos_token, pad_token, *extra_special_tokens]))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=eos_token,
        bos_token=eos_token,
        pad_token=pad_token,
        unk_token=None,
        additional_special_tokens=[t for t in special if t not in (eos_token, pad_token)] or None,
    )
    fast.model_max_length = 1_000_000_000  # the model's context length, not the tokenizer, limits inputs
    return fast


def train_for(section, texts: Iterable, *, show_progress: bool = False):
    """`train_bpe` with the settings of a recipe's [tokenizer] section."""
    return train_bpe(texts, vocab_size=section.vocab_size, min_frequency=section.min_frequency,
                     eos_token=section.eos_token, pad_token=section.pad_token,
                     extra_special_tokens=section.extra_special_tokens, show_progress=show_progress)


def batched_texts(dataset, column: str = "text", batch_size: int = 1000) -> Iterator[list[str]]:
    for start in range(0, len(dataset), batch_size):
        yield dataset[start : start + batch_size][column]


def load(path_or_id: str):
    """Load a tokenizer from a directory or a hub id; a missing one is a one-line TokenizerError."""
    from transformers import AutoTokenizer

    from llmctl.modeling import not_found

    try:
        tok = AutoTokenizer.from_pretrained(path_or_id)
    except (OSError, ValueError) as exc:
        raise TokenizerError(not_found(path_or_id, "tokenizer", exc)) from None
    if not tok.is_fast:
        raise TokenizerError(f"{path_or_id}: llmctl needs a fast (Rust) tokenizer, got {type(tok).__name__}")
    return tok


# tokenizer_config.json classes that load tokenizer.json as it is: transformers' generic fast tokenizer classes,
# which change nothing in the Rust tokenizer at load (model-specific ones may, e.g. rebuild a post-processor).
_PLAIN_CLASSES = ("TokenizersBackend", "PreTrainedTokenizerFast")


class SavedTokenizer:
    """A saved fast tokenizer read with the `tokenizers` library alone: what preprocessing needs (the Rust
    tokenizer, the EOS id, the vocabulary, a copy of the files), without importing transformers, whose
    AutoTokenizer imports torch: about 1.3 s of a 2.5 s `llmctl preprocess` of the embedded corpus on 2 CPU cores.
    Made by `load_for_encoding` only for a local folder whose tokenizer_config.json names a generic class
    (_PLAIN_CLASSES); the encodings equal those of the tokenizer AutoTokenizer loads (tested)."""

    is_fast = True

    def __init__(self, path: Path, backend, config: dict):
        self.path = path
        self.backend_tokenizer = backend
        self.split_special_tokens = bool(config.get("split_special_tokens", False))
        eos = config.get("eos_token")
        eos = eos.get("content") if isinstance(eos, dict) else eos
        self.eos_token = eos
        self.eos_token_id = backend.token_to_id(eos) if isinstance(eos, str) else None

    def __len__(self) -> int:
        return self.backend_tokenizer.get_vocab_size(with_added_tokens=True)

    def get_vocab(self) -> dict:
        return self.backend_tokenizer.get_vocab(with_added_tokens=True)

    def save_pretrained(self, directory) -> None:
        """Copy the tokenizer's files into `directory` (only those: the folder may be a model's, with its weights)."""
        import shutil

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for name in _TOKENIZER_FILES:
            if (self.path / name).is_file():
                shutil.copyfile(self.path / name, directory / name)


# What a generic fast tokenizer's folder holds (tokenizer.json has the vocabulary and merges).
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                    "chat_template.jinja", "chat_template.json")


def load_for_encoding(path_or_id: str):
    """A SavedTokenizer where `path_or_id` is a local folder that allows one, else `load(path_or_id)`."""
    import json

    folder = Path(path_or_id)
    config_file, tokenizer_file = folder / "tokenizer_config.json", folder / "tokenizer.json"
    if folder.is_dir() and config_file.is_file() and tokenizer_file.is_file():
        try:
            config = json.loads(config_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            config = None
        if isinstance(config, dict) and config.get("tokenizer_class") in _PLAIN_CLASSES:
            from tokenizers import Tokenizer

            try:
                backend = Tokenizer.from_file(str(tokenizer_file))
            except Exception:  # noqa: BLE001 - whatever the Rust loader refuses, transformers' loader reports
                backend = None
            if backend is not None:
                return SavedTokenizer(folder, backend, config)
    return load(path_or_id)


def file_digest(path: Path) -> str:
    """Content hash of a saved tokenizer (its JSON files), for cache keys."""
    import hashlib

    h = hashlib.sha256()
    for p in sorted(Path(path).glob("*.json")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]
