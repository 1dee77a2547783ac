"""Fine-tuning data through `datasets`, prepared once per run and reused: records -> tokenizer -> spec -> features.

    runs/<name>/data/
      meta.json              what each stage was made from (content-hashed keys) and its counts
      records/train          normalized examples as Arrow (one JSON text per example, and its file:line)
      records/validation
      features/train         the tokenized training features (Arrow), made by `Dataset.map(batched=True)`
    runs/<name>/tokenizer/   the run's tokenizer, trained (or copied) once

Each stage has a key: a hash of what it depends on (the input files' content, the task and the column mapping;
then the tokenizer; then the model's family and context and the length settings). A stage whose key matches the
one in meta.json is reused and says so, so a rerun (`--overwrite`), a resume, `preprocess` followed by `finetune`,
and `eval` of the run read Arrow files instead of parsing and tokenizing again. Arrow files are memory-mapped:
the training split is never held as Python lists, so memory stays flat as the data grows. Records are stored as
JSON text rather than typed columns because tasks normalize to nested, sometimes mixed-type values (QA answers,
text or integer labels) that a schema inferred from the first rows would reject later.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from llmctl import data, runs

# Bump when the layout or the meaning of a stage changes, so old caches are rebuilt.
FORMAT_VERSION = 1
# Settings of the data section that do not change the records (lengths are keyed with the spec).
_NOT_RECORD_SETTINGS = {"max_source_length", "max_target_length", "prompt", "source_prefix", "doc_stride",
                        "block_size", "num_proc"}


class Records:
    """A split's normalized examples, memory-mapped from Arrow: indexable, iterable in file order, sized."""

    def __init__(self, ds, path: Path | None = None):
        self.ds = ds
        self.path = path  # where the cache lives, for the message about a damaged one

    def __len__(self) -> int:
        return len(self.ds)

    def _decode(self, i: int, text) -> dict:
        """One cached example; a damaged cache (edited, truncated, written by something else) is a one-line
        DataError naming the cache and the record, not a JSON traceback."""
        try:
            example = json.loads(text)
        except (TypeError, ValueError, RecursionError):
            example = None
        if not isinstance(example, dict):
            raise data.DataError(damaged(self.path, f"record {i + 1} is not a JSON object"))
        return example

    def __getitem__(self, i: int) -> dict:
        return self._decode(i, self.ds[i]["example"])

    def __iter__(self) -> Iterator[dict]:
        i = 0
        try:
            for batch in self.ds.iter(batch_size=1000):
                for text in batch["example"]:
                    yield self._decode(i, text)
                    i += 1
        except (OSError, KeyError) as exc:  # a truncated Arrow file fails only when read
            raise data.DataError(damaged(self.path, f"unreadable past record {i}: {data._first_line(exc)}")) from None

    def lists(self) -> tuple[list[dict], list[str]]:
        """(examples, where) in memory: for the validation split, which evaluation reads whole."""
        examples = list(self)
        where = [str(w) for w in self.ds["where"]]
        return examples, where


def damaged(path: Path | None, what: str) -> str:
    """The message for a damaged records cache: what is wrong, and how to get a sound one."""
    where = str(path) if path is not None else "the records cache"
    run = Path(path).parents[2] if path is not None and len(Path(path).parents) > 2 else None
    fix = (f"; rebuild it: `llmctl preprocess {run / 'recipe.toml'} -o {run}` (after deleting {run / 'data'})"
           if run is not None else "")
    return f"{where}: damaged cache: {what}{fix}"


@dataclass
class TaskData:
    train: Records
    validation: Records
    features: object  # datasets.Dataset of the training features
    tokenizer: object
    spec: object
    skipped: int
    cut: int
    reused: list[str]  # the stages found in the cache


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def records_key(recipe) -> str:
    """Inputs' content, the task, its column mapping and, for a held-out split, the seed that draws it."""
    d = recipe.data
    for name in (*d.train_files, *d.validation_files):
        data.check_file(Path(name))
        data.file_format(Path(name))
    return _digest({
        "format": FORMAT_VERSION,
        "task": recipe.task,
        "train": [data.file_digest(Path(p)) for p in d.train_files],
        "validation": [data.file_digest(Path(p)) for p in d.validation_files],
        "mapping": d.model_dump(exclude=_NOT_RECORD_SETTINGS | {"train_files", "validation_files"}),
        "seed": None if d.validation_files else recipe.seed,
    })


# ------------------------------------------------------------------------------------------------------ records


def _write_records(files: list[str], task, d, out_file: Path) -> tuple[int, list[str], str, int]:
    """Normalize and check every record of `files` into an Arrow stream file, a thousand at a time; returns
    (count, the first record's columns, its location, how many the task's check dropped)."""
    import pyarrow as pa

    schema = pa.schema([("example", pa.string()), ("where", pa.string())])
    checker = task.check()
    count, columns, first, rows = 0, [], "", ([], [])
    with pa.OSFile(str(out_file), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:

        def flush():
            if rows[0]:
                writer.write_batch(pa.record_batch([pa.array(rows[0]), pa.array(rows[1])], schema=schema))
                rows[0].clear()
                rows[1].clear()

        for name in files:
            for where, rec in data.iter_records(Path(name), txt_documents=d.txt_documents):
                if not first:
                    first, columns = where, list(rec)
                example = task.normalize(where, rec, d)
                if checker.keep(where, example):
                    rows[0].append(json.dumps(example, ensure_ascii=False))
                    rows[1].append(where)
                    count += 1
                    if len(rows[0]) >= 1000:
                        flush()
        flush()
    if not first:
        raise data.DataError(f"{', '.join(files)}: no records")
    return count, columns, first, checker.done()


def _same_columns(train: tuple[list[str], str], val: tuple[list[str], str]) -> None:
    (t_cols, t_where), (v_cols, v_where) = train, val
    if set(t_cols) != set(v_cols):
        missing = [c for c in t_cols if c not in v_cols]
        extra = [c for c in v_cols if c not in t_cols]
        parts = ([f"lacks {', '.join(map(repr, missing))}"] if missing else []) + \
                ([f"adds {', '.join(map(repr, extra))}"] if extra else [])
        raise data.DataError(f"{v_where}: the validation data's columns differ from the training data's "
                             f"({t_where.rsplit(':', 1)[0]}): it {' and '.join(parts)}")


def build_records(recipe, task, out: Path, work: Path) -> dict:
    """records/train and records/validation under `out`; the validation split is the recipe's validation files,
    or `data.validation_fraction` of the training records held out with the recipe's seed."""
    import datasets

    d = recipe.data
    if not d.train_files:
        raise data.DataError("data.train_files is empty: fine-tuning reads local files (pass --data FILE)")
    n, t_cols, t_where, skipped = _write_records(list(d.train_files), task, d, work / "train.arrow")
    everything = datasets.Dataset.from_file(str(work / "train.arrow"))
    if d.validation_files:
        n_val, v_cols, v_where, v_skipped = _write_records(list(d.validation_files), task, d, work / "val.arrow")
        _same_columns((t_cols, t_where), (v_cols, v_where))
        train, val = everything, datasets.Dataset.from_file(str(work / "val.arrow"))
        skipped += v_skipped
    else:
        held = max(1, round(n * d.validation_fraction))
        if n - held < 1:
            raise data.DataError(
                f"{t_where.rsplit(':', 1)[0]}: {n} record(s) are too few to hold out data.validation_fraction "
                f"= {d.validation_fraction} for validation and keep some for training; add data or pass "
                "--validation-data FILE")
        order = list(range(n))
        random.Random(recipe.seed).shuffle(order)
        train, val = everything.select(sorted(order[held:])), everything.select(sorted(order[:held]))
    if len(train) == 0:
        raise data.DataError(f"{', '.join(d.train_files)}: no training records are left after the task's checks")
    if len(val) == 0:
        raise data.DataError(f"{', '.join(d.validation_files)}: no validation records are left after the task's "
                             "checks")
    save(train, out / "records" / "train")
    save(val, out / "records" / "validation")
    return {"train": len(train), "validation": len(val), "skipped": skipped}


def save(ds, path: Path) -> None:
    """`save_to_disk` without its progress bar (a copy of what is already on disk, seconds at most)."""
    import datasets as bars

    was_on = not bars.are_progress_bars_disabled()
    bars.disable_progress_bars()
    try:
        ds.save_to_disk(str(path))
    finally:
        if was_on:
            bars.enable_progress_bars()


def load_records(path: Path) -> Records:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
        columns = ds.column_names
    except Exception as exc:  # noqa: BLE001 - datasets and pyarrow raise many types for a damaged directory
        raise data.DataError(damaged(path, f"cannot load it: {data._first_line(exc)}")) from None
    if not {"example", "where"} <= set(columns):
        raise data.DataError(damaged(path, f"columns {columns}, expected 'example' and 'where'"))
    return Records(ds, path)


# ----------------------------------------------------------------------------------------------------- features


def _features_batch(batch, task, tokenizer, spec):
    examples = [json.loads(text) for text in batch["example"]]
    rows, cut = task.features(examples, batch["where"], tokenizer, spec)
    out = {key: [row[key] for row in rows] for key in (rows[0] if rows else {})}
    # The batch's count of cut targets rides on its first row (summed afterwards, then dropped).
    out["_cut"] = [cut] + [0] * (len(rows) - 1) if rows else []
    return out


def build_features(train: Records, task, tokenizer, spec, num_proc: int, key: str, out: Path) -> dict:
    ds = train.ds
    # Worker processes pay off only on large splits: each needs its own copy of the tokenizer.
    procs = max(1, min(num_proc, len(ds) // 5_000))
    feats = ds.map(_features_batch, batched=True, batch_size=500, remove_columns=ds.column_names,
                   fn_kwargs={"task": task, "tokenizer": tokenizer, "spec": spec},
                   num_proc=procs if procs > 1 else None, new_fingerprint=key, desc="features")
    cut = int(sum(feats["_cut"]))
    save(feats.remove_columns("_cut"), out / "features" / "train")
    return {"rows": len(feats), "cut": cut}


# -------------------------------------------------------------------------------------------------- the stages


def _tokenizer_key(recipe, rkey: str) -> str:
    from llmctl.tokenizer import file_digest

    source = recipe.tokenizer.path or recipe.model.path
    if source and Path(source).is_dir():
        made_from = {"dir": file_digest(Path(source))}
    elif source:
        made_from = {"hub": source}
    else:  # trained on the training records
        made_from = {"records": rkey, "train": recipe.tokenizer.model_dump(exclude={"path"})}
    return _digest({"format": FORMAT_VERSION, "tokenizer": made_from})


def _make_tokenizer(recipe, task, train: Records, say):
    from llmctl import tokenizer as tok_mod

    source = recipe.tokenizer.path or recipe.model.path
    if source:
        tokenizer = tok_mod.load(source)
    else:
        t = recipe.tokenizer
        say(f"finetune: training a byte-level BPE tokenizer (vocab {t.vocab_size}) on {len(train):,} training "
            "examples")
        tokenizer = tok_mod.train_for(t, task.tokenizer_texts(train))
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise tok_mod.TokenizerError(f"{source}: the tokenizer has neither a pad nor an EOS token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _spec_key(recipe, tkey: str, rkey: str, family: str, context) -> str:
    d = recipe.data
    return _digest({
        "format": FORMAT_VERSION, "records": rkey, "tokenizer": tkey, "family": family, "context": context,
        "lengths": d.model_dump(include=_NOT_RECORD_SETTINGS - {"block_size", "num_proc"}),
        "max_new_tokens": recipe.generation.max_new_tokens,
    })


def prepare(recipe, task, run: runs.Run, shape, *, console=None) -> TaskData:
    """Records, tokenizer, spec and training features of a fine-tuning recipe in `run`, each reused when its
    key is unchanged. `shape(tokenizer)` gives the model's (family, context) without loading weights. Called by
    one process at a time (the main process first under several): the others find its cache."""
    import datasets

    from llmctl import tokenizer as tok_mod

    say = console.print if console is not None else (lambda *a, **k: None)
    datasets.disable_caching()  # the keys below decide reuse; no stale copies in ~/.cache
    started = time.perf_counter()
    meta_path = run.data / "meta.json"
    meta = _read_meta(run)
    reused: list[str] = []
    run.root.mkdir(parents=True, exist_ok=True)
    work = runs.temp_dir(".taskdata-", run.root)  # and removes those a killed run left behind
    try:
        # 1. records
        rkey = records_key(recipe)
        if meta.get("records", {}).get("key") == rkey and _sound(run.data / "records"):
            reused.append("records")
        else:
            staged = work / "data"
            counts = build_records(recipe, task, staged, work)
            runs.remove(run.data)
            run.data.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(staged), str(run.data))
            meta = {"format": FORMAT_VERSION, "task": recipe.task, "records": {"key": rkey, **counts}}
            runs.write_json(meta_path, meta)
        train = load_records(run.data / "records" / "train")
        val = load_records(run.data / "records" / "validation")

        # 2. tokenizer
        tkey = _tokenizer_key(recipe, rkey)
        if meta.get("tokenizer", {}).get("key") == tkey and (run.tokenizer / "tokenizer_config.json").exists():
            tokenizer = tok_mod.load(str(run.tokenizer))
            reused.append("tokenizer")
        else:
            tokenizer = _make_tokenizer(recipe, task, train, say)
            tmp = work / "tokenizer"
            tokenizer.save_pretrained(tmp)
            runs.remove(run.tokenizer)
            shutil.move(str(tmp), str(run.tokenizer))
            meta = {k: v for k, v in meta.items() if k not in ("spec", "features")}
            meta["tokenizer"] = {"key": tkey}
            runs.write_json(meta_path, meta)

        # 3. spec: how the model reads the task (needs the model's family and context, not its weights)
        from llmctl.tasks.base import Spec

        family, context = shape(tokenizer)
        skey = _spec_key(recipe, tkey, rkey, family, context)
        if meta.get("spec", {}).get("key") == skey:
            spec = Spec.from_info(meta["spec"]["info"])
            reused.append("spec")
        else:
            spec = task.spec(recipe, tokenizer, train, family, context, say)
            meta = {k: v for k, v in meta.items() if k != "features"}
            meta["spec"] = {"key": skey, "info": spec.to_info()}
            runs.write_json(meta_path, meta)

        # 4. training features
        fdir = run.data / "features" / "train"
        if meta.get("features", {}).get("key") == skey and fdir.is_dir():
            reused.append("features")
        else:
            counts = build_features(train, task, tokenizer, spec, recipe.data.num_proc, skey, work)
            runs.remove(run.data / "features")
            shutil.move(str(work / "features"), str(run.data / "features"))
            meta["features"] = {"key": skey, **counts, "seconds": round(time.perf_counter() - started, 2)}
            runs.write_json(meta_path, meta)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    features = datasets.load_from_disk(str(fdir))
    if reused:
        say(f"finetune: reused {', '.join(reused)} from {run.data} (unchanged inputs)")
    return TaskData(train=train, validation=val, features=features, tokenizer=tokenizer, spec=spec,
                    skipped=meta["records"]["skipped"], cut=meta["features"]["cut"], reused=reused)


def _sound(records: Path) -> bool:
    """Whether cached records load (a damaged cache, e.g. a file cut short by a full disk, is rebuilt)."""
    try:
        for split in ("train", "validation"):
            load_records(records / split)
    except data.DataError:
        return False
    return True


def _read_meta(run: runs.Run) -> dict:
    path = run.data / "meta.json"
    try:
        meta = runs.read_json(path) if path.exists() else {}
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) and meta.get("format") == FORMAT_VERSION else {}


def count_records(recipe, task, run: runs.Run) -> dict:
    """Training and validation record counts (for --dry-run): from the cache when it is current, else by reading
    and checking every record into a temporary directory."""
    import datasets

    records = _read_meta(run).get("records", {})
    if records.get("key") == records_key(recipe):
        return {**records, "cached": True}
    datasets.disable_caching()
    work = runs.temp_dir("llmctl-plan-")
    try:
        return {**build_records(recipe, task, work / "data", work), "cached": False}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def cached_validation(run_dir: Path) -> tuple[list[dict], list[str]] | None:
    """A finished run's validation split (for `eval` of the run): the Arrow records, or the validation.jsonl
    that runs made before this cache existed."""
    arrow = run_dir / "data" / "records" / "validation"
    if arrow.is_dir():
        return load_records(arrow).lists()
    old = run_dir / "data" / "validation.jsonl"
    if old.exists():
        return [rec for _, rec in data.iter_records(old)], [w for w, _ in data.iter_records(old)]
    return None
