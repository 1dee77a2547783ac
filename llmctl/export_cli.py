"""`llmctl export RUN --to DIR`: a finished run's model, tokenizer and model card in a clean directory, ready to
load with transformers or to push to a hub as it is.

    llmctl export runs/classification --to exported/classification
    llmctl export runs/cls-lora --to exported/cls-lora-adapter          # a LoRA run: the adapter (PEFT format)
    llmctl export runs/cls-lora --to exported/cls-lora --merge-lora     # a LoRA run: the merged model

Never overwrites: DIR must not exist or be empty. The copy is made in a temporary sibling directory and renamed
into place, so DIR is either absent or complete.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Annotated

import typer

from llmctl import runs
from llmctl.card import CARD_NAME, write_card

RunArg = Annotated[Path, typer.Argument(help="A finished run directory (it holds results.json).", show_default=False)]
ToOpt = Annotated[Path, typer.Option("--to", help="The directory to create; it must not exist or be empty.",
                                     show_default=False)]
MergeOpt = Annotated[bool, typer.Option("--merge-lora", help="LoRA runs: export the model with the adapter merged "
                                                             "into its weights instead of the adapter alone.")]

# Files of final/ that are the model itself rather than the tokenizer (what an adapter export leaves out).
_MODEL_FILES = ("config.json", "generation_config.json", CARD_NAME)
_MODEL_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".msgpack", ".h5")


def export(run: RunArg, to: ToOpt, merge_lora: MergeOpt = False):
    """Copy a finished run's model, tokenizer and model card (README.md) into a new directory.

    A LoRA run exports its adapter in PEFT format (with the tokenizer and the card); with --merge-lora, the
    standalone model with the adapter merged in. [bold]Examples:[/]

        llmctl export runs/classification --to exported/classification
        llmctl export runs/cls-lora --to exported/cls-lora --merge-lora
    """
    done = export_run(run, to, merge_lora=merge_lora)
    print(f"export: {done['what']} of {Path(run)} -> {done['to']} ({done['files']} files, "
          f"{_size(done['bytes'])})")
    if done.get("note"):
        print(done["note"])


def export_run(run_dir: Path, to: Path, *, merge_lora: bool = False) -> dict:
    """Export; returns what was exported ({what, to, files, bytes, note}). Raises RunError (one line)."""
    run = runs.Run(Path(run_dir))
    to = Path(to)
    if not run.root.is_dir():
        raise runs.RunError(f"{run.root}: no such run directory")
    if not run.is_complete():
        raise runs.RunError(f"{run.root}: not a finished run ({run.results.name} is missing); finish it first "
                            "(llmctl pretrain/finetune ... --resume)")
    if not run.final.is_dir():
        raise runs.RunError(f"{run.root}: the finished run has no {run.final.name}/ directory")
    _check_target(to)
    adapter = run.root / "adapter"
    # adapter/ of a LoRA run; results.json says whether the last run in this directory was one (an --overwrite
    # run without LoRA leaves an older adapter/ behind).
    lora = adapter.is_dir() and runs.read_json(run.results).get("lora") is not False
    note = None
    if merge_lora and not lora:
        note = f"note: {run.root} is not a LoRA run; --merge-lora has nothing to merge, exported its full model"

    to.parent.mkdir(parents=True, exist_ok=True)
    tmp = to.with_name(f".{to.name}.export-{os.getpid()}.tmp")
    runs.remove(tmp)
    try:
        if lora and not merge_lora:
            what = "LoRA adapter"
            shutil.copytree(adapter, tmp)
            for f in run.final.iterdir():  # the tokenizer, where the adapter folder lacks it
                if f.is_file() and not _is_model_file(f.name) and not (tmp / f.name).exists():
                    shutil.copy2(f, tmp / f.name)
            write_card(run.root, tmp)  # replaces the placeholder card PEFT writes next to an adapter
        else:
            what = "merged model" if lora else "model"
            shutil.copytree(run.final, tmp)
            if not (tmp / CARD_NAME).exists():  # a run finished before llmctl wrote cards
                write_card(run.root, tmp)
        _check_target(to)  # once more: nothing appeared there while copying
        if to.is_dir():
            to.rmdir()  # empty: checked above
        tmp.rename(to)
    except BaseException:
        runs.remove(tmp)
        raise
    files = [p for p in to.rglob("*") if p.is_file()]
    return {"what": what, "to": str(to), "files": len(files), "bytes": sum(p.stat().st_size for p in files),
            "note": note}


def _is_model_file(name: str) -> bool:
    return name in _MODEL_FILES or name.endswith(_MODEL_SUFFIXES) or name.endswith(".index.json")


def _check_target(to: Path) -> None:
    if to.is_dir():
        if any(to.iterdir()):
            raise runs.RunError(f"{to}: exists and is not empty; export never overwrites, give a new --to")
    elif to.exists() or to.is_symlink():
        raise runs.RunError(f"{to}: exists and is not a directory; export never overwrites, give a new --to")


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"
