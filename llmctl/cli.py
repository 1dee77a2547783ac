"""The `llmctl` command line: parse -> load recipe -> open run -> call a stage.

Nothing heavy is imported at module level (no torch, transformers or datasets), so `llmctl --help` is instant;
each command imports what it needs.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
import os
import sys
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    name="llmctl",
    help="The lifecycle of a language model from one recipe format: preprocess, pretrain, finetune, eval, summarize.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)


def _console(stderr: bool = False) -> Console:
    """At a terminal: its width. Piped or redirected (logs, CI): no hard line wraps, tables up to 160 columns
    (or $COLUMNS)."""
    stream = sys.stderr if stderr else sys.stdout
    tty = stream.isatty()
    width = None if tty or "COLUMNS" in os.environ else 160
    return Console(stderr=stderr, highlight=False, soft_wrap=not tty, width=width)


console = _console()
err_console = _console(stderr=True)
# Set by the global options (see `_global_options`).
OPTIONS = {"quiet": False, "verbose": False}


def _third_party_quiet() -> None:
    """Warnings and progress bars of the libraries llmctl drives (transformers' load reports, datasets' "Map" and
    "Saving the dataset" bars, torch and accelerate warnings) are off unless --verbose. Set through the
    environment, so launched worker processes inherit it, and before those libraries are imported."""
    import warnings

    for key, value in (("TRANSFORMERS_VERBOSITY", "error"), ("DATASETS_VERBOSITY", "error"),
                       ("HF_DATASETS_DISABLE_PROGRESS_BARS", "1"), ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
                       ("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1"), ("ACCELERATE_LOG_LEVEL", "error"),
                       ("PYTHONWARNINGS", "ignore")):
        os.environ.setdefault(key, value)
    warnings.simplefilter("ignore")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("llmctl")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree that is not installed
        return "unknown"


def _show_version(value: bool) -> None:
    if value:
        console.print(f"llmctl {_version()}")
        raise typer.Exit()


@app.callback()
def _global_options(
    version: Annotated[bool, typer.Option("--version", callback=_show_version, is_eager=True,
                                          help="Print llmctl's version and exit.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only errors, warnings and the final results: no "
                                                              "progress bars or step lines.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also the warnings and progress bars of the "
                                                                  "libraries underneath (transformers, datasets, "
                                                                  "torch).")] = False,
):
    """The lifecycle of a language model from one recipe format: preprocess, pretrain, finetune, eval, summarize."""
    if quiet and verbose:
        err_console.print("[red]error:[/] --quiet and --verbose exclude each other", soft_wrap=True)
        raise typer.Exit(EXIT_USAGE)
    OPTIONS.update(quiet=quiet, verbose=verbose)
    if not verbose:
        _third_party_quiet()
    if quiet:  # launched workers re-parse the command line, so they see the flag too
        console.quiet = True


# Closed sets for --task (kept here, not imported from llmctl.tasks, so `llmctl --help` stays fast; a unit test
# checks them against the registry).
FinetuneTask = Literal["summarization", "translation", "classification", "qa", "multiple_choice"]
AnyTask = Literal["causal_lm", "summarization", "translation", "classification", "qa", "multiple_choice"]


class UsageError(Exception):
    """A command line that cannot work as given (exit code 2, like the parser's own usage errors)."""

RecipeArg = Annotated[Path, typer.Argument(help="A TOML recipe file, or the name of a shipped recipe (see `llmctl "
                                                "recipes`), e.g. gpt-small.", show_default=False)]
DataOpt = Annotated[
    Optional[list[str]],
    typer.Option("--data", help="Your data file (repeatable). Replaces the recipe's training and validation "
                                "data; validation is held out from it unless --validation-data is given.",
                 show_default=False),
]
ValidationDataOpt = Annotated[
    Optional[list[str]],
    typer.Option("--validation-data", help="Validation file (repeatable), instead of holding out part of the "
                                           "training data.", show_default=False),
]
SetOpt = Annotated[
    Optional[list[str]],
    typer.Option("--set", "-s", help="Override a recipe key, typed as TOML: --set train.lr=3e-4 (repeatable).",
                 show_default=False),
]
OutputDirOpt = Annotated[
    Optional[Path], typer.Option("--output-dir", "-o", help="Run directory \\[default: runs/<recipe name>].",
                                 show_default=False)
]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Validate and print the plan; do no work.")]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue from the run directory's latest checkpoint.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace a finished run in the output directory.")]
ProcsOpt = Annotated[
    int, typer.Option("--num-processes", "-n", min=1, help="Data-parallel processes (launched through Accelerate); "
                                                           "per machine with --num-machines.")
]
# Multi-node runs: the names `accelerate launch` uses. Every machine runs the same command with its own rank.
MachinesOpt = Annotated[int, typer.Option("--num-machines", min=1, rich_help_panel="Multi-node",
                                          help="Machines taking part; each runs this command with its "
                                               "--machine-rank.")]
MachineRankOpt = Annotated[int, typer.Option("--machine-rank", min=0, rich_help_panel="Multi-node",
                                             help="This machine's rank, 0 to --num-machines - 1 (0 hosts the "
                                                  "rendezvous).")]
MainIpOpt = Annotated[Optional[str], typer.Option("--main-process-ip", rich_help_panel="Multi-node",
                                                  help="Address of machine 0, reachable from every machine.",
                                                  show_default=False)]
MainPortOpt = Annotated[int, typer.Option("--main-process-port", min=1, max=65535, rich_help_panel="Multi-node",
                                          help="Port of the rendezvous on machine 0.")]
RendezvousTimeoutOpt = Annotated[int, typer.Option("--rendezvous-timeout", min=1, rich_help_panel="Multi-node",
                                                   help="Seconds to wait for the other machines at the rendezvous "
                                                        "before giving up with an error.")]


@dataclass(frozen=True)
class Cluster:
    """Where a training command runs: processes per machine and, for a multi-node run, the machines."""

    processes: int = 1
    machines: int = 1
    rank: int = 0
    main_ip: str | None = None
    main_port: int = 29500
    rendezvous_timeout: int = 300

    def check(self) -> None:
        if self.machines > 1 and not self.main_ip:
            raise UsageError("--num-machines > 1 needs --main-process-ip (the address of machine 0)")
        if self.rank >= self.machines:
            raise UsageError(f"--machine-rank {self.rank} must be below --num-machines {self.machines}")

    @property
    def world(self) -> int:
        return self.processes * self.machines

    def launch_args(self) -> list[str]:
        """`accelerate launch` arguments; its --num_processes counts the processes of all machines."""
        args = ["--num_processes", str(self.world), "--num_machines", str(self.machines)]
        if self.machines > 1:
            args += ["--machine_rank", str(self.rank), "--main_process_ip", str(self.main_ip),
                     "--main_process_port", str(self.main_port), "--rdzv_conf", f"timeout={self.rendezvous_timeout}"]
        return args

# Exit codes (README "Exit codes"): 0 done; 1 a run that failed (bad data, a model that cannot do the task, ...);
# 2 a usage error (bad option, bad recipe, options that exclude each other); 130 / 143 interrupted by SIGINT /
# SIGTERM (a training run saves a checkpoint first).
EXIT_RECIPE = 2
EXIT_USAGE = 2
EXIT_ERROR = 1


def _user_errors() -> tuple[type[Exception], ...]:
    from llmctl.data import DataError
    from llmctl.modeling import ModelError
    from llmctl.runs import RunError
    from llmctl.tokenizer import TokenizerError
    from llmctl.train import TrainError

    errors = [DataError, ModelError, RunError, TokenizerError, TrainError]
    try:
        from llmctl.finetune import FinetuneError
        from llmctl.generation import GenerationError
        from llmctl.metrics import MetricError
        from llmctl.summarize import SummarizeError
        from llmctl.tasks.qa import QAError

        errors += [FinetuneError, GenerationError, MetricError, SummarizeError, QAError]
    except ImportError:  # pragma: no cover - a partial install still reports the core errors
        pass
    return tuple(errors)


def guarded(fn):
    """Turn the project's user-facing errors into one line on stderr and a non-zero exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            result = _reported(fn, *args, **kwargs)
        except BaseException:
            _release_process_group()
            raise
        if _release_process_group() and "LOCAL_RANK" in os.environ:
            # A launched process whose command finished: everything is written, so leave without the
            # interpreter's teardown, where gloo's and the store's C++ threads could still abort it.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
        return result

    return wrapper


def _release_process_group() -> bool:
    """Destroy the process group a launched command worked in, before the interpreter exits; whether there was
    one. Left to the interpreter's teardown, the gloo group's threads could end the process with "terminate
    called without an active exception" (SIGABRT) after the command had done all its work (seen in a
    2-process summarize, and once after this was added, in a pretrain under torchrun)."""
    dist = sys.modules.get("torch.distributed")  # never imports torch for a command that did not
    if dist is None:
        return False
    try:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
            return True
    except Exception:  # noqa: BLE001 - teardown must not turn a finished command into a failure
        pass
    return False


def _reported(fn, *args, **kwargs):
    """fn, its user-facing errors turned into one line on stderr and an exit code (see guarded)."""
    from llmctl.recipe import RecipeError

    try:
        return fn(*args, **kwargs)
    # Under a multi-process launch every process meets the same bad input; the main process reports it.
    except RecipeError as exc:
        if _is_main_process():
            for line in exc.problems:
                err_console.print(f"[red]error:[/] {line}", markup=True, soft_wrap=True)
        raise typer.Exit(EXIT_RECIPE) from None
    except UsageError as exc:
        if _is_main_process():
            err_console.print(f"[red]error:[/] {exc}", soft_wrap=True)
        raise typer.Exit(EXIT_USAGE) from None
    except _user_errors() as exc:
        if _is_main_process():
            err_console.print(f"[red]error:[/] {exc}", soft_wrap=True)
        raise typer.Exit(EXIT_ERROR) from None
    except OSError as exc:
        import errno

        # The disk, not llmctl: a full disk, a quota, a read-only or failing file system. What was saved
        # before (checkpoints, results) stays; the half-written file or directory has been removed.
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO):
            raise
        if _is_main_process():
            where = f" ({exc.filename})" if exc.filename else ""
            err_console.print(f"[red]error:[/] cannot write{where}: {exc.strerror}", soft_wrap=True)
        raise typer.Exit(EXIT_ERROR) from None
    except KeyboardInterrupt as exc:
        from llmctl.train import Preempted

        if _is_main_process():
            if isinstance(exc, Preempted):  # training: a checkpoint was saved
                msg = f"{exc}; continue with --resume"
            elif fn.__name__ == "summarize" and kwargs.get("output") is not None:
                msg = f"stopped; the summaries written so far are in {kwargs['output']}, and running the same " \
                      "command again skips them"
            else:
                msg = "stopped"
            err_console.print(f"[yellow]interrupted:[/] {msg}", soft_wrap=True)
        raise typer.Exit(getattr(exc, "code", 130)) from None


def _load_recipe(path: Path, sets: list[str] | None, data_files: list[str] | None = None,
                 validation_files: list[str] | None = None):
    """A recipe file or shipped recipe name, with --data/--validation-data and then --set applied, and its
    `pkg:` and `embedded:` paths resolved."""
    from llmctl import catalog
    from llmctl import recipe as recipe_mod

    extra = recipe_mod.data_overrides(data_files or [], validation_files or [])
    return catalog.resolve_paths(recipe_mod.load(catalog.find(path), [*extra, *(sets or [])]))


def _root(recipe, output_dir: Path | None) -> Path:
    from llmctl.runs import default_root

    return output_dir if output_dir is not None else default_root(recipe.name)


def _quiet_tokenizers() -> None:
    # datasets.map may fork workers after the Rust tokenizer used threads; its warning about that is noise.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# ------------------------------------------------------------------------------------------------ preprocess


@app.command()
@guarded
def preprocess(
    recipe: RecipeArg,
    data_: DataOpt = None,
    validation_data: ValidationDataOpt = None,
    set_: SetOpt = None,
    output_dir: OutputDirOpt = None,
    dry_run: DryRunOpt = False,
    shard: Annotated[Optional[str], typer.Option(
        "--shard", metavar="I/K", show_default=False,
        help="Pretraining data: tokenize and pack only the I-th of K shards of the training documents (numbered "
             "from 1; contiguous ranges, no document split) into RUN/data/shards/I-of-K, so K jobs (a Slurm array) "
             "can make them; every job trains the same tokenizer, shard 1 also writes the validation split. "
             "`pretrain` trains on RUN/data/shards once all K are there.")] = None,
):
    """Prepare a recipe's data in the run directory, so that training starts from the cache.

    Pretraining: train or load the tokenizer, tokenize, pack and split the corpus. Fine-tuning: read and check
    the records into Arrow, make the tokenizer, tokenize the training features. An unchanged rerun does no work,
    and `pretrain` / `finetune` with the same recipe and output directory reuse it. [bold]Examples:[/]

        llmctl preprocess gpt-small --set data.block_size=128
        llmctl preprocess summarization --data articles.jsonl --set data.text_column=article
        llmctl preprocess gpt-small --shard 2/8          # job 2 of 8, e.g. --shard $SLURM_ARRAY_TASK_ID/8
    """
    from llmctl import data, runs

    _quiet_tokenizers()
    shard_spec = None
    if shard is not None:
        try:
            shard_spec = data.parse_shard(shard)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    r = _load_recipe(recipe, set_, data_, validation_data)
    root = _root(r, output_dir)
    run = runs.Run(root)
    from llmctl import tasks as registry

    if registry.get(r.task).finetunable:
        from llmctl import finetune as ft

        if shard_spec is not None:
            raise UsageError(f"--shard applies to pretraining data; {r.task} data is prepared whole")
        if dry_run:
            _print_plan(ft.plan(r, root))
            return
        runs.check_output_dir(root)
        with _locked(root):
            runs.mark_run(root, "preprocess")
            _write_recipe(r, run)
            td = ft.prepare_data(r, run, console)
        console.print(f"[green]preprocess:[/] {len(td.train):,} training examples ({len(td.features):,} features) "
                      f"+ {len(td.validation):,} validation examples -> {run.data}")
        return
    if shard_spec is not None:
        index, count = shard_spec
        target = data.shard_dir(run, index, count)
        if dry_run:
            _print_plan({
                "recipe": r.name,
                "inputs": list(r.data.train_files) + list(r.data.validation_files) or [r.data.hub_dataset],
                "shard": f"{index} of {count} contiguous ranges of the training documents"
                         + (", and the validation split" if index == 1 else ""),
                "tokenizer": data.tokenizer_source(r) or f"train byte-level BPE, vocab {r.tokenizer.vocab_size}",
                "block_size": r.data.block_size,
                "output": {"tokenizer": str(run.tokenizer), "shard": str(target), "recipe": str(run.recipe)},
            })
            return
        # The shard's own lock, not the run's: the K jobs of one run directory work side by side.
        # The marker goes in before the shard's lock creates data/, so that a sibling job starting at the same
        # moment sees a marked run directory, not a foreign one.
        runs.check_output_dir(root)
        runs.mark_run(root, "preprocess")
        with _locked(target):
            _write_recipe(r, run)
            data.prepare_shard(r, run, index, count, console)
        return
    if dry_run:
        hit = data.cached(r, run)
        _print_plan({
            "recipe": r.name,
            "inputs": list(r.data.train_files) + list(r.data.validation_files) or [r.data.hub_dataset],
            "tokenizer": data.tokenizer_source(r) or f"train byte-level BPE, vocab {r.tokenizer.vocab_size}",
            "block_size": r.data.block_size,
            "cache": "hit: nothing to do" if hit else "miss: will preprocess",
            "output": {"tokenizer": str(run.tokenizer), "data": str(run.data), "recipe": str(run.recipe)},
        })
        return
    runs.check_output_dir(root)
    with _locked(root):
        runs.mark_run(root, "preprocess")
        _write_recipe(r, run)
        from llmctl.pretrain import prepare_corpus

        prepare_corpus(r, run, console)


def _write_recipe(r, run) -> None:
    from llmctl import recipe as recipe_mod
    from llmctl import runs

    run.root.mkdir(parents=True, exist_ok=True)
    runs.write_text(run.recipe, recipe_mod.dumps(r))


# -------------------------------------------------------------------------------------------------- pretrain


@app.command()
@guarded
def pretrain(
    recipe: RecipeArg,
    data_: DataOpt = None,
    validation_data: ValidationDataOpt = None,
    set_: SetOpt = None,
    output_dir: OutputDirOpt = None,
    dry_run: DryRunOpt = False,
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
    num_processes: ProcsOpt = 1,
    num_machines: MachinesOpt = 1,
    machine_rank: MachineRankOpt = 0,
    main_process_ip: MainIpOpt = None,
    main_process_port: MainPortOpt = 29500,
    rendezvous_timeout: RendezvousTimeoutOpt = 300,
):
    """Pretrain a causal LM from scratch (or continue a pretrained one) on the recipe's corpus.

    Runs preprocessing first when it has not been run. [bold]Examples:[/]

        llmctl pretrain gpt-small
        llmctl pretrain gpt-small --data my-corpus.txt --output-dir runs/mine
        llmctl pretrain recipes/tiny/pretrain.toml --set train.max_steps=50 --num-processes 2
        llmctl pretrain gpt-small --resume
    """
    _quiet_tokenizers()
    r = _load_recipe(recipe, set_, data_, validation_data)
    root = _root(r, output_dir)
    if dry_run:
        from llmctl.pretrain import plan

        _print_plan(plan(r, root, num_processes=num_processes * num_machines))
        return
    from llmctl.pretrain import run_pretrain

    cluster = Cluster(num_processes, num_machines, machine_rank, main_process_ip, main_process_port,
                      rendezvous_timeout)
    _train(r, root, run_pretrain, _print_results, resume=resume, overwrite=overwrite, cluster=cluster)


def _train(r, root: Path, stage, show, *, resume: bool, overwrite: bool, cluster: Cluster) -> None:
    """Shared by pretrain and finetune: relaunch for several processes (or machines), open the run, run the
    stage. Inside a launched process (accelerate launch, torchrun, a Slurm or Kubernetes launcher that sets the
    torch.distributed environment) the launcher's environment decides, not these flags."""
    from llmctl import runs

    if resume and overwrite:
        raise UsageError("--resume and --overwrite exclude each other")
    cluster.check()
    if cluster.world > 1 and "LOCAL_RANK" not in os.environ:
        per_step = r.train.micro_batch_size * cluster.world
        if r.train.batch_size % per_step:
            from llmctl.train import TrainError

            raise TrainError(f"train.batch_size ({r.train.batch_size}) must be a multiple of train.micro_batch_size "
                             f"x processes ({r.train.micro_batch_size} x {cluster.world} = {per_step})")
        _relaunch(cluster, r.train.accelerate_config)
        return
    main_process = _is_main_process()
    if main_process:
        runs.check_output_dir(root)  # before the lock file is made: nothing is written into a foreign directory
    with _locked(root, main_process):
        # Every refusal before any change: a refused --resume or --overwrite deletes nothing.
        run = runs.open_for_training(root, resume=resume, overwrite=overwrite, apply=False)
        _check_resume_compatible(r, run, resume)
        if main_process:
            runs.start_run(run, kind="pretrain" if r.task == "causal_lm" else "finetune", resume=resume,
                           overwrite=overwrite)
            _write_recipe(r, run)
        results = stage(r, run, resume=resume, console=console)
    if results:
        console.quiet = False  # --quiet still prints the final results
        show(results, run)
        if not OPTIONS["quiet"]:
            from llmctl.report import terminal_plot

            terminal_plot(runs.read_log(run.log), console)


@contextlib.contextmanager
def _locked(root: Path, main_process: bool = True):
    """One llmctl command at a time per run directory: the main process holds its lock (`runs.RunLock`) while
    the command works; a second command is refused with the holder's pid."""
    from llmctl import runs

    if not main_process:
        yield
        return
    if root.exists() and not root.is_dir():
        raise runs.RunError(f"{root}: output path exists and is not a directory")
    lock = runs.RunLock(runs.Run(root))
    try:
        lock.acquire()
    except OSError as exc:
        raise runs.RunError(f"{root}: cannot use this output directory: {exc.strerror or exc}") from None
    try:
        yield
    finally:
        lock.release()


def _is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


def _check_resume_compatible(r, run, resume: bool) -> None:
    """A resumed run must train the same model on the same data with the same schedule; it may run longer and
    log, evaluate and checkpoint at other intervals (checkpoint.MAY_CHANGE). Checked before anything is touched."""
    if not resume:
        return
    from llmctl import checkpoint
    from llmctl.runs import RunError

    problems = checkpoint.resume_problems(r, run)
    if problems:
        raise RunError(f"{run.root}: cannot resume: {'; '.join(problems)} since the run started; "
                       "use a new --output-dir or --overwrite")


def _relaunch(cluster: Cluster, accelerate_config: str = "") -> None:
    """Re-run this very command under `accelerate launch` (minus the launch options), on this machine's share of
    the processes.

    While the workers run, SIGINT and SIGTERM sent to this process are passed on to the launcher (which passes
    them to the workers), and this process keeps waiting: the workers stop together at a step boundary and save
    a checkpoint, rather than being killed with the launcher.
    """
    import signal
    import subprocess

    launch_options = ("--num-processes", "-n", "--num-machines", "--machine-rank", "--main-process-ip",
                      "--main-process-port", "--rendezvous-timeout")
    cleaned, skip = [], False
    for a in sys.argv[1:]:
        if skip:
            skip = False
            continue
        if a in launch_options:
            skip = True
            continue
        if a.startswith(tuple(f"{o}=" for o in launch_options if o.startswith("--"))):
            continue
        cleaned.append(a)
    launch = cluster.launch_args()
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *launch]
    if accelerate_config:
        cmd += ["--config_file", accelerate_config]
    else:
        cmd += ["--multi_gpu", "--mixed_precision", "no", "--dynamo_backend", "no"]
    cmd += ["-m", "llmctl", *cleaned]
    where = f" (machine {cluster.rank} of {cluster.machines})" if cluster.machines > 1 else ""
    err_console.print(f"launching {cluster.processes} processes{where}: accelerate launch {' '.join(launch)} -m llmctl "
                      f"{' '.join(cleaned)}", soft_wrap=True)
    child = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, errors="replace")
    received = []

    def forward(signum, frame):
        received.append(signum)
        if child.poll() is None:
            child.send_signal(signum)

    old = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        _pass_on_stderr(child.stderr)
        code = child.wait()
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    if code:
        raise typer.Exit(128 + received[0] if received else code)


def _pass_on_stderr(stream) -> None:
    """Copy the launched processes' stderr to ours, less the launcher's own noise: torch elastic's log lines,
    the port warning, and, when a worker fails, the launcher's traceback and failure summary, which only repeat
    that a worker exited (the worker has already said why, in one line or in its own traceback)."""
    import re

    elastic = re.compile(r"^[WEI]\d{4} [\d:.]+ +\d+ .*torch/distributed/elastic/")
    # torch's C++ side (the c10d store) logs its own lines and stack frames before a Python exception follows.
    native = re.compile(r"^\[[EWI]\d{4} [\d:.]+ .*\] \[c10d\]|^Exception raised from |^frame #\d+: |"
                        r"^<omitting python frames>")
    held: list[str] = []  # from the first unprefixed traceback on: it may be the launcher's
    skip_next = False
    for line in stream:
        if skip_next:
            skip_next = False
            continue
        if elastic.match(line):
            continue
        if "is already in use. Accelerate will attempt" in line:
            skip_next = True  # the warnings.warn( line that follows
            continue
        if held or line.startswith("Traceback (most recent call last):") or native.match(line):
            held.append(line)  # a failure is on its way: what to show is decided at the end
            continue
        sys.stderr.write(line)
        sys.stderr.flush()
    unreachable = next((line for line in held if "DistNetworkError" in line and "trying to connect" in line), None)
    if unreachable is not None:  # the rendezvous timed out: machine 0 is not there (yet), or not at that address
        found = re.search(r"after (\d+)ms while trying to connect to \((.+), (\d+)\)", unreachable)
        where = f" at {found.group(2)}:{found.group(3)} within {int(found.group(1)) / 1000:g} s" if found else ""
        sys.stderr.write(f"error: cannot reach the rendezvous{where}; start machine 0 (--machine-rank 0) with the "
                         "same --main-process-ip and --main-process-port, or raise --rendezvous-timeout\n")
        sys.stderr.flush()
        return
    starts = [i for i, line in enumerate(held) if line.startswith("Traceback (most recent call last):")]
    last = starts.pop() if starts else len(held)
    while starts and any(w in "".join(held[last - 3 : last]) for w in ("During handling", "direct cause")):
        last = starts.pop()  # a chained exception: the launcher's traceback starts at the first link
    tail = "".join(held[last:])
    if "accelerate/commands/launch.py" in tail and ("ChildFailedError" in tail or "SignalException" in tail):
        held = held[:last]
    sys.stderr.write("".join(held))
    sys.stderr.flush()


# -------------------------------------------------------------------------------------------------- finetune


@app.command()
@guarded
def finetune(
    recipe: Annotated[Optional[Path], typer.Argument(help="A TOML recipe file or a shipped recipe's name "
                                                           "\\[default: the shipped recipe of --task].",
                                                      show_default=False)] = None,
    task: Annotated[Optional[FinetuneTask], typer.Option(help="The task; without RECIPE, its shipped recipe.")] = None,
    model: Annotated[Optional[str], typer.Option(help="Model directory or hub id (overrides model.path).")] = None,
    data_: DataOpt = None,
    validation_data: ValidationDataOpt = None,
    set_: SetOpt = None,
    output_dir: OutputDirOpt = None,
    dry_run: DryRunOpt = False,
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
    num_processes: ProcsOpt = 1,
    num_machines: MachinesOpt = 1,
    machine_rank: MachineRankOpt = 0,
    main_process_ip: MainIpOpt = None,
    main_process_port: MainPortOpt = 29500,
    rendezvous_timeout: RendezvousTimeoutOpt = 300,
):
    """Fine-tune a model on a task: summarization, translation, classification, extractive QA or multiple choice.

    Any model family: decoder-only (e.g. the model `llmctl pretrain` made), encoder-decoder (T5, BART, Marian)
    or encoder-only (BERT-like, for classification and QA). [bold]Examples:[/]

        llmctl finetune --task summarization
        llmctl finetune --task classification --data reviews.csv --set data.text_column=review
        llmctl finetune recipes/translation.toml --set model.path=runs/gpt-small/final
        llmctl finetune --task classification --model path/to/minilm --set lora.enabled=true
    """
    from llmctl import finetune as ft

    _quiet_tokenizers()
    r = ft.resolve(recipe, task=task, model=model, data_files=data_ or [], validation_files=validation_data or [],
                   sets=set_ or [])
    root = _root(r, output_dir)
    if dry_run:
        _print_plan(ft.plan(r, root, num_processes=num_processes * num_machines))
        return
    cluster = Cluster(num_processes, num_machines, machine_rank, main_process_ip, main_process_port,
                      rendezvous_timeout)
    _train(r, root, ft.run_finetune, _print_task_results, resume=resume, overwrite=overwrite, cluster=cluster)


# ------------------------------------------------------------------------------------------------------ eval


@app.command("eval")
@guarded
def eval_(
    metric: Annotated[Optional[list[str]], typer.Option("--metric", "-m", help="Metric (repeatable) \\[default: the task's].",
                                                       show_default=False)] = None,
    model: Annotated[Optional[str], typer.Option(help="A model directory (e.g. runs/X/final) or hub id "
                                                      "\\[default: the latest run's final/].")] = None,
    data_: Annotated[
        Optional[Path],
        typer.Option("--data", help="Data file; for perplexity also a preprocessed split or a run directory "
                                     "\\[default: the run's validation split]."),
    ] = None,
    task: Annotated[Optional[AnyTask], typer.Option(help="The task, for a model that does not record one.")] = None,
    predictions: Annotated[
        Optional[Path],
        typer.Option(help="Score this JSON Lines file of {prediction, reference} with no model."),
    ] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write the metrics as JSON to this file "
                                                                        "(predictions go next to it as "
                                                                        "<name>.predictions.jsonl).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1, help="Sequences per forward pass \\[default: the "
                                                                  "run's generation.batch_size, else 16].")] = None,
    block_size: Annotated[
        Optional[int], typer.Option(min=2, help="Perplexity: tokens per block for text files \\[default: context].")
    ] = None,
    max_new_tokens: Annotated[
        Optional[int], typer.Option(min=1, help="Generation cap \\[default: the one derived at fine-tuning].")
    ] = None,
    num_beams: Annotated[Optional[int], typer.Option(min=1, help="Beam search width \\[default: the run's "
                                                                  "generation.num_beams, else 1].")] = None,
    text_column: Annotated[str, typer.Option(help="Perplexity: text column of JSONL/CSV/Parquet files.")] = "text",
    set_: Annotated[
        Optional[list[str]],
        typer.Option("--set", "-s", help="Change the run's column mapping for --data: --set data.text_column=review "
                                         "(repeatable).", show_default=False),
    ] = None,
    num_processes: ProcsOpt = 1,
):
    """Evaluate a model with one or more metrics, or score an existing predictions file.

    Metrics: rouge, sacrebleu, bleu, chrf, accuracy, f1, exact_match, squad, squad_v2, perplexity.
    [bold]Examples:[/]

        llmctl eval --metric rouge
        llmctl eval --metric perplexity --model runs/gpt-small/final --data runs/gpt-small/data/validation
        llmctl eval --metric sacrebleu --metric chrf --model runs/translation/final --data valid.jsonl
        llmctl eval --model runs/classification/final --data test.csv --set data.text_column=review
        llmctl eval --predictions preds.jsonl --metric squad
        llmctl eval --model runs/summarization/final --num-processes 2
    """
    from llmctl import evaluate_cli

    if predictions is not None and not metric:
        raise UsageError("--predictions needs at least one --metric")
    if output is not None:  # before the work, not after it
        _check_output_file(output)
        if predictions is None:
            _check_output_file(output.with_name(output.stem + ".predictions.jsonl"))
    if num_processes > 1 and "LOCAL_RANK" not in os.environ:
        _relaunch(Cluster(processes=num_processes))
        return
    result = evaluate_cli.run(
        metrics=metric or [], model=model, data=data_, task=task, predictions=predictions, output=output,
        batch_size=batch_size, block_size=block_size, max_new_tokens=max_new_tokens, num_beams=num_beams,
        text_column=text_column, console=console, sets=set_ or [],
    )
    if not _is_main_process():
        return
    console.quiet = False  # --quiet still prints the final results
    _print_metrics(result)
    if output is not None:
        from llmctl import runs

        try:
            runs.write_json(output, result)
        except OSError as exc:
            raise runs.RunError(f"{output}: cannot write the results: {exc.strerror or exc}") from None
        console.print(f"wrote {output}")


def _check_output_file(path: Path) -> None:
    """An output file that can be written: not a folder, and under a folder that exists or can be made (the
    nearest existing ancestor is a folder). A one-line UsageError otherwise."""
    if path.is_dir():
        raise UsageError(f"--output {path}: is a folder; give a file name, e.g. {path / 'results.json'}")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise UsageError(f"--output {path}: {parent} is a file, not a folder")


# ------------------------------------------------------------------------------------------------- summarize


@app.command()
@guarded
def summarize(
    inputs: Annotated[Optional[list[str]], typer.Argument(help="Files, a folder, '-' for stdin, or a JSONL file.",
                                                          show_default=False)] = None,
    model: Annotated[Optional[str], typer.Option(help="A summarization model directory "
                                                      "\\[default: the latest summarization run's final/].")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write summaries here; a rerun skips "
                                                                        "inputs already in it.")] = None,
    fmt: Annotated[Literal["jsonl", "text"], typer.Option("--format", help="jsonl (id, source, summary) or "
                                                                             "text.")] = "jsonl",
    text_column: Annotated[str, typer.Option(help="Text column of a JSONL/CSV/Parquet input.")] = "text",
    id_column: Annotated[str, typer.Option(help="Id column of a JSONL/CSV/Parquet input.")] = "id",
    max_new_tokens: Annotated[Optional[int], typer.Option(min=1, help="Generation cap \\[default: the model's].")] = None,
    num_beams: Annotated[Optional[int], typer.Option(min=1, help="Beam search width \\[default: the run's "
                                                                  "generation.num_beams, else 1].")] = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1, help="Documents per generation batch at the longest "
                                                                   "input; shorter ones share batches of up to 2x "
                                                                   "as many in the same tokens \\[default: the "
                                                                   "run's generation.batch_size, else 16].")] = None,
    precision: Annotated[Optional[Literal["fp32", "bf16", "auto"]], typer.Option(
        help="fp32, bf16 (autocast; faster where bf16 is native, may change a few words) or auto (bf16 where "
             "native) \\[default: fp32].")] = None,
    num_processes: ProcsOpt = 1,
):
    """Summarize documents with a fine-tuned model.

    [bold]Examples:[/]

        llmctl summarize --model runs/summarization/final docs/*.txt --output summaries.jsonl
        cat article.txt | llmctl summarize -
        llmctl summarize --model runs/summarization/final docs/ --output s.jsonl --num-processes 2
    """
    from llmctl import runs
    from llmctl.data import DataError

    if model is None:
        last = runs.latest_run(task="summarization")
        if last is None:
            raise DataError("no --model given and no finished summarization run under runs/")
        model = str(last / "final")
    if num_processes > 1 and "LOCAL_RANK" not in os.environ:
        _relaunch(Cluster(processes=num_processes))
        return
    from llmctl.summarize import run_summarize

    overrides = {"max_new_tokens": max_new_tokens, "num_beams": num_beams, "batch_size": batch_size,
                 "precision": precision}
    # One process at a time appends to an output file (two would summarize the same documents twice); the
    # main process holds the file's lock while the command runs.
    lock = None
    if output is not None and _is_main_process():
        _check_output_file(output)
        lock = runs.RunLock.for_file(output)
        try:
            lock.acquire()
        except OSError as exc:
            raise runs.RunError(f"{output}: cannot use this output file: {exc.strerror or exc}") from None
    try:
        done = run_summarize(modeling_path(model), list(inputs or []), output=output, fmt=fmt, settings=None,
                             text_column=text_column, id_column=id_column, console=console if output else None,
                             stdin=sys.stdin, overrides=overrides)
    finally:
        if lock is not None:
            lock.release()
    if output is not None and _is_main_process():
        console.quiet = False  # --quiet still prints the final results
        console.print(f"summarize: {done['done']} new, {done['skipped']} already in {output}")


# ---------------------------------------------------------------------------------------------------- output


def _print_plan(plan: dict) -> None:
    table = Table(title="plan (dry run: nothing was done)", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")

    def add(prefix, value):
        if isinstance(value, dict):
            for k, v in value.items():
                add(f"{prefix}.{k}" if prefix else k, v)
        else:
            if isinstance(value, int) and not isinstance(value, bool):
                value = f"{value:,}"
            table.add_row(prefix, str(value))

    add("", plan)
    console.print(table)


def _print_results(results: dict, run) -> None:
    table = Table(title=f"results: {run.root}", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value", justify="right")
    for key in ("parameters", "steps", "world_size", "train_loss", "val_loss", "initial_val_perplexity",
                "val_perplexity", "unigram_perplexity", "perplexity_vs_unigram", "tokens_seen", "tokens_per_sec",
                "train_seconds", "wall_seconds"):
        v = results.get(key)
        if v is None:
            continue
        table.add_row(key, f"{v:,.4f}" if isinstance(v, float) else f"{v:,}")
    console.print(table)
    for s in results.get("samples", []):
        console.print(f"[bold]{s['prompt']}[/]{s['continuation']}", markup=True, highlight=False)
    console.print(f"model: {run.final}  (loads with transformers.AutoModelForCausalLM.from_pretrained)")


def modeling_path(path: str) -> str:
    from llmctl.modeling import resolve_path

    return resolve_path(path)


def _print_metrics(result: dict) -> None:
    table = Table(title=f"eval: {result.get('model') or result.get('predictions_file')}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in result["metrics"].items():
        if isinstance(v, bool) or not isinstance(v, (int, float, str)):
            continue
        table.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))
    console.print(table)
    for note in result.get("notes", []):
        console.print(note)


def _print_task_results(results: dict, run) -> None:
    table = Table(title=f"results: {run.root} ({results['task']}): untrained -> trained", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value", justify="right")
    for k, v in results["metrics"].items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        before = results.get("initial_metrics", {}).get(k)
        base = results.get("baseline_metrics", {}).get(k)
        shown = f"{v:.4f}" if isinstance(v, float) else str(v)
        if isinstance(before, (int, float)):
            shown = f"{before:.4f} -> {shown}"
        if isinstance(base, (int, float)):
            shown += f"  (baseline {base:.4f})"
        table.add_row(k, shown)
    for key in ("best_step", "steps", "train_seconds", "wall_seconds"):
        if results.get(key) is not None:
            table.add_row(key, str(results[key]))
    console.print(table)
    console.print(f"model: {run.final}   predictions: {results['predictions']}")


def _register_subcommands() -> None:
    """The commands that live in their own modules (each imports its heavy libraries only when it runs)."""
    from llmctl import compress, export_cli, generate_cli, recipes_cli, report, runs_cli, serve

    app.add_typer(recipes_cli.app, name="recipes")
    app.command("runs")(guarded(runs_cli.command))
    app.command("report")(guarded(report.command))
    app.command("generate")(guarded(generate_cli.generate))
    app.command("chat")(guarded(generate_cli.chat))
    app.command("export")(guarded(export_cli.export))
    app.command("compress")(guarded(compress.compress))
    app.command("serve")(guarded(serve.serve))


_register_subcommands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
