"""Preprocessing a corpus as a stream (`data.streaming = true`): documents flow from the files (or a hub dataset
with `datasets` streaming) through the tokenizer into packed blocks, and nothing but the packed blocks is
written: the raw text is never materialised in an Arrow cache first, so a corpus larger than the disk's free
space (or a hub dataset too large to download) can be prepared.

The source is read twice, once to train the tokenizer (skipped when the recipe names one) and once to tokenize
and pack. Without validation files, every k-th document (k = round(1 / data.validation_fraction)) is held out
for validation: a stream has no length to draw a random split from, and a fixed stride is deterministic and
spreads the validation documents over the whole corpus. The output, the cache key and the reuse rules are those
of `llmctl.data.prepare`; only the split differs, so the key says "streaming".
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from llmctl import data, runs


def _documents(recipe, files: list[str] | None):
    """An IterableDataset of {"text"}: the given local files through llmctl's readers (errors name file and
    line), or the recipe's hub dataset in streaming mode."""
    import datasets

    d = recipe.data
    column = d.text_column or "text"
    features = datasets.Features({"text": datasets.Value("string")})
    if files is None:  # the hub dataset
        try:
            ds = datasets.load_dataset(d.hub_dataset, d.hub_config or None, split="train", streaming=True)
        except Exception as exc:  # noqa: BLE001 - hub errors come in many types; one line is what the user needs
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise data.DataError(f"hub dataset {d.hub_dataset!r}: cannot stream: {first}") from None
        return ds.select_columns([column]).rename_column(column, "text") if column != "text" else ds
    for name in files:
        data.check_file(Path(name))
        data.file_format(Path(name))
    return datasets.IterableDataset.from_generator(
        data._text_generator, gen_kwargs={"files": list(files), "column": column, "txt_documents": d.txt_documents},
        features=features)


def _split(recipe):
    """(train stream, validation stream) of documents."""
    d = recipe.data
    source = None if d.hub_dataset and not d.train_files else list(d.train_files)
    docs = _documents(recipe, source)
    if d.validation_files:
        return docs, _documents(recipe, list(d.validation_files))
    every = max(2, round(1 / d.validation_fraction))
    held = docs.filter(lambda _, i: i % every == every - 1, with_indices=True)
    kept = docs.filter(lambda _, i: i % every != every - 1, with_indices=True)
    return kept, held


def _texts(stream, batch_size: int = 1000):
    for batch in stream.iter(batch_size=batch_size):
        yield batch["text"]


def prepare(recipe, run: runs.Run, console=None) -> data.Prepared:
    """Tokenizer + packed train/validation splits in the run directory from a stream of documents."""
    import datasets

    from llmctl import tokenizer as tok_mod

    say = console.print if console is not None else (lambda *a, **k: None)
    key = data.cache_key(recipe)  # data.streaming is one of its settings
    hit = data.cached(recipe, run)
    if hit is not None:
        say(f"[green]preprocess:[/] cache hit ({key}): {run.data} is up to date, nothing to do")
        return hit
    datasets.disable_caching()
    d = recipe.data
    started = time.perf_counter()
    run.root.mkdir(parents=True, exist_ok=True)
    work = runs.temp_dir(".preprocess-", run.root)
    try:
        train_docs, val_docs = _split(recipe)
        source = data.tokenizer_source(recipe)
        if source:
            tok = tok_mod.load(source)
        else:
            t = recipe.tokenizer
            say(f"preprocess: training a byte-level BPE tokenizer (vocab {t.vocab_size}) on the streamed training "
                "documents")
            tok = tok_mod.train_for(t, _texts(train_docs))
        tok.save_pretrained(work / "tokenizer")
        stats, out = {"documents": {}}, {}
        for name, docs in (("train", train_docs), ("validation", val_docs)):
            counted = {"n": 0}

            def count(n: int, counted=counted) -> None:
                counted["n"] += n

            # The stream's length is unknown: as many workers as data.num_proc and the CPUs allow.
            stats[name] = data.tokenize_and_pack(_texts(docs, data.DOCS_PER_TASK), tok, d.block_size,
                                                 work / f"{name}.arrow", num_proc=data.workers(d.num_proc, None),
                                                 progress=count)
            stats["documents"][name] = counted["n"]
            out[name] = datasets.Dataset.from_file(str(work / f"{name}.arrow"))
        if stats["train"]["tokens"] == 0:
            raise data.DataError("the training split has no tokens (no text documents in the stream)")
        if stats["validation"]["tokens"] == 0:
            raise data.DataError(f"the validation split has no documents: the stream holds fewer than "
                                 f"{max(2, round(1 / d.validation_fraction))} documents for "
                                 f"data.validation_fraction = {d.validation_fraction}; add data or pass "
                                 "--validation-data FILE")
        stats["vocab_size"] = len(tok)
        stats["uniform_perplexity"] = float(len(tok))
        stats["unigram_perplexity"] = data.unigram_baseline(out["train"], out["validation"], len(tok))
        staged = work / "data"
        for name, ds in out.items():
            ds.save_to_disk(str(staged / name))
        meta = {"key": key, "format": data.FORMAT_VERSION, "block_size": d.block_size, "streaming": True,
                "tokenizer": str(run.tokenizer), "seconds": round(time.perf_counter() - started, 2), **stats}
        runs.write_json(staged / "meta.json", meta)
        for target, src in ((run.tokenizer, work / "tokenizer"), (run.data, staged)):
            runs.remove(target)
            shutil.move(str(src), str(target))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    say(f"[green]preprocess:[/] streamed {stats['documents']['train']:,} + {stats['documents']['validation']:,} "
        f"documents, {stats['train']['tokens']:,} + {stats['validation']['tokens']:,} tokens in blocks of "
        f"{d.block_size}, vocab {len(tok):,} -> {run.data}")
    return data.Prepared(run.data / "train", run.data / "validation", run.tokenizer, meta=meta, cached=False)
