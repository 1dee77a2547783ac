"""`llmctl runs`: the runs under the runs root at a glance, and what differs between two of them.

    llmctl runs                    # a table: name, task, status, steps, best metric, wall time, path
    llmctl runs --json             # the same as a JSON list, with raw numbers
    llmctl runs --diff A B         # recipe keys, environment and results that differ between two runs

Only reads run directories; never writes to one. A run is any directory directly under the root that holds a
recipe.toml or a log.jsonl. A broken file in a run directory shows as `?` instead of stopping the listing.
"""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from llmctl import runs

DiffOpt = Annotated[
    Optional[tuple[str, str]],
    typer.Option("--diff", metavar="A B", show_default=False,
                 help="Show what differs between two runs (names under the root, or paths): recipe keys, "
                      "environment (package versions, device, data hashes) and results."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a JSON list instead of a table.")]
RootOpt = Annotated[
    Optional[Path],
    typer.Option("--root", help="The directory holding the runs \\[default: ./runs, or $LLMCTL_HOME/runs].",
                 show_default=False),
]

UNKNOWN = "?"  # a value that a broken file hides
MISSING = object()

# results.json keys left out of --diff: compared elsewhere, different on every run, or not results.
_NOT_COMPARED = {"environment", "recipe", "samples", "predictions", "wall_seconds", "train_seconds",
                 "tokens_per_sec", "mfu"}


def command(diff: DiffOpt = None, as_json: JsonOpt = False, root: RootOpt = None):
    """List the runs under the runs root, newest first, or compare two with --diff.

    One row a run: name, task, status (finished, running, interrupted at step N, prepared), steps, best metric,
    wall time and path. `--diff A B` prints the recipe keys, environment and results that differ.
    """
    base = runs.runs_root() if root is None else Path(root)
    if diff:
        left, right = (find_run(base, name) for name in diff)
        for line in diff_lines(left, right):
            print(line)
        return
    rows = [info for _, info in sorted(((modified(p), describe(p)) for p in run_dirs(base)),
                                       key=lambda item: item[0], reverse=True)]
    if as_json:
        # Raw values for scripts: a value a broken file hides is null here, and its file is named in "unreadable".
        print(json.dumps([{k: (None if v == UNKNOWN else v) for k, v in row.items()} for row in rows],
                         indent=2, ensure_ascii=False))
    elif not rows:
        print(f"no runs under {base}")
    else:
        _print_table(rows)


# ----------------------------------------------------------------------------------------------------- reading


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and ((path / "recipe.toml").is_file() or (path / "log.jsonl").is_file())


def run_dirs(base: Path) -> list[Path]:
    try:
        return [p for p in Path(base).iterdir() if is_run_dir(p)]
    except OSError:  # no root yet
        return []


def modified(path: Path) -> float:
    """When a run last changed: the newest of the directory and the files training rewrites."""
    times = []
    for p in (path, path / "recipe.toml", path / "log.jsonl", path / "results.json", path / "checkpoints"):
        try:
            times.append(p.stat().st_mtime)
        except OSError:
            pass
    return max(times, default=0.0)


def _read_json(path: Path) -> Any:
    """The file's JSON; None when it does not exist, UNKNOWN when it cannot be read or parsed."""
    if not path.exists():
        return None
    try:
        return runs.read_json(path)
    except (OSError, ValueError):
        return UNKNOWN


def _read_toml(path: Path) -> Any:
    if not path.exists():
        return None
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # TOMLDecodeError and UnicodeDecodeError are ValueErrors
        return UNKNOWN


def _iso(timestamp: float) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(timestamp).astimezone().isoformat(timespec="seconds")


def _number(value) -> float | int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if not isinstance(value, float) or math.isfinite(value) else None


def pick_metric(metrics: dict, name: str) -> float | None:
    """A metric value by its full name (`rouge.rougeL`), or by its last part when that is unambiguous."""
    if _number(metrics.get(name)) is not None:
        return metrics[name]
    hits = [v for k, v in metrics.items() if k.split(".", 1)[-1] == name and _number(v) is not None]
    return hits[0] if len(hits) == 1 else None


def describe(path: Path) -> dict:
    """One run as a dict of raw values: name, task, status (finished, running, interrupted, prepared: only data,
    new: only a recipe), pid (running), step (the last one logged, or results.json's steps), max_steps (the
    recipe's), checkpoint_step (the latest complete checkpoint), best_metric and best_value, wall_seconds
    (results.json's, else the log's last `elapsed`), path, modified, unreadable (broken files). UNKNOWN marks a
    value that a broken file hides, None one that does not apply."""
    run = runs.Run(Path(path))
    recipe = _read_toml(run.recipe)
    results = _read_json(run.results)
    if results is not None and not isinstance(results, dict):  # valid JSON, but not results
        results = UNKNOWN
    records = runs.read_log(run.log)
    ckpt = run.latest_checkpoint()
    holder = runs.lock_holder(run)
    logged = [r["step"] for r in records if isinstance(r, dict) and _number(r.get("step")) is not None]
    last_step = max(logged) if logged else None
    elapsed = next((r["elapsed"] for r in reversed(records)
                    if isinstance(r, dict) and _number(r.get("elapsed")) is not None), None)

    task: Any = UNKNOWN
    max_steps: Any = UNKNOWN
    if isinstance(recipe, dict):
        task = recipe.get("task", "causal_lm")
        train = recipe.get("train")
        max_steps = train.get("max_steps") if isinstance(train, dict) else None
        max_steps = max_steps if _number(max_steps) is not None else None
    elif recipe is None:
        task, max_steps = "causal_lm", None
    if isinstance(results, dict) and isinstance(results.get("task"), str):
        task = results["task"]

    info: dict[str, Any] = {"name": run.root.name, "task": task, "status": None, "pid": None, "step": last_step,
                            "max_steps": max_steps, "checkpoint_step": ckpt[0] if ckpt else None,
                            "best_metric": None, "best_value": None, "wall_seconds": elapsed,
                            "path": str(run.root), "modified": _iso(modified(run.root)),
                            "unreadable": [p.name for p, v in ((run.recipe, recipe), (run.results, results))
                                           if v == UNKNOWN]}
    if holder is not None:
        info["status"], info["pid"] = "running", holder.get("pid", UNKNOWN)
    elif results is not None:
        info["status"] = "finished"
    elif ckpt or last_step is not None:
        info["status"] = "interrupted"
    elif run.data.exists():
        info["status"] = "prepared"
    else:
        info["status"] = "new"

    if results == UNKNOWN:
        info.update(step=UNKNOWN, best_metric=UNKNOWN, best_value=UNKNOWN, wall_seconds=UNKNOWN)
    elif isinstance(results, dict):
        info["step"] = results.get("steps") if _number(results.get("steps")) is not None else UNKNOWN
        if _number(results.get("wall_seconds")) is not None:
            info["wall_seconds"] = results["wall_seconds"]
        elif "wall_seconds" in results or elapsed is None:
            info["wall_seconds"] = UNKNOWN
        name = results.get("best_metric")
        if isinstance(name, str) and name:  # fine-tuning: the metric the best checkpoint was chosen by
            metrics = results.get("metrics")
            info["best_metric"] = name
            info["best_value"] = pick_metric(metrics, name) if isinstance(metrics, dict) else None
        elif "val_perplexity" in results:  # pretraining
            info["best_metric"] = "val_perplexity"
            info["best_value"] = results["val_perplexity"] if _number(results["val_perplexity"]) is not None \
                else None
    return info


# ----------------------------------------------------------------------------------------------------- showing


def format_seconds(seconds) -> str:
    """4.2 s, 42 s, 1 min 15 s, 2 h 5 min."""
    if _number(seconds) is None:
        return UNKNOWN if seconds == UNKNOWN else "-"
    if seconds < 10:
        return f"{seconds:.1f} s"
    total = int(round(seconds))
    if total < 60:
        return f"{total} s"
    if total < 3600:
        return f"{total // 60} min {total % 60} s"
    return f"{total // 3600} h {total % 3600 // 60} min"


def format_value(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 100 else f"{value:.2f}"
    return str(value)


def status_text(info: dict) -> str:
    status = info["status"]
    if status == "running":
        return f"running (pid {info['pid']})"
    if status == "interrupted":
        step = info["checkpoint_step"] if info["checkpoint_step"] is not None else info["step"]
        return f"interrupted at step {step}"
    return status


def steps_text(info: dict) -> str:
    step, max_steps = info["step"], info["max_steps"]
    if step is None:
        step = "-" if info["status"] in ("prepared", "new") else UNKNOWN
    return f"{step}/{max_steps}" if max_steps is not None else str(step)


def best_text(info: dict) -> str:
    if info["best_metric"] in (None, UNKNOWN):
        return info["best_metric"] or "-"
    value = info["best_value"]
    return f"{info['best_metric']}={format_value(value) if value is not None else UNKNOWN}"


def _print_table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for key in ("name", "task", "status", "steps", "best metric", "wall time"):
        table.add_column(key, no_wrap=True, justify="right" if key in ("steps", "wall time") else "left")
    table.add_column("path", no_wrap=True, overflow="fold")
    for info in rows:
        table.add_row(info["name"], str(info["task"]), status_text(info), steps_text(info), best_text(info),
                      format_seconds(info["wall_seconds"]), info["path"])
    console = Console(highlight=False)
    if not console.is_terminal:  # piped: whole lines, for grep and friends, not ones cut to 80 columns
        console = Console(highlight=False, width=max(console.width, 1000))
    console.print(table, markup=False)


# -------------------------------------------------------------------------------------------------------- diff


def find_run(base: Path, name: str) -> Path:
    """A run by its name under the runs root, or by its path."""
    candidates = [Path(base) / name, Path(name)]
    for path in candidates:
        if is_run_dir(path):
            return path
    raise runs.RunError(f"{name}: no run of that name under {base}, and not a run directory "
                        "(one with a recipe.toml or log.jsonl)")


def flatten(value, prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 1e-3}} -> {"train.lr": 1e-3}; lists and scalars are leaves."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def _show(value) -> str:
    if value is MISSING:
        return "(missing)"
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(value)


def changed(a: dict, b: dict) -> list[str]:
    """`key: old -> new` for every key whose value differs, keys on one side only shown as (missing)."""
    lines = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, MISSING), b.get(key, MISSING)
        if va is MISSING or vb is MISSING or type(va) is not type(vb) or va != vb:
            lines.append(f"{key}: {_show(va)} -> {_show(vb)}")
    return lines


def _load(path: Path, what: str, reader) -> tuple[dict | None, str | None]:
    data = reader(path)
    if data is None:
        return None, f"{path.parent.name} has no {what}"
    if not isinstance(data, dict):
        return None, f"{path.parent.name}: {what} cannot be read"
    return data, None


def diff_lines(left: Path, right: Path) -> list[str]:
    """What differs between two runs: recipe keys, then environment, then results; "no differences" if none."""
    lines = [f"A: {left}", f"B: {right}"]
    notes: list[str] = []
    sections: list[tuple[str, list[str]]] = []

    ra, na = _load(left / "recipe.toml", "recipe.toml", _read_toml)
    rb, nb = _load(right / "recipe.toml", "recipe.toml", _read_toml)
    notes += [n for n in (na, nb) if n]
    if ra is not None and rb is not None:
        sections.append(("recipe", changed(flatten(ra), flatten(rb))))

    xa, na = _load(left / "results.json", "results.json (unfinished run)", _read_json)
    xb, nb = _load(right / "results.json", "results.json (unfinished run)", _read_json)
    notes += [n for n in (na, nb) if n]
    if xa is not None and xb is not None:
        sections.append(("environment", changed(flatten(xa.get("environment") or {}),
                                                flatten(xb.get("environment") or {}))))

        def comparable(results: dict) -> dict:
            return {k: v for k, v in flatten({k: v for k, v in results.items() if k not in _NOT_COMPARED}).items()
                    if v is None or isinstance(v, (int, float, str, bool))}

        sections.append(("results", changed(comparable(xa), comparable(xb))))

    found = False
    for title, body in sections:
        if body:
            found = True
            lines.append(f"{title}:")
            lines += [f"  {line}" for line in body]
    lines += [f"note: {n}, so it is not compared" for n in notes]
    if not found:
        lines.append("no differences" + (" in what could be compared" if notes else ""))
    return lines
