#!/usr/bin/env python3
"""Measure how learnable the pretraining corpus is, with simple n-gram baselines.

    .venv/bin/python data/measure.py [data/pretrain/corpus.txt]

Documents (separated by one blank line) are split deterministically into train and validation: every
document whose index i satisfies i % 20 == 19 goes to validation (5%). A byte-level BPE tokenizer
(vocab 4096, the same settings llmctl uses) is trained on the training documents only, and the script
prints corpus statistics plus the validation perplexity of

* a unigram model (add-one smoothed, fitted on the training tokens), and
* a bigram model (interpolated absolute discounting, d = 0.75, backing off to the unigram),

with an end-of-text token after every document counted as a predicted token. A small transformer that
uses a longer context should end far below the bigram figure; the unigram figure is the trivial
baseline that the pretraining demo is measured against.
"""

from __future__ import annotations

import math
import os
import sys
from collections import Counter

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

HERE = os.path.dirname(os.path.abspath(__file__))
EOS = "<|endoftext|>"


def split_docs(text: str) -> list[str]:
    return [d for d in text.split("\n\n") if d.strip()]


def train_tokenizer(docs: list[str], vocab_size: int = 4096) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(docs, trainer=trainer)
    return tok


def encode_stream(tok: Tokenizer, docs: list[str]) -> list[int]:
    eos = tok.token_to_id(EOS)
    ids: list[int] = []
    for enc in tok.encode_batch(docs):
        ids.extend(enc.ids)
        ids.append(eos)
    return ids


def main() -> None:
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "pretrain", "corpus.txt")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    docs = split_docs(text)
    train = [d for i, d in enumerate(docs) if i % 20 != 19]
    valid = [d for i, d in enumerate(docs) if i % 20 == 19]
    tok = train_tokenizer(train)
    V = tok.get_vocab_size()
    tr = encode_stream(tok, train)
    va = encode_stream(tok, valid)

    def is_zh(d: str) -> bool:
        return sum("\u4e00" <= ch <= "\u9fff" for ch in d) > len(d) // 4

    n_words = len(text.split())
    cjk = sum(1 for d in docs if is_zh(d))
    non_ascii_docs = sum(1 for d in docs if any(ord(ch) > 127 for ch in d))
    distinct_cjk = len({ch for ch in text if "\u4e00" <= ch <= "\u9fff"})
    # words, or for Chinese non-space characters / 2 (as data/generate.py counts them)
    lens = sorted(sum(not ch.isspace() for ch in d) // 2 if is_zh(d) else len(d.split()) for d in docs)

    print(f"file: {path}")
    print(f"documents: {len(docs)} (train {len(train)}, validation {len(valid)})")
    print(f"bytes: {len(text.encode('utf-8'))}  characters: {len(text)}  whitespace words: {n_words}")
    print(f"Chinese documents: {cjk} ({100 * cjk / len(docs):.1f}%), distinct CJK characters: {distinct_cjk}")
    print(f"documents with non-ASCII characters: {non_ascii_docs} ({100 * non_ascii_docs / len(docs):.1f}%)")
    print(f"document length (words; Chinese: characters / 2): min {lens[0]}, median {lens[len(lens) // 2]}, max {lens[-1]}")
    print(f"tokenizer: byte-level BPE, vocab {V}")
    print(f"tokens (incl. one EOS per document): train {len(tr)}, validation {len(va)}, "
          f"bytes/token {len(text.encode('utf-8')) / (len(tr) + len(va)):.2f}")

    # Unigram, add-one smoothed over the whole vocabulary.
    uni = Counter(tr)
    N = len(tr)

    def p_uni(w: int) -> float:
        return (uni[w] + 1) / (N + V)

    nll = -sum(math.log(p_uni(w)) for w in va)
    ppl_uni = math.exp(nll / len(va))

    # Bigram, interpolated absolute discounting (prediction of each token from the previous one; the
    # first token of the validation stream is predicted from EOS, as every document starts after one).
    eos = tok.token_to_id(EOS)
    big = Counter(zip([eos] + tr[:-1], tr))
    ctx = Counter()
    types = Counter()
    for (a, _b), c in big.items():
        ctx[a] += c
        types[a] += 1
    d = 0.75

    def p_bi(a: int, b: int) -> float:
        ca = ctx[a]
        if ca == 0:
            return p_uni(b)
        return max(big[(a, b)] - d, 0) / ca + d * types[a] / ca * p_uni(b)

    prev = [eos] + va[:-1]
    nll_bi = -sum(math.log(p_bi(a, b)) for a, b in zip(prev, va))
    ppl_bi = math.exp(nll_bi / len(va))

    # Trigram with the same scheme, backing off to the bigram (for information only).
    tri = Counter(zip([eos, eos] + tr[:-2], [eos] + tr[:-1], tr))
    ctx2 = Counter()
    types2 = Counter()
    for (a, b, _c), c in tri.items():
        ctx2[(a, b)] += c
        types2[(a, b)] += 1

    def p_tri(a: int, b: int, c: int) -> float:
        cab = ctx2[(a, b)]
        if cab == 0:
            return p_bi(b, c)
        return max(tri[(a, b, c)] - d, 0) / cab + d * types2[(a, b)] / cab * p_bi(b, c)

    prev2 = [eos, eos] + va[:-2]
    nll_tri = -sum(math.log(p_tri(a, b, c)) for a, b, c in zip(prev2, prev, va))
    ppl_tri = math.exp(nll_tri / len(va))

    print(f"validation perplexity, unigram (add-one): {ppl_uni:.1f}")
    print(f"validation perplexity, bigram (interpolated, d=0.75): {ppl_bi:.1f} ({100 * ppl_bi / ppl_uni:.1f}% of unigram)")
    print(f"validation perplexity, trigram (interpolated, d=0.75): {ppl_tri:.1f} ({100 * ppl_tri / ppl_uni:.1f}% of unigram)")
    print(f"target for a small transformer: at most a quarter of the unigram, i.e. <= {ppl_uni / 4:.1f}")


if __name__ == "__main__":
    main()
