"""`llmctl recipes`: list the recipes that ship with llmctl, print one, or copy one to edit.

    llmctl recipes                          # a table: name, task, model, description (--json for a list)
    llmctl recipes show gpt-small           # the recipe file as is
    llmctl recipes copy tiny/pretrain       # ./tiny-pretrain.toml, then: llmctl pretrain tiny-pretrain.toml
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(
    help="The recipes that ship with llmctl: list them, print one, copy one to edit.",
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print a JSON list instead of a table.")]
NameArg = Annotated[str, typer.Argument(help="A shipped recipe, e.g. gpt-small or tiny/pretrain.", show_default=False)]

EXIT_ERROR = 1


def _fail(message: str) -> typer.Exit:
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True, highlight=False).print(f"[red]error:[/] {escape(message)}", soft_wrap=True)
    return typer.Exit(EXIT_ERROR)


def _find(name: str) -> Path:
    from llmctl import catalog
    from llmctl.recipe import RecipeError

    try:
        return catalog.find(name)
    except RecipeError as exc:
        raise _fail(" ".join(exc.problems)) from None


def _list(as_json: bool) -> None:
    from llmctl import catalog

    rows = [catalog.summary(path) for _, path in catalog.shipped()]
    if as_json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    from rich.console import Console
    from rich.table import Table

    for row in rows:
        if row["model"].startswith("pkg:"):  # a model shipped inside a Python package: its name says enough
            row["model"] = row["model"][4:].split("/", 1)[0]
    table = Table(box=None, pad_edge=False, header_style="bold")
    for key in ("name", "task", "model"):  # never shortened
        table.add_column(key, no_wrap=True, min_width=max(len(row[key]) for row in rows))
    # One line per recipe: the description is cut to the terminal's width (`show` prints all of it).
    table.add_column("description", no_wrap=True, overflow="ellipsis")
    for row in rows:
        table.add_row(row["name"], row["task"], row["model"], row["description"])
    console = Console(highlight=False)
    console.print(table, markup=False)
    console.print("Print one with `llmctl recipes show NAME`, copy one to edit with `llmctl recipes copy NAME`.",
                  markup=False, style="dim")


@app.callback(invoke_without_command=True)
def recipes(ctx: typer.Context, as_json: JsonOpt = False):
    """List the shipped recipes (the same as `llmctl recipes list`)."""
    if ctx.invoked_subcommand is None:
        _list(as_json)


@app.command("list")
def list_(as_json: JsonOpt = False):
    """List the shipped recipes: name, task, model, description."""
    _list(as_json)


@app.command()
def show(name: NameArg):
    """Print a shipped recipe file as it is."""
    path = _find(name)
    text = path.read_text(encoding="utf-8")
    print(text, end="" if text.endswith("\n") else "\n")


@app.command()
def copy(
    name: NameArg,
    dest: Annotated[Optional[Path], typer.Argument(
        help="Where to write \\[default: ./<name>.toml; tiny/pretrain -> tiny-pretrain.toml]; a directory: inside it.",
        show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite DEST if it exists.")] = False,
):
    """Write an editable copy of a shipped recipe, then run it with `llmctl pretrain` or `llmctl finetune`."""
    import tomllib

    from llmctl import catalog

    path = _find(name)
    shipped = catalog.shipped_name(path)
    filename = shipped.replace("/", "-") + catalog.SUFFIX if shipped else path.name
    if dest is None:
        dest = Path(filename)
    elif dest.is_dir():
        dest = dest / filename
    if dest.exists() and not force:
        raise _fail(f"{dest} already exists; pass --force to overwrite it")
    if dest.exists() and not dest.is_file():
        raise _fail(f"{dest} exists and is not a file")
    content = path.read_bytes()
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(content)
    except OSError as exc:
        raise _fail(f"{dest}: cannot write: {exc.strerror or exc}") from None
    try:
        task = tomllib.loads(content.decode("utf-8")).get("task", "causal_lm")
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        task = "causal_lm"
    command = "pretrain" if task == "causal_lm" else "finetune"
    print(f"wrote {dest}")
    print(f"run it with: llmctl {command} {dest}")


@app.command()
def schema(
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write it to this file instead of "
                                                                         "printing it.")] = None,
):
    """The recipe format as a JSON Schema, for editors that complete and check TOML files (for example
    Even Better TOML: `#:schema ./llmctl-recipe.schema.json` at the top of a recipe)."""
    from llmctl.recipe import json_schema

    text = json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"
    if output is None:
        print(text, end="")
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise _fail(f"{output}: cannot write: {exc.strerror or exc}") from None
    print(f"wrote {output}")
