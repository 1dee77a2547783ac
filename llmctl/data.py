"""Read local data, tokenize, pack into fixed blocks, cache.

Readers yield records one at a time with their location (file and line or row), so a malformed record is
reported as `data/x.jsonl:17: ...`, and datasets are built with `Dataset.from_generator`, which writes Arrow in
chunks: memory stays bounded as the corpus grows. Packing streams the tokenized Arrow table batch by batch and
carries the remainder across batches, so no token is lost or duplicated.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from llmctl import runs

# Bump when the preprocessed layout changes, so old caches are rebuilt. 2: blocks of uint16/uint32, not int32.
FORMAT_VERSION = 2
READABLE = (".txt", ".text", ".jsonl", ".json", ".csv", ".tsv", ".parquet")


class DataError(Exception):
    """Bad input data: one line naming the file, line or column."""


# ------------------------------------------------------------------------------------------------------ readers


def check_file(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: data file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a data file")
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as exc:
        raise DataError(f"{path}: cannot read data file: {exc.strerror or exc}") from None


def file_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".txt", ".text", ""):
        return "txt"
    if suffix in (".jsonl", ".json", ".csv", ".tsv", ".parquet"):
        return suffix[1:]
    raise DataError(f"{path}: unsupported file type {suffix!r}; expected one of {', '.join(READABLE)}")


def iter_records(path: Path, *, txt_documents: str = "blank_line") -> Iterator[tuple[str, dict]]:
    """Yield (location, record) for every record of a local file, whatever its format."""
    path = Path(path)
    check_file(path)
    fmt = file_format(path)
    if fmt == "txt":
        yield from _iter_txt(path, txt_documents)
    elif fmt == "jsonl":
        yield from _iter_jsonl(path)
    elif fmt == "json":
        yield from _iter_json(path)
    elif fmt in ("csv", "tsv"):
        yield from _iter_csv(path, delimiter="," if fmt == "csv" else "\t")
    else:
        yield from _iter_parquet(path)


def _open_text(path: Path):
    # utf-8-sig strips a byte-order mark; errors are reported with the file name by the callers.
    return open(path, encoding="utf-8-sig", newline="")


def _utf8_error(path: Path, exc: UnicodeDecodeError) -> DataError:
    """A one-line error naming the line and column of the first byte that is not UTF-8.

    The decoder reads the file in chunks, so the exception's offset is relative to a chunk and says nothing of the
    line; the file is scanned again line by line (only on error). A newline byte never occurs inside a UTF-8
    sequence, so splitting the raw bytes at newlines cannot cut a valid character."""
    try:
        with open(path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError as bad:
                    head = raw[: bad.start].decode("utf-8")
                    if lineno == 1:
                        head = head.removeprefix("\ufeff")
                    return DataError(f"{path}:{lineno}: not valid UTF-8 text (column {len(head) + 1}, byte "
                                     f"0x{raw[bad.start]:02x}); save the file as UTF-8")
    except OSError:
        pass
    return DataError(f"{path}: not valid UTF-8 text (byte {exc.start}); save the file as UTF-8")


def _decode_guard(path: Path, fn):
    try:
        yield from fn()
    except UnicodeDecodeError as exc:
        raise _utf8_error(path, exc) from None


def _iter_txt(path: Path, mode: str):
    def gen():
        with _open_text(path) as f:
            if mode == "file":
                text = f.read().strip()
                if text:
                    yield f"{path}:1", {"text": text}
                return
            buf, start = [], 1
            for lineno, line in enumerate(f, 1):
                line = line.rstrip("\r\n")
                if mode == "line":
                    if line.strip():
                        yield f"{path}:{lineno}", {"text": line}
                    continue
                if line.strip():
                    if not buf:
                        start = lineno
                    buf.append(line)
                elif buf:
                    yield f"{path}:{start}", {"text": "\n".join(buf)}
                    buf = []
            if buf:
                yield f"{path}:{start}", {"text": "\n".join(buf)}

    yield from _decode_guard(path, gen)


def _iter_jsonl(path: Path, first_lineno: int = 1):
    def gen():
        with _open_text(path) as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{lineno}: invalid JSON: {exc.msg} (column {exc.colno})") from None
                except RecursionError:  # json recurses once per nesting level
                    raise DataError(f"{path}:{lineno}: JSON nested too deep to read") from None
                if not isinstance(rec, dict):
                    raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(rec).__name__}")
                yield f"{path}:{lineno}", rec

    yield from _decode_guard(path, gen)


def _iter_json(path: Path):
    """A `.json` file is JSON Lines (one object per line) or one JSON document: a list of records, an object
    with the records under "data", or the nested SQuAD layout (data -> paragraphs -> qas)."""
    with _open_text(path) as f:
        try:
            first = f.readline()
        except UnicodeDecodeError as exc:
            raise _utf8_error(path, exc) from None
    try:
        one = json.loads(first) if first.strip() else None
        is_lines = isinstance(one, dict)
    except json.JSONDecodeError:
        is_lines = False
    except RecursionError:  # json recurses once per nesting level
        raise DataError(f"{path}:1: JSON nested too deep to read") from None
    # A one-line document {"data": [...]} also parses as a first line: read it whole, and fall back to lines
    # only if the file holds more than that one object.
    if is_lines and not isinstance(one.get("data"), list):
        yield from _iter_jsonl(path)
        return
    try:
        with _open_text(path) as f:
            doc = json.load(f)
    except json.JSONDecodeError as exc:
        if is_lines:
            yield from _iter_jsonl(path)
            return
        raise DataError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg} (column {exc.colno})") from None
    except UnicodeDecodeError as exc:
        raise _utf8_error(path, exc) from None
    except RecursionError:
        raise DataError(f"{path}: JSON nested too deep to read") from None
    rows = doc
    if isinstance(doc, dict):
        if "data" not in doc or not isinstance(doc["data"], list):
            raise DataError(f"{path}: a JSON document must be a list of records or hold them under \"data\"")
        rows = doc["data"]
    if not isinstance(rows, list):
        raise DataError(f"{path}: expected a list of records, got {type(rows).__name__}")
    if rows and isinstance(rows[0], dict) and "paragraphs" in rows[0]:
        yield from _flatten_squad(path, rows)
        return
    for i, rec in enumerate(rows, 1):
        if not isinstance(rec, dict):
            raise DataError(f"{path}: record {i}: expected a JSON object, got {type(rec).__name__}")
        yield f"{path}: record {i}", rec


def _flatten_squad(path: Path, articles: list) -> Iterator[tuple[str, dict]]:
    def keys(obj: dict) -> str:
        return ", ".join(repr(k) for k in obj) or "none"

    def listed(where: str, obj: dict, key: str) -> list:
        if key not in obj:
            raise DataError(f"{where}: no \"{key}\" list (keys: {keys(obj)})")
        if not isinstance(obj[key], list):
            raise DataError(f"{where}: \"{key}\" must be a list, got {type(obj[key]).__name__}")
        return obj[key]

    n = 0
    for i, article in enumerate(articles, 1):
        if not isinstance(article, dict):
            raise DataError(f"{path}: article {i}: expected a JSON object, got {type(article).__name__}")
        title = article.get("title", "")
        for j, para in enumerate(listed(f"{path}: article {i}", article, "paragraphs"), 1):
            at = f"{path}: article {i}, paragraph {j}"
            if not isinstance(para, dict):
                raise DataError(f"{at}: expected a JSON object, got {type(para).__name__}")
            if "context" not in para:
                raise DataError(f"{at}: no \"context\" (keys: {keys(para)})")
            context = para["context"]
            for qa in listed(at, para, "qas"):
                n += 1
                where = f"{path}: question {n}"
                if not isinstance(qa, dict):
                    raise DataError(f"{where}: expected a JSON object, got {type(qa).__name__}")
                for key in ("id", "question"):
                    if key not in qa:
                        raise DataError(f"{where}: no \"{key}\" (keys: {keys(qa)})")
                # A question without "answers" is not unanswerable unless it says so: reading it as such would
                # silently turn a SQuAD v1 split into a v2 one.
                answers = [] if qa.get("is_impossible") else listed(where, qa, "answers")
                for k, a in enumerate(answers, 1):
                    if not isinstance(a, dict):
                        raise DataError(f"{where}: answer {k} must be a JSON object with \"text\" and "
                                        f"\"answer_start\", got {type(a).__name__}")
                    for key in ("text", "answer_start"):
                        if key not in a:
                            raise DataError(f"{where}: answer {k} has no \"{key}\" (keys: {keys(a)})")
                yield where, {
                    "id": qa["id"],
                    "title": title,
                    "context": context,
                    "question": qa["question"],
                    "answers": {
                        "text": [a["text"] for a in answers],
                        "answer_start": [a["answer_start"] for a in answers],
                    },
                }


def _iter_csv(path: Path, delimiter: str):
    import sys

    # The csv module refuses fields over 131072 characters by default (a long document in one cell). The limit is
    # a C long: sys.maxsize overflows it where long is 32 bits (Windows), so fall back to the largest 32-bit value.
    if csv.field_size_limit() < 2**31 - 1:
        try:
            csv.field_size_limit(sys.maxsize)
        except OverflowError:
            csv.field_size_limit(2**31 - 1)

    kind = "TSV" if delimiter == "\t" else "CSV"

    def rows(reader):
        while True:
            try:
                row = next(reader, None)
            except csv.Error as exc:  # e.g. "new-line character seen in unquoted field", a NUL byte
                raise DataError(f"{path}:{reader.line_num}: invalid {kind}: {exc}") from None
            if row is None:
                return
            yield row

    def gen():
        with _open_text(path) as f:
            # TSV files (GLUE style) contain bare quote characters: read them without quote handling.
            quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
            reader = csv.reader(f, delimiter=delimiter, quoting=quoting)
            records = rows(reader)
            header = next(records, None)
            if header is None:
                return
            header = [h.strip() for h in header]
            for row in records:
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) != len(header):
                    raise DataError(
                        f"{path}:{reader.line_num}: expected {len(header)} fields like the header, got {len(row)}"
                    )
                yield f"{path}:{reader.line_num}", dict(zip(header, row))

    yield from _decode_guard(path, gen)


def _iter_parquet(path: Path):
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise DataError(f"{path}: cannot read Parquet file: {_first_line(exc)}") from None
    row = 0
    batches = pf.iter_batches(batch_size=4096)
    while True:
        # A file with a sound footer can still hold corrupt pages, which fail only when read; only the reading is
        # guarded here, not the consumer of the records.
        try:
            batch = next(batches, None)
            recs = batch.to_pylist() if batch is not None else []
        except Exception as exc:
            raise DataError(f"{path}: cannot read Parquet file past row {row}: {_first_line(exc)}") from None
        if batch is None:
            return
        for rec in recs:
            row += 1
            yield f"{path}: row {row}", rec


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def require_column(where: str, rec: dict, column: str, *, role: str = "text") -> object:
    if column not in rec:
        have = ", ".join(repr(k) for k in rec) or "none"
        raise DataError(f"{where}: no {role} column '{column}' (columns: {have})")
    return rec[column]


def text_field(where: str, rec: dict, column: str, role: str) -> str:
    """A required text column of a record, as a string (numbers are taken as their text)."""
    value = require_column(where, rec, column, role=role)
    # A missing value is null in JSON and Parquet, and NaN in a float column written by pandas: never text.
    if value is None or (isinstance(value, float) and value != value):
        raise DataError(f"{where}: {role} column '{column}' is empty ({'null' if value is None else 'NaN'})")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise DataError(f"{where}: {role} column '{column}' must hold text, got {type(value).__name__}")
    return value


def read_examples(files: list[str], normalize, d) -> tuple[list[dict], list[str]]:
    """Every record of `files` normalized by a task (which names the file, row and column of a bad one)."""
    examples, where = [], []
    for name in files:
        for loc, rec in iter_records(Path(name), txt_documents=d.txt_documents):
            examples.append(normalize(loc, rec, d))
            where.append(loc)
    if not examples:
        raise DataError(f"{', '.join(files)}: no records")
    return examples, where


# ------------------------------------------------------------------------------------------------- text corpus


def _text_generator(files: list[str], column: str, txt_documents: str):
    for name in files:
        for where, rec in iter_records(Path(name), txt_documents=txt_documents):
            value = require_column(where, rec, column)
            if value is None:
                continue
            if not isinstance(value, str):
                raise DataError(f"{where}: column '{column}' must hold text, got {type(value).__name__}")
            if value.strip():
                yield {"text": value}


def load_text(files: list[str], *, column: str, txt_documents: str, cache_dir: Path):
    """Documents of local files as a `datasets.Dataset` with one `text` column (written to Arrow in chunks)."""
    import datasets

    for name in files:
        check_file(Path(name))
        file_format(Path(name))
    # Errors raised inside the generator surface wrapped by datasets; unwrap them to our one-line form.
    try:
        ds = datasets.Dataset.from_generator(
            _text_generator,
            gen_kwargs={"files": list(files), "column": column, "txt_documents": txt_documents},
            features=datasets.Features({"text": datasets.Value("string")}),
            cache_dir=str(cache_dir),
        )
    except Exception as exc:  # noqa: BLE001 - unwrap DataError from the builder's wrapper
        inner = exc
        while inner is not None and not isinstance(inner, DataError):
            inner = inner.__cause__ or inner.__context__
        if isinstance(inner, DataError):
            raise inner from None
        if "corresponds to no data" in str(exc):  # the generator yielded nothing: an empty corpus
            return datasets.Dataset.from_dict({"text": []}, features=datasets.Features({"text": datasets.Value("string")}))
        raise
    return ds


def load_hub_text(dataset_id: str, config: str, column: str, cache_dir: Path):
    import datasets

    try:
        ds = datasets.load_dataset(dataset_id, config or None, split="train", cache_dir=str(cache_dir))
    except Exception as exc:  # noqa: BLE001 - hub errors come in many types; one line is what the user needs
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"hub dataset {dataset_id!r}: cannot load: {first}") from None
    if column not in ds.column_names:
        raise DataError(f"hub dataset {dataset_id!r}: no text column '{column}' (columns: {ds.column_names})")
    return ds.select_columns([column]).rename_column(column, "text") if column != "text" else ds


# -------------------------------------------------------------------------------------------- tokenize and pack
#
# Documents are read from the Arrow table a record batch at a time (DOCS_PER_TASK documents) and tokenized in
# worker processes by the Rust tokenizer's batch encoder; each batch comes back as one flat array of compact integers
# (`token_dtype`: uint16 when every id fits, else uint32) holding each document's ids followed by EOS. Packing cuts
# that stream into blocks with numpy and writes them as Arrow list arrays, carrying the remainder from one array to
# the next. No token goes through a Python list of lists after the encoder, and memory holds a few batches in
# flight whatever the size of the corpus.

DOCS_PER_TASK = 1000  # documents per worker task: about 0.1-0.3 s of tokenizing for documents of a few hundred words


def token_dtype(tokenizer):
    """The integer type packed blocks are stored as: uint16 when every token id of `tokenizer` fits, else uint32."""
    import numpy as np

    top = max(len(tokenizer), max(tokenizer.get_vocab().values(), default=0) + 1)
    return np.dtype(np.uint16) if top <= 1 << 16 else np.dtype(np.uint32)


def _eos_id(tokenizer) -> int:
    if tokenizer.eos_token_id is None:
        raise DataError("the tokenizer has no EOS token; set tokenizer.eos_token or use another tokenizer")
    return tokenizer.eos_token_id


class _Encoder:
    """Tokenizes a list of documents into one flat array, each document's ids then EOS: the ids of
    `tokenizer(texts, add_special_tokens=False)` taken from the Rust tokenizer directly, without offsets, attention
    masks or a BatchEncoding."""

    def __init__(self, tokenizer):
        from tokenizers import Tokenizer

        self.eos = _eos_id(tokenizer)
        self.dtype = token_dtype(tokenizer)
        # A copy set up the way `tokenizer(...)` sets its backend before encoding: no truncation, no padding, the
        # text of special tokens split or not as the tokenizer says.
        backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        backend.no_truncation()
        backend.no_padding()
        backend.encode_special_tokens = bool(getattr(tokenizer, "split_special_tokens", False))
        self.backend = backend

    def __call__(self, texts: list[str]):
        """(flat ids, per-document lengths with the EOS counted)."""
        from itertools import chain

        import numpy as np

        encode = getattr(self.backend, "encode_batch_fast", self.backend.encode_batch)  # _fast: no offsets
        ids = [e.ids for e in encode(texts, add_special_tokens=False)]
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids)) + 1
        flat = np.full(int(lengths.sum()), self.eos, dtype=self.dtype)
        body = np.ones(len(flat), dtype=bool)
        body[np.cumsum(lengths) - 1] = False
        flat[body] = np.fromiter(chain.from_iterable(ids), dtype=self.dtype, count=len(flat) - len(ids))
        return flat, lengths


_worker_encoder = None  # the _Encoder of a worker process


def _worker_start(encoder) -> None:
    import signal

    global _worker_encoder
    # Ctrl-C and termination are the parent's to handle (it stops the workers); a worker printing its own
    # KeyboardInterrupt traceback would break the one-line error contract.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _worker_encoder = encoder


def _worker_encode(texts: list[str]):
    return _worker_encoder(texts)


def workers(num_proc: int, documents: int | None) -> int:
    """Worker processes worth starting: at most `num_proc` and the CPUs this process may use, and no more than
    there are batches of documents (1: tokenize in this process)."""
    import os

    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    n = min(num_proc, cpus)
    if documents is not None:
        n = min(n, -(-documents // DOCS_PER_TASK))
    return max(1, n)


def encode_batches(text_batches, tokenizer, *, num_proc: int = 1):
    """(flat ids, document lengths) for each list of documents of `text_batches`, in order, as `_Encoder` makes
    them. With num_proc > 1 the batches are tokenized in that many worker processes, forked (the tokenizer is not
    pickled; each worker tokenizes on one thread), at most two batches per worker in flight. A worker that dies
    (killed for memory) is a DataError, not a hang."""
    import gc
    import multiprocessing
    import os
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    encoder = _Encoder(tokenizer)
    if num_proc <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        for texts in text_batches:
            yield encoder(texts)
        return
    # Set across the fork only: one Rust thread per worker, and no warning from tokenizers about forking a process
    # whose thread pool has run (BPE training runs it).
    unset = "TOKENIZERS_PARALLELISM" not in os.environ
    if unset:
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    # The objects that exist now are left out of the workers' garbage collections, which would otherwise write to
    # (and so copy) every page of the parent's heap that the fork shares with them.
    gc.freeze()
    pool = ProcessPoolExecutor(num_proc, mp_context=multiprocessing.get_context("fork"), initializer=_worker_start,
                               initargs=(encoder,))
    try:
        pool.submit(int).result()  # with fork, the first task starts every worker: here, inside this window
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        gc.unfreeze()
        if unset:
            del os.environ["TOKENIZERS_PARALLELISM"]
    try:
        pending = deque()
        for texts in text_batches:
            pending.append(pool.submit(_worker_encode, texts))
            if len(pending) > 2 * num_proc:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    except BrokenProcessPool:
        raise DataError(f"a tokenizer worker process died (out of memory?); set data.num_proc below {num_proc} "
                        "or give the machine more memory") from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def text_batches(ds, rows: int | None = None):
    """The `text` column of a Dataset as lists of strings, `rows` (DOCS_PER_TASK) documents at a time, read as
    Arrow record batches (`column_batches`)."""
    for texts in column_batches(ds, "text", rows or DOCS_PER_TASK):
        yield texts.to_pylist()


def _block_schema(dtype):
    import pyarrow as pa

    return pa.schema([("input_ids", pa.list_(pa.from_numpy_dtype(dtype)))])


def _list_batch(values, offsets, schema):
    import numpy as np
    import pyarrow as pa

    arr = pa.ListArray.from_arrays(pa.array(np.asarray(offsets, dtype=np.int32)), pa.array(values))
    return pa.record_batch([arr], schema=schema)


def _write_blocks(arrays, block_size: int, out_file: Path, dtype) -> dict:
    """Cut a stream of flat token arrays into blocks of `block_size`, carrying the remainder from one array to the
    next, and write them to an Arrow stream file with one `input_ids` column (lists of `dtype`). The last block
    holds the remainder and may be shorter (the collator pads it and masks the padding out of the loss), so every
    token appears exactly once."""
    import numpy as np
    import pyarrow as pa

    dtype = np.dtype(dtype)
    schema = _block_schema(dtype)
    carry = np.empty(0, dtype=dtype)
    n_tokens = n_blocks = 0
    with pa.OSFile(str(out_file), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        for values in arrays:
            values = np.asarray(values).astype(dtype, copy=False)
            n_tokens += len(values)
            if len(carry):
                values = np.concatenate([carry, values])
            full = len(values) // block_size * block_size
            if full:
                writer.write_batch(_list_batch(values[:full], np.arange(0, full + 1, block_size), schema))
                n_blocks += full // block_size
            carry = values[full:].copy()
        if len(carry):
            writer.write_batch(_list_batch(carry, [0, len(carry)], schema))
            n_blocks += 1
    return {"tokens": int(n_tokens), "blocks": int(n_blocks)}


def tokenize_and_pack(batches, tokenizer, block_size: int, out_file: Path, *, num_proc: int = 1,
                      progress=None) -> dict:
    """Tokenize lists of documents (EOS after each) and pack the tokens into blocks of `block_size` in `out_file`,
    in one pass and without a tokenized copy of the corpus: {"tokens", "blocks"}. `progress(n)` is called with the
    number of documents of each batch done."""

    def flats():
        for flat, lengths in encode_batches(batches, tokenizer, num_proc=num_proc):
            if progress is not None:
                progress(len(lengths))
            yield flat

    return _write_blocks(flats(), block_size, out_file, token_dtype(tokenizer))


def tokenize(ds, tokenizer, *, num_proc: int, desc: str = ""):
    """Tokenize documents and append EOS to each, so packed blocks keep document boundaries visible: a Dataset with
    one `input_ids` list (of `token_dtype`) per document, memory-mapped from a file in datasets' temporary cache
    directory. `tokenize_and_pack` does both steps in one pass; this is for callers that need the documents."""
    import os

    import datasets
    import numpy as np
    import pyarrow as pa
    from datasets.fingerprint import get_temporary_cache_files_directory

    schema = _block_schema(token_dtype(tokenizer))
    fd, name = tempfile.mkstemp(prefix="tokenized-", suffix=".arrow", dir=get_temporary_cache_files_directory())
    os.close(fd)
    with pa.OSFile(name, "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        for flat, lengths in encode_batches(text_batches(ds), tokenizer, num_proc=workers(num_proc, len(ds))):
            writer.write_batch(_list_batch(flat, np.concatenate([[0], np.cumsum(lengths)]), schema))
    return datasets.Dataset.from_file(name)


def pack(tokenized, block_size: int, out_file: Path, progress=None) -> dict:
    """Concatenate the token sequences of a tokenized Dataset (an `input_ids` column) and cut them into blocks of
    `block_size`, streaming, into an Arrow stream file as `_write_blocks` does. The blocks keep the column's
    integer type when it is unsigned (what `tokenize` writes), else they are int32."""
    import numpy as np
    import pyarrow as pa

    value_type = tokenized.data.schema.field("input_ids").type.value_type
    dtype = np.dtype(value_type.to_pandas_dtype()) if pa.types.is_unsigned_integer(value_type) else np.dtype(np.int32)

    def arrays():
        for table in tokenized.with_format("arrow").iter(batch_size=10_000):
            yield table.column("input_ids").combine_chunks().flatten().to_numpy(zero_copy_only=False)
            if progress is not None:
                progress(len(table))

    return _write_blocks(arrays(), block_size, out_file, dtype)


def token_counts(blocks, vocab_size: int):
    """How often each token id occurs in a split of packed blocks (a numpy array of `vocab_size` floats)."""
    import numpy as np

    counts = np.zeros(vocab_size, dtype=np.float64)
    for column in column_batches(blocks, "input_ids", 1000):
        vals = column.flatten().to_numpy(zero_copy_only=False)
        counts += np.bincount(vals, minlength=vocab_size)[:vocab_size]
    return counts


def column_batches(ds, column: str, rows: int):
    """One column of a Dataset as Arrow arrays of `rows` rows (the last one shorter), in order.

    A Dataset that is exactly one Arrow file (packed blocks, a split saved with `save_to_disk`, documents read
    into the cache; no index mapping, no slice) is read with plain reads, a record batch at a time. Read through
    the memory map instead, every page read would stay in the process's resident memory until the end, so peak
    RSS would grow with the corpus."""
    import pyarrow as pa

    table = ds.data
    replays = getattr(table, "replays", None)
    whole_file = (getattr(ds, "_indices", None) is None and getattr(table, "path", None) and replays is not None
                  and all(op in ("replace_schema_metadata", "select") for op, _, _ in replays))
    if whole_file:
        try:
            reader = pa.ipc.open_stream(pa.OSFile(table.path))
        except (OSError, pa.ArrowInvalid):  # not an Arrow stream file: read through datasets
            reader = None
        if reader is not None:
            pending, n = [], 0  # the file's record batches, regrouped into `rows` rows
            with reader:
                for batch in reader:
                    values, start = batch.column(batch.schema.get_field_index(column)), 0
                    while start < len(values):
                        take = min(rows - n, len(values) - start)
                        pending.append(values.slice(start, take))
                        n, start = n + take, start + take
                        if n == rows:
                            yield pa.concat_arrays(pending) if len(pending) > 1 else pending[0]
                            pending, n = [], 0
            if pending:
                yield pa.concat_arrays(pending) if len(pending) > 1 else pending[0]
            return
    for part in ds.with_format("arrow").iter(batch_size=rows):
        yield part.column(column).combine_chunks()


def unigram_perplexity(counts, validation) -> float:
    """Perplexity of an add-one unigram model with these training counts, on the validation tokens that a causal
    LM predicts (every token of a block but the first)."""
    import numpy as np

    vocab_size = len(counts)
    logp = np.log((counts + 1.0) / (counts.sum() + vocab_size))
    nll, n = 0.0, 0
    for table in validation.with_format("arrow").iter(batch_size=10_000):
        for ids in table.column("input_ids").to_pylist():
            nll -= float(logp[np.asarray(ids[1:], dtype=np.int64)].sum())
            n += len(ids) - 1
    return float(np.exp(nll / max(n, 1)))


def unigram_baseline(train, validation, vocab_size: int) -> float:
    """Perplexity of an add-one unigram model fitted on the training blocks, on the validation tokens that a
    causal LM predicts (every token of a block but the first)."""
    return unigram_perplexity(token_counts(train, vocab_size), validation)


# ------------------------------------------------------------------------------------------------------- prepare


@dataclass(frozen=True)
class Prepared:
    train: Path
    validation: Path
    tokenizer: Path
    meta: dict
    cached: bool
    shards: tuple[Path, ...] = ()  # the training split as shards (RUN/data/shards/I-of-K/train, in order), if any


def file_digest(path: Path) -> str:
    return runs.sha256(path)


def cache_key(recipe) -> str:
    """Hash of everything the preprocessed data depends on: input content, tokenizer, settings."""
    d, t = recipe.data, recipe.tokenizer
    for name in (*d.train_files, *d.validation_files):
        check_file(Path(name))
        file_format(Path(name))
    tok_source = tokenizer_source(recipe)
    if tok_source and Path(tok_source).is_dir():
        from llmctl.tokenizer import file_digest as tokenizer_digest

        tok_id = {"dir": tokenizer_digest(Path(tok_source))}
    elif tok_source:
        tok_id = {"hub": tok_source}
    else:
        tok_id = {"train": t.model_dump(exclude={"path"})}
    parts = {
        "format": FORMAT_VERSION,
        "train": [file_digest(Path(p)) for p in d.train_files],
        "validation": [file_digest(Path(p)) for p in d.validation_files],
        "hub": [d.hub_dataset, d.hub_config],
        "settings": d.model_dump(include={"text_column", "txt_documents", "validation_fraction", "block_size",
                                          "streaming"}),
        "tokenizer": tok_id,
        "seed": recipe.seed,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def tokenizer_source(recipe) -> str:
    """Where the tokenizer comes from: tokenizer.path, else model.path, else '' (train one)."""
    return recipe.tokenizer.path or recipe.model.path


def cached(recipe, run: runs.Run) -> Prepared | None:
    meta_path = run.data / "meta.json"
    if not meta_path.exists():
        return None
    try:
        meta = runs.read_json(meta_path)
    except (OSError, ValueError):
        return None
    if meta.get("key") != cache_key(recipe):
        return None
    paths = (run.data / "train", run.data / "validation", run.tokenizer)
    if not all(p.is_dir() for p in paths):
        return None
    return Prepared(*paths, meta=meta, cached=True)


def _load_splits(recipe, work: Path):
    """The training and validation documents: the validation files, or a seeded share held out of the corpus."""
    d = recipe.data
    if d.hub_dataset:
        raw = load_hub_text(d.hub_dataset, d.hub_config, d.text_column or "text", work / "hub")
    else:
        raw = load_text(d.train_files, column=d.text_column or "text", txt_documents=d.txt_documents, cache_dir=work)
    if len(raw) == 0:
        raise DataError(f"{', '.join(d.train_files) or d.hub_dataset}: the corpus is empty (no text documents)")
    if d.validation_files:
        val_raw = load_text(d.validation_files, column=d.text_column or "text", txt_documents=d.txt_documents,
                            cache_dir=work)
        if len(val_raw) == 0:
            raise DataError(f"{', '.join(d.validation_files)}: the validation corpus is empty")
        return raw, val_raw
    if len(raw) < 2:
        raise DataError(
            f"{', '.join(d.train_files) or d.hub_dataset}: only one document; a validation split needs "
            "at least two (or set data.validation_files)"
        )
    try:
        split = raw.train_test_split(test_size=d.validation_fraction, seed=recipe.seed, shuffle=True)
    except ValueError:  # the held-out share leaves no training document, or rounds to none
        raise DataError(
            f"{', '.join(d.train_files) or d.hub_dataset}: {len(raw):,} documents are too few to hold out "
            f"data.validation_fraction = {d.validation_fraction} for validation and keep some for "
            "training; add data or pass --validation-data FILE"
        ) from None
    return split["train"], split["test"]


def _make_tokenizer(recipe, train_raw, console, say):
    """The recipe's tokenizer (tokenizer.path or model.path), or a byte-level BPE trained on the training split."""
    from llmctl import tokenizer as tok_mod

    source = tokenizer_source(recipe)
    if source:
        tok = tok_mod.load_for_encoding(source)  # without transformers (and torch) where it can
        say(f"preprocess: tokenizer from {source} ({len(tok)} tokens)")
        return tok
    t = recipe.tokenizer
    say(f"preprocess: training a byte-level BPE tokenizer (vocab {t.vocab_size}) on "
        f"{len(train_raw):,} documents")
    # The Rust trainer's bar draws on the terminal; piped, it would leave blank lines in the log.
    return tok_mod.train_for(t, tok_mod.batched_texts(train_raw),
                             show_progress=console is not None and console.is_terminal and not console.quiet)


def _tokenize_and_pack(split_ds, tok, split_name: str, recipe, work: Path, console):
    """Tokenize one split and pack it into `work/<split>.arrow` in one pass, in `data.num_proc` worker processes:
    (the packed blocks, {"tokens", "blocks"})."""
    import datasets
    from rich.progress import Progress

    d = recipe.data
    arrow_file = work / f"{split_name}.arrow"
    # Refreshed here rather than by rich's thread: the workers are forked, and a fork should copy no thread that
    # might hold the console's lock.
    with Progress(console=console, transient=True, disable=console is None, auto_refresh=False) as bar:
        task = bar.add_task(f"tokenize and pack {split_name}", total=len(split_ds))

        def advance(n: int) -> None:
            bar.advance(task, n)
            bar.refresh()

        packed = tokenize_and_pack(text_batches(split_ds), tok, d.block_size, arrow_file,
                                   num_proc=workers(d.num_proc, len(split_ds)), progress=advance)
    return datasets.Dataset.from_file(str(arrow_file)), packed


def prepare(recipe, run: runs.Run, console=None) -> Prepared:
    """Tokenizer + packed train/validation splits in the run directory, reusing them when nothing changed."""
    say = console.print if console is not None else (lambda *a, **k: None)
    hit = cached(recipe, run)
    if hit is not None:
        say(f"[green]preprocess:[/] cache hit ({hit.meta['key']}): {run.data} is up to date, nothing to do")
        return hit

    import datasets

    datasets.disable_caching()  # our own cache key decides reuse; no stale copies in ~/.cache
    key = cache_key(recipe)
    d = recipe.data
    started = time.perf_counter()
    run.root.mkdir(parents=True, exist_ok=True)
    work = runs.temp_dir(".preprocess-", run.root)  # and removes those a killed run left behind
    try:
        train_raw, val_raw = _load_splits(recipe, work)
        tok_tmp = work / "tokenizer"
        tok = _make_tokenizer(recipe, train_raw, console, say)
        tok.save_pretrained(tok_tmp)

        stats = {"documents": {"train": len(train_raw), "validation": len(val_raw)}}
        out = {}
        for split_name, split_ds in (("train", train_raw), ("validation", val_raw)):
            out[split_name], stats[split_name] = _tokenize_and_pack(split_ds, tok, split_name, recipe, work, console)
        if stats["train"]["tokens"] == 0:
            raise DataError("the training split has no tokens")
        stats["vocab_size"] = len(tok)
        stats["uniform_perplexity"] = float(len(tok))
        stats["unigram_perplexity"] = unigram_baseline(out["train"], out["validation"], len(tok))

        # Replace the old outputs only now that the new ones are complete.
        staged = work / "data"
        for split_name, ds in out.items():
            ds.save_to_disk(str(staged / split_name))
        meta = {
            "key": key,
            "format": FORMAT_VERSION,
            "block_size": d.block_size,
            "tokenizer": str(run.tokenizer),
            "seconds": round(time.perf_counter() - started, 2),
            **stats,
        }
        runs.write_json(staged / "meta.json", meta)
        for target, src in ((run.tokenizer, tok_tmp), (run.data, staged)):
            runs.remove(target)
            shutil.move(str(src), str(target))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    say(
        f"[green]preprocess:[/] {stats['documents']['train']:,} + {stats['documents']['validation']:,} documents, "
        f"{stats['train']['tokens']:,} + {stats['validation']['tokens']:,} tokens in blocks of {d.block_size}, "
        f"vocab {len(tok):,}; unigram baseline perplexity {stats['unigram_perplexity']:.1f} -> {run.data}"
    )
    return Prepared(run.data / "train", run.data / "validation", run.tokenizer, meta=meta, cached=False)


# ------------------------------------------------------------------------------------------------------- shards
#
# `preprocess --shard I/K` tokenizes and packs the I-th of K contiguous ranges of the training documents (in the
# order of the training split, after the validation documents are held out), so the K shards can be made by K
# independent jobs. Concatenated in order 1..K, their tokens are exactly the tokens of an unsharded run's training
# split; the blocks differ only where a shard ends (each shard packs its own documents, its last block shorter).
#
#   RUN/tokenizer/                 the same from every job: each trains it on the whole training split (BPE
#                                  training is deterministic) or loads tokenizer.path / model.path
#   RUN/data/validation            the validation split, where an unsharded run has it; written by shard 1 only
#   RUN/data/shards/I-of-K/        shard I: train (the packed blocks), token_counts.npy (token frequencies, for the
#                                  unigram baseline) and meta.json, written last: a shard is complete iff it exists


def parse_shard(spec: str) -> tuple[int, int]:
    """`I/K` (1-based) -> (I, K); ValueError with a one-line reason for anything else."""
    import re

    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", spec or "")
    if m is None:
        raise ValueError(f"--shard {spec!r}: expected I/K, the I-th of K shards, numbered from 1 (e.g. 1/4)")
    index, count = int(m.group(1)), int(m.group(2))
    if count < 1:
        raise ValueError(f"--shard {spec}: the number of shards must be at least 1")
    if not 1 <= index <= count:
        raise ValueError(f"--shard {spec}: the shard index must be between 1 and {count} (shards are numbered from 1)")
    return index, count


def shards_dir(run: runs.Run) -> Path:
    return run.data / "shards"


def shard_dir(run: runs.Run, index: int, count: int) -> Path:
    return shards_dir(run) / f"{index}-of-{count}"


def shard_range(n_docs: int, index: int, count: int) -> tuple[int, int]:
    """Documents [start, stop) of shard `index` (1-based) of `count`: contiguous, sizes differing by at most one."""
    return (index - 1) * n_docs // count, index * n_docs // count


def settings_key(recipe) -> str:
    """Hash of the settings the shards depend on besides the input files' content: what `pretrain` checks the
    shards against without reading the corpus."""
    d, t = recipe.data, recipe.tokenizer
    parts = {
        "format": FORMAT_VERSION,
        "settings": d.model_dump(include={"text_column", "txt_documents", "validation_fraction", "block_size",
                                          "streaming"}),
        "tokenizer": tokenizer_source(recipe) or t.model_dump(exclude={"path"}),
        "seed": recipe.seed,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _shard_key(base_key: str, index: int, count: int) -> str:
    return hashlib.sha256(f"{base_key}:{index}/{count}".encode()).hexdigest()[:16]


def _install_tokenizer(run: runs.Run, tok_tmp: Path) -> None:
    """Put this job's tokenizer at RUN/tokenizer. Every shard job makes the same one, so one already there with the
    same content is kept; another one (from other settings) is replaced. The rename is atomic: a job never sees
    half a tokenizer from another."""
    from llmctl.tokenizer import file_digest as tokenizer_digest

    mine = tokenizer_digest(tok_tmp)

    def same() -> bool:
        try:
            return run.tokenizer.is_dir() and tokenizer_digest(run.tokenizer) == mine
        except OSError:
            return False

    if same():
        return
    if run.tokenizer.exists():
        runs.remove(run.tokenizer)
    try:
        tok_tmp.rename(run.tokenizer)
    except OSError:  # another shard job installed it in the meantime
        if not same():
            raise DataError(f"{run.tokenizer}: another job wrote a different tokenizer while this shard was made; "
                            "run the shard jobs of one recipe in one run directory") from None


def prepare_shard(recipe, run: runs.Run, index: int, count: int, console=None) -> dict:
    """Tokenize and pack shard `index` of `count` of the training documents into RUN/data/shards/I-of-K (shard 1
    also writes RUN/data/validation); the tokenizer goes to RUN/tokenizer. Reuses a complete shard whose inputs and
    settings are unchanged. Returns the shard's meta.json."""
    from llmctl.tokenizer import file_digest as tokenizer_digest

    say = console.print if console is not None else (lambda *a, **k: None)
    base_key = cache_key(recipe)
    key = _shard_key(base_key, index, count)
    target = shard_dir(run, index, count)
    meta_path = target / "meta.json"
    try:
        old = runs.read_json(meta_path) if meta_path.exists() else None
    except (OSError, ValueError):
        old = None
    if (old is not None and old.get("key") == key and (target / "train").is_dir()
            and (index != 1 or (run.data / "validation").is_dir())
            and run.tokenizer.is_dir() and tokenizer_digest(run.tokenizer) == old.get("tokenizer_digest")):
        say(f"[green]preprocess:[/] cache hit ({key}): shard {index}/{count} in {target} is up to date, nothing to do")
        return old

    if (run.data / "train").is_dir():
        raise DataError(f"{run.data} holds an unsharded training split; make the shards in another run directory "
                        f"(--output-dir) or remove {run.data}")

    import datasets

    datasets.disable_caching()
    d = recipe.data
    started = time.perf_counter()
    target.mkdir(parents=True, exist_ok=True)
    work = runs.temp_dir(".preprocess-", target)  # and removes those a killed job left behind
    try:
        train_raw, val_raw = _load_splits(recipe, work)
        start, stop = shard_range(len(train_raw), index, count)
        if start == stop:
            raise DataError(f"--shard {index}/{count}: the training split has {len(train_raw):,} documents, fewer "
                            f"than {count} shards; use fewer shards")
        tok = _make_tokenizer(recipe, train_raw, console, say)
        tok_tmp = work / "tokenizer"
        tok.save_pretrained(tok_tmp)
        say(f"preprocess: shard {index}/{count}: training documents {start + 1:,} to {stop:,} of {len(train_raw):,}")
        splits = [("train", train_raw.select(range(start, stop)))]
        if index == 1:
            splits.append(("validation", val_raw))
        stats = {"documents": {"train": stop - start}}
        out = {}
        for split_name, split_ds in splits:
            out[split_name], stats[split_name] = _tokenize_and_pack(split_ds, tok, split_name, recipe, work, console)
        if index == 1:
            stats["documents"]["validation"] = len(val_raw)
        if stats["train"]["tokens"] == 0:
            raise DataError(f"--shard {index}/{count}: the shard has no tokens")

        import numpy as np

        staged = work / "shard"
        for split_name, ds in out.items():
            ds.save_to_disk(str(staged / split_name))
        np.save(staged / "token_counts.npy", token_counts(out["train"], len(tok)))
        meta = {
            "key": key,
            "base_key": base_key,
            "settings_key": settings_key(recipe),
            "format": FORMAT_VERSION,
            "shard": {"index": index, "count": count, "first_document": start, "documents": stop - start,
                      "training_documents": len(train_raw)},
            "block_size": d.block_size,
            "tokenizer_digest": tokenizer_digest(tok_tmp),
            "vocab_size": len(tok),
            "seconds": round(time.perf_counter() - started, 2),
            **stats,
        }
        _install_tokenizer(run, tok_tmp)
        # The shard is incomplete from here until its meta.json is back (the directory itself stays: it holds
        # this job's lock file).
        meta_path.unlink(missing_ok=True)
        moves = [(staged / "train", target / "train"), (staged / "token_counts.npy", target / "token_counts.npy")]
        if index == 1:
            moves.append((staged / "validation", run.data / "validation"))
        for src, dst in moves:
            runs.remove(dst)
            shutil.move(str(src), str(dst))
        runs.write_json(meta_path, meta)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    say(f"[green]preprocess:[/] shard {index}/{count}: {stop - start:,} documents, {stats['train']['tokens']:,} "
        f"tokens in {stats['train']['blocks']:,} blocks of {d.block_size}"
        + (f"; validation {stats['validation']['tokens']:,} tokens" if index == 1 else "") + f" -> {target}")
    return meta


def has_shards(run: runs.Run) -> bool:
    """Whether `pretrain` trains on shards: RUN/data/shards exists and there is no unsharded RUN/data/train."""
    return shards_dir(run).is_dir() and not (run.data / "train").is_dir()


def _spans(numbers: list[int]) -> str:
    """[1, 2, 3, 5] -> '1-3, 5'."""
    out, i = [], 0
    while i < len(numbers):
        j = i
        while j + 1 < len(numbers) and numbers[j + 1] == numbers[j] + 1:
            j += 1
        out.append(str(numbers[i]) if i == j else f"{numbers[i]}-{numbers[j]}")
        i = j + 1
    return ", ".join(out)


def prepared_shards(recipe, run: runs.Run) -> Prepared:
    """The complete set of shards in RUN/data/shards, checked without reading the corpus: all of 1..K present,
    made from the same inputs and settings as each other and as the recipe's settings, with RUN/tokenizer.
    Raises a one-line DataError naming the missing shards otherwise."""
    import re

    import numpy as np

    from llmctl.tokenizer import file_digest as tokenizer_digest

    where = shards_dir(run)
    found: dict[int, dict[int, Path]] = {}
    for p in sorted(where.iterdir()) if where.is_dir() else []:
        m = re.fullmatch(r"(\d+)-of-(\d+)", p.name)
        if m and p.is_dir():
            found.setdefault(int(m.group(2)), {})[int(m.group(1))] = p
    if not found:
        raise DataError(f"{where}: no shards; make them with `llmctl preprocess RECIPE --shard I/K` for I = 1..K")
    if len(found) > 1:
        raise DataError(f"{where}: shards of different counts ({', '.join(f'K={k}' for k in sorted(found))}); "
                        "remove the stale ones")
    count, dirs = next(iter(found.items()))
    metas = {}
    for i, p in dirs.items():
        try:
            meta = runs.read_json(p / "meta.json")
        except (OSError, ValueError):
            continue  # incomplete (its job died or is still working): counted as missing
        complete = (p / "train").is_dir() and (p / "token_counts.npy").is_file()
        if complete and (i != 1 or (run.data / "validation").is_dir()):  # shard 1 writes RUN/data/validation
            metas[i] = meta
    missing = [i for i in range(1, count + 1) if i not in metas]
    if missing:
        s = "s" if len(missing) > 1 else ""
        raise DataError(f"{where}: missing shard{s} {_spans(missing)} of {count}; make each with `llmctl preprocess "
                        f"RECIPE --shard I/{count}` before training")
    first = metas[1]
    for i in range(2, count + 1):
        if metas[i].get("base_key") != first.get("base_key"):
            raise DataError(f"{where}: shard {i} of {count} was made from other data or settings than shard 1; "
                            f"make it again (`llmctl preprocess RECIPE --shard {i}/{count}`)")
    if first.get("settings_key") != settings_key(recipe):
        raise DataError(f"{where}: the shards were made with other data, tokenizer or seed settings than this "
                        "recipe's; make them again with this recipe")
    if not run.tokenizer.is_dir() or tokenizer_digest(run.tokenizer) != first.get("tokenizer_digest"):
        raise DataError(f"{run.tokenizer}: not the tokenizer the shards were made with; make the shards again")
    validation = run.data / "validation"
    counts = sum(np.load(dirs[i] / "token_counts.npy") for i in range(1, count + 1))
    meta = {
        "key": first["base_key"],
        "format": FORMAT_VERSION,
        "block_size": first["block_size"],
        "tokenizer": str(run.tokenizer),
        "shards": count,
        "documents": {"train": sum(m["documents"]["train"] for m in metas.values()),
                      "validation": first["documents"]["validation"]},
        "train": {k: sum(m["train"][k] for m in metas.values()) for k in ("tokens", "blocks")},
        "validation": first["validation"],
        "vocab_size": first["vocab_size"],
        "uniform_perplexity": float(first["vocab_size"]),
        "unigram_perplexity": unigram_perplexity(counts, load_blocks(validation)),
    }
    paths = tuple(dirs[i] / "train" for i in range(1, count + 1))
    return Prepared(where, validation, run.tokenizer, meta=meta, cached=True, shards=paths)


@dataclass
class Share:
    """The shards one process of a multi-process run trains on, and the size every process samples per epoch."""

    shards: tuple[Path, ...]
    blocks: int  # in this process's shards
    smallest: int  # blocks of the smallest process's share: every process draws this many per epoch


def process_share(prepared: Prepared, rank: int, world: int) -> Share | None:
    """Process `rank` of `world` reads only the shards `rank*K//world .. (rank+1)*K//world - 1` (contiguous, each
    shard read by exactly one process), so no host needs the whole corpus. None when the split is not sharded
    or there are fewer shards than processes (then every process reads the whole split and Accelerate splits
    the batches)."""
    count = len(prepared.shards)
    if world < 2 or count < world:
        return None
    sizes = [runs.read_json(p.parent / "meta.json")["train"]["blocks"] for p in prepared.shards]
    shares = [range(r * count // world, (r + 1) * count // world) for r in range(world)]
    totals = [sum(sizes[i] for i in share) for share in shares]
    mine = shares[rank]
    return Share(tuple(prepared.shards[i] for i in mine), totals[rank], min(totals))


def load_train(prepared: Prepared):
    """The training blocks: the packed split, or the concatenation of the shards in order 1..K (memory-mapped)."""
    if not prepared.shards:
        return load_blocks(prepared.train)
    import datasets

    return datasets.concatenate_datasets([load_blocks(p) for p in prepared.shards])


def load_blocks(path: Path):
    import datasets

    return datasets.load_from_disk(str(path))


def text_blocks(files: list[str], tokenizer, block_size: int, *, txt_documents: str = "blank_line",
                column: str = "text"):
    """Tokenize and pack arbitrary text files (for `eval --data FILE`), in a temporary directory."""
    import datasets

    datasets.disable_caching()
    work = runs.temp_dir("llmctl-eval-")  # and removes those a killed eval left behind
    try:
        raw = load_text(files, column=column, txt_documents=txt_documents, cache_dir=work)
        if len(raw) == 0:
            raise DataError(f"{', '.join(files)}: no text documents")
        ids = tokenize(raw, tokenizer, num_proc=1, desc="tokenize")
        pack(ids, block_size, work / "blocks.arrow")
        return datasets.Dataset.from_file(str(work / "blocks.arrow")), work
    except BaseException:  # the caller removes it only once it has the blocks
        shutil.rmtree(work, ignore_errors=True)
        raise
