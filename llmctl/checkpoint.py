"""Training checkpoints that can be trusted: nothing in them is unpickled, every file is checksummed, a save is
durable before it is visible, and resume falls back past a damaged checkpoint.

    checkpoints/step-N/
      model.safetensors           the weights (tied weights stored once)
      optimizer.safetensors       the optimizer's tensors (AdamW moments, step counts)
      optimizer.json              everything else of the optimizer's state dict (param groups, plain numbers)
      process-R.safetensors       process R's RNG states (torch CPU, CUDA)
      process-R.json              process R's Python and NumPy RNG states and its open log window
      trainer_state.json          step, tokens seen, best metric, early stopping, what the run was made from
      checkpoint.json             the manifest, written last: format, step, and the SHA-256 and size of each file

The learning-rate schedule is not stored: the LR is a pure function of the step (`train.lr_at`), so nothing
about it needs to be unpickled. A save writes into `.tmp-step-N`, fsyncs every file and the directory, renames it
to `step-N` and fsyncs the parent; older checkpoints are pruned only after the new one reads back intact.
"""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

from llmctl import runs
from llmctl.runs import sha256

FORMAT = 1
MANIFEST = "checkpoint.json"
STATE = "trainer_state.json"


class CheckpointError(Exception):
    """A checkpoint cannot be used (one line)."""


# ------------------------------------------------------------------------------------------------- files


def _write_json(path: Path, obj) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(obj, indent=1, allow_nan=False) + "\n")


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable ({type(exc).__name__})") from None


def _save_tensors(tensors: dict, path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path))


def _load_tensors(path: Path) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None


# ---------------------------------------------------------------------------------- state <-> plain files


def _json_value(value):
    """A JSON-safe copy of an optimizer or RNG value (tuples become lists; non-finite floats become strings)."""
    if isinstance(value, float) and not math.isfinite(value):
        return {"float": repr(value)}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise CheckpointError(f"cannot store a {type(value).__name__} in a checkpoint")


def _from_json(value):
    if isinstance(value, dict):
        if set(value) == {"float"}:
            return float(value["float"])
        return {k: _from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


def optimizer_files(state_dict: dict) -> tuple[dict, dict]:
    """(tensors, plain) for an optimizer state dict: every tensor under `state.<param>.<name>`, the rest JSON."""
    import torch

    tensors, plain_state = {}, {}
    for index, values in state_dict["state"].items():
        plain = {}
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{name}"] = value
            else:
                plain[name] = _json_value(value)
        plain_state[str(index)] = plain
    return tensors, {"state": plain_state, "param_groups": _json_value(state_dict["param_groups"])}


def optimizer_state(tensors: dict, plain: dict) -> dict:
    state: dict = {}
    for index, values in plain["state"].items():
        state[int(index)] = {k: _from_json(v) for k, v in values.items()}
    for key, value in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    groups = _from_json(plain["param_groups"])
    for group in groups:
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
    return {"state": state, "param_groups": groups}


def rng_files() -> tuple[dict, dict]:
    """This process's RNG states: torch's as tensors, Python's and NumPy's as JSON."""
    import numpy as np
    import torch

    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    plain = {"python": [version, list(internal), gauss],
             "numpy": [kind, [int(k) for k in keys], int(pos), int(has_gauss), float(cached)]}
    return tensors, plain


def set_rng(tensors: dict, plain: dict) -> None:
    import numpy as np
    import torch

    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("cuda.")), key=lambda k: int(k[5:]))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    version, internal, gauss = plain["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = plain["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


# --------------------------------------------------------------------------------------------- save / load


def save(accelerator, model, optimizer, run: runs.Run, state: dict, *, keep: int, process: dict) -> Path:
    """Write checkpoint step-`state['step']` (see the module doc); every process must call it. `process` is this
    process's own state (its log window), kept with its RNG states."""
    step = state["step"]
    final = run.checkpoint(step)
    tmp = run.checkpoints / f".tmp-step-{step}"
    main = accelerator.is_main_process
    if main:
        runs.remove(tmp)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    try:
        _write(accelerator, model, optimizer, run, state, tmp, final, keep=keep, process=process)
    except OSError:
        runs.remove(tmp)  # a full disk: no half checkpoint left behind; the earlier ones are untouched
        raise
    accelerator.wait_for_everyone()
    return final


def _write(accelerator, model, optimizer, run: runs.Run, state: dict, tmp: Path, final: Path, *, keep: int,
           process: dict) -> None:
    from safetensors.torch import save_model

    from llmctl import faults

    main = accelerator.is_main_process
    step = state["step"]
    rank = accelerator.process_index
    tensors, plain = rng_files()
    _save_tensors(tensors, tmp / f"process-{rank}.safetensors")
    _write_json(tmp / f"process-{rank}.json", {**plain, "state": _json_value(process)})
    if accelerator.scaler is not None and main:
        _write_json(tmp / "scaler.json", _json_value(accelerator.scaler.state_dict()))
    opt_tensors, opt_plain = optimizer_files(optimizer.state_dict())
    if main:
        save_model(accelerator.unwrap_model(model), str(tmp / "model.safetensors"))
        _save_tensors(opt_tensors, tmp / "optimizer.safetensors")
        _write_json(tmp / "optimizer.json", opt_plain)
        _write_json(tmp / STATE, _json_value(state))
    accelerator.wait_for_everyone()  # every process has written its files before the manifest
    if main:
        faults.point("checkpoint-files")
        files = {}
        for p in sorted(tmp.iterdir()):
            runs.fsync_path(p)
            files[p.name] = {"sha256": sha256(p), "bytes": p.stat().st_size}
        _write_json(tmp / MANIFEST, {"format": FORMAT, "step": step, "processes": accelerator.num_processes,
                                     "files": files})
        runs.fsync_path(tmp / MANIFEST)
        runs.fsync_path(tmp)
        faults.point("checkpoint-rename")
        if final.exists():  # a checkpoint of this step from before a resume: set it aside, never half-replace it
            old = run.checkpoints / f".old-step-{step}"
            runs.remove(old)
            final.rename(old)
            tmp.rename(final)
            runs.remove(old)
        else:
            tmp.rename(final)
        runs.fsync_path(run.checkpoints)
        faults.point("checkpoint-prune")
        if verify(final) is None:  # prune only behind a checkpoint that reads back intact
            for _, older in run.list_checkpoints()[:-keep]:
                runs.remove(older)


def verify(path: Path) -> str | None:
    """None when the checkpoint at `path` is complete and every file matches its checksum; else what is wrong."""
    manifest = path / MANIFEST
    if not manifest.is_file():
        if (path / STATE).is_file():
            return ("written by an older llmctl in a format that stores pickles (it cannot be resumed safely); "
                    "start the run over with --overwrite")
        return f"{MANIFEST} is missing (the save did not finish)"
    try:
        info = _read_json(manifest)
        files = info["files"]
        if info.get("format") != FORMAT:
            return f"{MANIFEST}: format {info.get('format')!r}, this llmctl reads {FORMAT}"
        for name, expected in files.items():
            if "/" in name or name.startswith("."):
                return f"{MANIFEST}: bad file name {name!r}"
            p = path / name
            if not p.is_file():
                return f"{name} is missing"
            if p.stat().st_size != expected["bytes"] or sha256(p) != expected["sha256"]:
                return f"{name} does not match its checksum"
        for needed in ("model.safetensors", "optimizer.safetensors", "optimizer.json", STATE):
            if needed not in files:
                return f"{needed} is missing from {MANIFEST}"
    except (CheckpointError, KeyError, TypeError, AttributeError) as exc:
        return f"{MANIFEST} is damaged ({exc})"
    return None


def resumable(run: runs.Run, warn) -> tuple[int, Path] | None:
    """The newest checkpoint that verifies; each damaged newer one is reported through `warn` and skipped.
    Raises CheckpointError when there are checkpoints but none verifies."""
    found = list_all(run)
    problems = []
    for step, path in reversed(found):
        problem = verify(path)
        if problem is None:
            return step, path
        problems.append(f"{path.name}: {problem}")
        if warn is not None:
            warn(f"checkpoint {path} cannot be used: {problem}; trying the one before it")
    if problems:
        raise CheckpointError(f"{run.checkpoints}: no checkpoint can be resumed ({'; '.join(problems)})")
    return None


def list_all(run: runs.Run) -> list[tuple[int, Path]]:
    """Every step-N directory, complete or not, oldest first."""
    found = []
    if run.checkpoints.is_dir():
        for p in run.checkpoints.iterdir():
            if p.is_dir() and p.name.startswith("step-") and p.name[5:].isdigit():
                found.append((int(p.name[5:]), p))
    return sorted(found)


def load(accelerator, model, optimizer, path: Path) -> tuple[dict, dict | None]:
    """Load a verified checkpoint into the prepared model and optimizer and this process's RNG; returns
    (trainer state, this process's own state or None when the run had another number of processes)."""
    from safetensors.torch import load_model

    try:
        # Read on the CPU (safetensors does not take every torch device string, e.g. "cpu:0" under a CPU
        # launch); load_state_dict copies each tensor onto its parameter's device.
        missing, unexpected = load_model(accelerator.unwrap_model(model), str(path / "model.safetensors"),
                                         strict=False, device="cpu")
    except Exception as exc:  # safetensors raises its own error types for malformed headers
        raise CheckpointError(f"{path / 'model.safetensors'}: cannot be loaded ({str(exc).splitlines()[0]})") \
            from None
    if missing or unexpected:
        raise CheckpointError(f"{path / 'model.safetensors'}: not this model's weights "
                              f"({len(missing)} missing, {len(unexpected)} unexpected tensors)")
    opt = optimizer_state(_load_tensors(path / "optimizer.safetensors"), _read_json(path / "optimizer.json"))
    try:
        optimizer.load_state_dict(opt)
    except (ValueError, KeyError, RuntimeError) as exc:
        raise CheckpointError(f"{path / 'optimizer.json'}: does not fit this optimizer ({exc})") from None
    if accelerator.scaler is not None and (path / "scaler.json").is_file():
        accelerator.scaler.load_state_dict(_from_json(_read_json(path / "scaler.json")))
    state = _from_json(_read_json(path / STATE))
    rank = accelerator.process_index
    mine = path / f"process-{rank}.json"
    processes = _read_json(path / MANIFEST).get("processes")
    if processes != accelerator.num_processes or not mine.is_file():
        return state, None
    plain = _read_json(mine)
    set_rng(_load_tensors(path / f"process-{rank}.safetensors"), plain)
    return state, _from_json(plain.get("state") or {})


def clean_temporary(run: runs.Run) -> None:
    """Tidy what a killed save left behind; main process only. A `.old-step-N` whose replacement never arrived
    goes back to `step-N`; every other `.tmp-step-N` / `.old-step-N` is removed. The same for best/ and final/
    (runs.swap_in)."""
    for exported in (run.root / "best", run.final):
        runs.recover(exported)
    if not run.checkpoints.is_dir():
        return
    for p in sorted(run.checkpoints.iterdir()):
        if p.name.startswith(".old-step-") and not (run.checkpoints / p.name[5:]).exists():
            p.rename(run.checkpoints / p.name[5:])
    for p in run.checkpoints.iterdir():
        if p.name.startswith((".tmp-step-", ".old-step-")):
            shutil.rmtree(p, ignore_errors=True)


# ------------------------------------------------------------------------------------- resume compatibility

#: train.* keys a resumed run may change: they extend the run or change what is logged and kept, not what the
#: steps so far computed. Every other recipe key must be unchanged, except the eval, sample and generation
#: sections and the name, which decide only what is measured and shown.
MAY_CHANGE = {"train.max_steps", "train.log_every", "train.eval_every", "train.eval_batches",
              "train.checkpoint_every", "train.keep_checkpoints", "train.report_to", "train.accelerate_config",
              "train.precision", "train.compile", "train.skip_nonfinite"}
FREE_SECTIONS = {"eval", "sample", "generation", "name", "description"}


def _flat(obj: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in obj.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(_flat(v, key))
        else:
            out[key] = v
    return out


def recipe_changes(old: dict, new: dict) -> list[str]:
    """The dotted keys whose values differ between two recipe dicts and that a resumed run may not change."""
    a, b = _flat(old), _flat(new)
    changed = []
    for key in sorted(set(a) | set(b)):
        if key.split(".")[0] in FREE_SECTIONS or key in MAY_CHANGE:
            continue
        if a.get(key) != b.get(key):
            changed.append(key)
    return changed


def fingerprint(recipe) -> dict:
    """What the run's steps were computed from, beyond the recipe: the content of each local data file."""
    files = {}
    for name in (*recipe.data.train_files, *recipe.data.validation_files):
        p = Path(name)
        if p.is_file():
            files[str(p)] = sha256(p)
    return {"files": files}


def changed_files(made_from: dict | None, recipe) -> list[str]:
    """Data files whose content differs from what the checkpointed steps were trained on."""
    if not made_from or "files" not in made_from:
        return []
    now = fingerprint(recipe)["files"]
    return [name for name, digest in made_from["files"].items() if now.get(name) != digest]


def resume_problems(recipe, run: runs.Run) -> list[str]:
    """Why `recipe` may not resume `run`: recipe keys it may not change (MAY_CHANGE lists those it may) and data
    files whose content changed since the newest checkpoint. Empty when it may."""
    from llmctl import recipe as recipe_mod

    problems = []
    if run.recipe.exists():
        changed = recipe_changes(recipe_mod.read_toml(run.recipe), recipe.model_dump())
        if changed:
            problems.append(f"the recipe changed {', '.join(changed)} (see {run.recipe})")
    for _, path in reversed(list_all(run)):
        try:
            made_from = json.loads((path / STATE).read_text(encoding="utf-8")).get("made_from")
        except (OSError, ValueError, AttributeError):
            continue
        files = changed_files(made_from, recipe)
        if files:
            problems.append(f"the content of {', '.join(files)} changed")
        break
    return problems
