"""`llmctl summarize`: read documents, generate summaries in length-sorted batches, write JSON Lines or text.

Documents are taken in chunks of a few batches per process; within a chunk generation sorts them by length, and
the chunk is written in input order, so the output is in input order whatever the number of processes
(`--num-processes N` shares every chunk among N processes). JSON Lines output is resumable: each line carries the
document's id, lines are appended and flushed chunk by chunk, and a rerun skips the ids already written. An
interruption loses at most the chunk in flight; a line torn by it is cut away on the next run, and complete
lines are never rewritten. Text output has no ids to resume from; it is written in input order at the end.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import TextIO

from llmctl.generation import GenerationSettings

DOCUMENT_SUFFIXES = (".txt", ".md")
DATASET_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")
FORMATS = ("jsonl", "text")
DEFAULT_MAX_NEW_TOKENS = 64
# Generation batches per process in one chunk of documents: more sorts lengths better, fewer loses less to an
# interruption.
CHUNK_BATCHES = 4


class SummarizeError(Exception):
    """Bad inputs, model or output file for summarize (one line)."""


# ------------------------------------------------------------------------------------------------------ inputs


def read_inputs(inputs: list[str], *, text_column: str = "text", id_column: str = "id",
                stdin: TextIO | None = None) -> list[dict]:
    """Documents as [{"id", "source"}] from files, folders, '-' (stdin) and dataset files, in the order given.

    A .txt/.md file is one document (id: the path as given); a folder holds every .txt/.md file below it
    (sorted; id: the path relative to the folder); '-' is all of stdin (id: "stdin"); a .jsonl/.json/.csv/.tsv/
    .parquet file has one document per record in `text_column` (id: `id_column` if present, else "<file>:<n>").
    """
    if not inputs:
        raise SummarizeError("no inputs: give files, a folder, '-' for stdin, or a JSONL file")
    docs: list[dict] = []
    for name in inputs:
        if name == "-":
            stream = stdin if stdin is not None else sys.stdin
            docs.append(_document("stdin", read_stdin(stream)))
            continue
        path = Path(name)
        if not path.exists():
            raise SummarizeError(f"{name}: no such file or folder")
        if path.is_dir():
            files = sorted((p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in DOCUMENT_SUFFIXES),
                           key=lambda p: p.relative_to(path).as_posix())
            if not files:
                raise SummarizeError(f"{name}: no .txt or .md files in this folder")
            docs.extend(_document(p.relative_to(path).as_posix(), _read_text(p, p.relative_to(path).as_posix()))
                        for p in files)
        elif path.suffix.lower() in DOCUMENT_SUFFIXES:
            docs.append(_document(name, _read_text(path, name)))
        elif path.suffix.lower() in DATASET_SUFFIXES:
            docs.extend(_dataset_documents(path, name, text_column, id_column))
        else:
            raise SummarizeError(
                f"{name}: unsupported input type {path.suffix or '(no suffix)'!r}; give .txt/.md files, a folder, "
                f"'-' for stdin, or a {'/'.join(DATASET_SUFFIXES)} file"
            )
    seen: dict[str, int] = {}
    for doc in docs:
        if doc["id"] in seen:
            raise SummarizeError(f"{doc['id']}: duplicate document id (resuming relies on unique ids)")
        seen[doc["id"]] = 1
    return docs


def read_stdin(stream) -> str:
    """All of stdin as UTF-8 text. The bytes are decoded here, strictly: Python's own stdin decoding depends on
    the locale and may smuggle undecodable bytes in as surrogates, which the tokenizer then fails on."""
    raw = stream.buffer.read() if hasattr(stream, "buffer") else stream.read()
    if isinstance(raw, str):  # a text stream without bytes underneath (tests, StringIO)
        try:
            raw = raw.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # a lone surrogate that no byte stands for: invalid as UTF-8 either way
            raw = raw.encode("utf-8", "surrogatepass")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        start = raw.rfind(b"\n", 0, exc.start) + 1
        column = len(raw[start:exc.start].decode("utf-8", "replace").removeprefix("\ufeff")) + 1
        raise SummarizeError(f"stdin:{line}: not valid UTF-8 text (column {column}, byte 0x{raw[exc.start]:02x}); "
                             "send UTF-8 text") from None


def _read_text(path: Path, doc_id: str) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SummarizeError(f"{doc_id}: not valid UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise SummarizeError(f"{doc_id}: cannot read: {exc.strerror or exc}") from None


def _document(doc_id: str, text: str) -> dict:
    if not text.strip():
        raise SummarizeError(f"{doc_id}: empty document")
    return {"id": doc_id, "source": text.strip()}


def _dataset_documents(path: Path, name: str, text_column: str, id_column: str) -> list[dict]:
    from llmctl import data

    docs = []
    columns: list[str] = []
    named = False
    for row, (where, rec) in enumerate(data.iter_records(path), 1):
        text = data.require_column(where, rec, text_column)
        if not isinstance(text, str):
            raise SummarizeError(f"{where}: column '{text_column}' must hold text, got {type(text).__name__}")
        columns = columns or list(rec)
        named = named or id_column in rec
        doc_id = rec.get(id_column)
        docs.append(_document(str(doc_id) if doc_id not in (None, "") else f"{name}:{row}", text))
    if docs and not named and id_column != "id":
        # The default "id" is optional (ids fall back to <file>:<n>); a column the user named must exist.
        raise SummarizeError(f"{path}: no record has the id column '{id_column}' (--id-column); columns: "
                             f"{', '.join(columns)}")
    return docs


# ------------------------------------------------------------------------------------------------------- model


def load_model(model_dir: str, device=None):
    """(model, tokenizer, task info) from a model directory, through the loader `eval` uses; the task info is
    config.llmctl, or {} for a model from elsewhere, which is taken for a summarizer."""
    loaded = _load(model_dir, device)
    return loaded.model, loaded.tokenizer, getattr(loaded.model.config, "llmctl", None) or {}


def _load(model_dir: str, device=None):
    from llmctl import evaluation, modeling
    from llmctl.data import DataError
    from llmctl.tokenizer import TokenizerError

    if not Path(model_dir).is_dir():
        raise SummarizeError(f"{model_dir}: model directory not found")
    try:
        loaded = evaluation.load_model_dir(model_dir, default_task="summarization", device=device)
    except (modeling.ModelError, TokenizerError, DataError) as exc:
        raise SummarizeError(str(exc)) from None
    if not loaded.task.generates:
        raise SummarizeError(f"{model_dir}: a {loaded.task.name} model does not generate text")
    return loaded


def default_settings(info: dict, overrides: dict | None = None) -> GenerationSettings:
    """Settings from the task info the model was saved with: max_new_tokens (else 64), max_source_length (else
    the model's context, less max_new_tokens for a causal LM), and any other GenerationSettings field it holds;
    then `overrides` (command-line flags; None values are ignored)."""
    known = GenerationSettings.field_names()
    unknown = sorted(set(overrides or {}) - set(known))
    if unknown:
        raise SummarizeError(f"unknown generation setting(s): {', '.join(unknown)} (known: {', '.join(known)})")
    values = {k: v for k, v in info.items() if k in known and v is not None}
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    values.setdefault("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)
    return GenerationSettings(**values)


# ------------------------------------------------------------------------------------------------------ output


def done_ids(output: Path) -> set[str]:
    """Ids already in a JSON Lines output. A last line without its newline that is not valid JSON was torn by an
    interruption (each line is written whole, newline last) and is cut off the file; complete lines are kept."""
    if not output.exists():
        return set()
    if output.is_dir():
        raise SummarizeError(f"{output}: is a folder, expected an output file")
    try:
        raw = output.read_bytes()
    except OSError as exc:
        raise SummarizeError(f"{output}: cannot read the output written so far: {exc.strerror or exc}") from None
    *complete, tail = raw.split(b"\n")
    ids: set[str] = set()
    for lineno, line in enumerate(complete, 1):
        if not line.strip():
            continue
        rec = _parse_line(line)
        if rec is None:
            raise SummarizeError(
                f"{output}:{lineno}: not a JSON line with an \"id\"; not an llmctl summarize output, refusing to "
                "append to it (choose another --output)"
            )
        ids.add(str(rec["id"]))
    if tail.strip():
        rec = _parse_line(tail)
        if rec is None:
            with open(output, "r+b") as f:
                f.truncate(len(raw) - len(tail))
        else:
            ids.add(str(rec["id"]))
            with open(output, "ab") as f:  # a whole line that only lacks its newline: end it before appending
                f.write(b"\n")
    return ids


def _parse_line(line: bytes) -> dict | None:
    try:
        rec = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return rec if isinstance(rec, dict) and "id" in rec else None


def _format_line(doc: dict, summary: str, fmt: str) -> str:
    if fmt == "jsonl":
        return json.dumps({"id": doc["id"], "source": doc["source"], "summary": summary}, ensure_ascii=False)
    return " ".join(summary.splitlines())


# ------------------------------------------------------------------------------------------------------- run


def run_summarize(model_dir: str, inputs: list[str], *, output: Path | None, fmt: str = "jsonl",
                  settings: GenerationSettings | None, text_column: str = "text", id_column: str = "id",
                  console=None, stdin: TextIO | None = None, overrides: dict | None = None) -> dict:
    """Summarize `inputs` with the model in `model_dir` on every launched process; returns {"done", "skipped",
    "output", "capped", "warning"} (the warning, if any, is also printed).

    The main process reads the inputs and the output written so far and shares them; documents are then taken
    in chunks, every process generates for its share of a chunk, and the main process writes the chunk in input
    order. `settings` None means the model's own (default_settings), with `overrides` applied on top.
    """
    import torch
    from accelerate import Accelerator

    from llmctl import evaluation, generation
    from llmctl.data import DataError
    from llmctl.tasks.generative import model_inputs

    if fmt not in FORMATS:
        raise SummarizeError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    main = accelerator.is_main_process
    output = Path(output) if output is not None else None
    docs, skip = _on_main(accelerator, lambda: _read(inputs, output, fmt, text_column, id_column, stdin))
    todo = [d for d in docs if d["id"] not in skip]
    result = {"done": 0, "skipped": len(docs) - len(todo), "output": str(output) if output else None,
              "capped": 0, "warning": None}
    if not main:
        console = None
    if not todo:  # nothing to do: do not even load the model
        _say(console, f"summarize: all {len(docs)} documents are already in {output}; nothing to do")
        return result

    loaded = _load(model_dir, accelerator.device)
    model, tokenizer = loaded.model, loaded.tokenizer
    info = getattr(model.config, "llmctl", None) or {}
    if settings is None:  # the run's [generation] settings when the model comes from a run; flags on top
        settings = (evaluation.generation_settings(loaded.recipe.generation, loaded.spec, **(overrides or {}))
                    if loaded.recipe is not None else default_settings(info, overrides))
    spec = dataclasses.replace(loaded.spec, max_new_tokens=settings.max_new_tokens)
    if settings.max_source_length:
        spec = dataclasses.replace(spec, max_source_length=settings.max_source_length)
    try:
        texts = model_inputs([{"source": d["source"]} for d in todo], tokenizer, spec)
    except DataError as exc:  # a prompt without {source}
        raise SummarizeError(f"{model_dir}: config llmctl.prompt: {exc}") from None
    if skip:
        _say(console, f"summarize: {result['skipped']} of {len(docs)} documents already in {output}; "
                      f"{len(todo)} to go")

    from rich.progress import Progress

    summaries: list[str | None] = [None] * len(todo)
    out_file = None
    if output is not None and main:
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
            out_file = open(output, "a" if fmt == "jsonl" else "w", encoding="utf-8")
        except OSError as exc:
            raise SummarizeError(f"{output}: cannot write the summaries: {exc.strerror or exc}") from None
    chunk = settings.batch_size * accelerator.num_processes * CHUNK_BATCHES
    synced = evaluation.sharded(accelerator)

    def run_chunk(positions: list[int]) -> list[tuple[str, bool]]:
        report = generation.generate(model, tokenizer, [texts[i] for i in positions], settings,
                                     synced_gpus=synced)
        return list(zip(report.outputs, report.flags))

    try:
        show = console is not None and console.is_terminal
        with Progress(console=console, transient=True, disable=not show) as bar:
            task = bar.add_task("summarize", total=len(todo))
            for start in range(0, len(todo), chunk):
                positions = list(range(start, min(start + chunk, len(todo))))
                lines = []
                for i, (summary, capped) in zip(positions, evaluation.shard_map(accelerator, positions, run_chunk)):
                    summaries[i] = summary
                    result["capped"] += capped
                    if fmt == "jsonl":
                        lines.append(_format_line(todo[i], summary, fmt))
                result["done"] += len(positions)
                if lines and main:
                    _emit(lines, out_file, console)
                bar.advance(task, len(positions))
        if fmt == "text" and main:  # no ids in text: the order of lines is the only link to the inputs
            _emit([_format_line(d, s, fmt) for d, s in zip(todo, summaries)], out_file, console)
    finally:
        if out_file is not None:
            out_file.close()

    report = generation.GenerationReport(outputs=summaries, capped=result["capped"], total=len(todo))
    warning = generation.cap_warning(report, settings.max_new_tokens)
    if warning:
        result["warning"] = warning
        # With the summaries on stdout, the warning goes to stderr so that the JSON Lines stay parseable.
        if console is not None and output is not None:
            console.print(f"[yellow]warning:[/] {warning}", soft_wrap=True, highlight=False)
        elif main:
            print(f"warning: {warning}", file=sys.stderr)
    return result


def _read(inputs, output, fmt, text_column, id_column, stdin) -> tuple[list[dict], set[str]]:
    docs = read_inputs(inputs, text_column=text_column, id_column=id_column, stdin=stdin)
    skip: set[str] = set()
    if output is not None:
        if fmt == "jsonl":
            skip = done_ids(output)
        elif output.exists() and (output.is_dir() or output.stat().st_size > 0):
            raise SummarizeError(
                f"{output}: already exists; text output cannot be resumed (it holds no ids): remove it, or use "
                "--format jsonl"
            )
    return docs, skip


def _on_main(accelerator, fn):
    """fn() on the main process (stdin and the output file are read once), its result or its error shared."""
    if accelerator.num_processes == 1:
        return fn()
    from accelerate.utils import broadcast_object_list

    payload, error = [None], None
    if accelerator.is_main_process:
        try:
            payload = [("ok", fn())]
        except Exception as exc:  # shared before raising, so that no process waits for the broadcast forever
            payload, error = [("error", str(exc))], exc
    broadcast_object_list(payload)
    kind, value = payload[0]
    if error is not None:
        raise error
    if kind == "error":
        raise SummarizeError(value)
    return value


def _emit(lines: list[str], out_file, console) -> None:
    if out_file is not None:
        out_file.write("".join(line + "\n" for line in lines))
        out_file.flush()
        os.fsync(out_file.fileno())  # a finished batch survives a crash or power loss, not only Ctrl-C
        return
    for line in lines:
        if console is not None:
            console.print(line, markup=False, highlight=False, soft_wrap=True)
        else:
            print(line, flush=True)


def _say(console, message: str) -> None:
    if console is not None:
        console.print(message, markup=False, highlight=False)
