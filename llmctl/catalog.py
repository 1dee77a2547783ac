"""The recipes that ship inside the package (llmctl/recipes), and how a recipe argument finds one.

`find` takes what the user typed: an existing file wins; otherwise a shipped recipe's name (`gpt-small`,
`gpt-small.toml`, `tiny/pretrain`) or its repository path (`recipes/tiny/pretrain.toml`, so the commands in the
README work outside a checkout). `resolve_paths` turns a recipe's `pkg:` model paths and `embedded:` data files
into real paths. Only the standard library and llmctl.recipe are imported here, so `llmctl --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path

from llmctl.recipe import Recipe, RecipeError, load

SUFFIX = ".toml"


def recipes_dir() -> Path:
    """The folder of shipped recipes inside the installed (or checked-out) package."""
    return Path(__file__).resolve().with_name("recipes")


def _name_of(path: Path) -> str:
    """`.../recipes/tiny/pretrain.toml` -> `tiny/pretrain`."""
    return path.relative_to(recipes_dir()).with_suffix("").as_posix()


def shipped_name(path: Path | str) -> str | None:
    """The shipped name of a recipe file (`tiny/pretrain`), or None for a file outside the shipped recipes."""
    try:
        return _name_of(Path(path).resolve())
    except ValueError:
        return None


def shipped() -> list[tuple[str, Path]]:
    """(name, path) of every shipped recipe, sorted by name: gpt-small, ..., tiny/pretrain, ..."""
    root = recipes_dir()
    found = [(_name_of(p), p) for p in root.rglob(f"*{SUFFIX}") if p.is_file()] if root.is_dir() else []
    return sorted(found)


def _stem(name: str) -> str:
    """What the user typed, as a shipped name: `./recipes/tiny/pretrain.toml` -> `tiny/pretrain`."""
    stem = name.strip().replace("\\", "/")
    while stem.startswith("./"):
        stem = stem[2:]
    stem = stem.removeprefix("recipes/")
    return stem.removesuffix(SUFFIX)


def find(name_or_path: str | Path) -> Path:
    """An existing recipe file as given, else the shipped recipe of that name. Raises RecipeError."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    name = str(name_or_path)
    stem = _stem(name)
    for known, known_path in shipped():
        if known == stem:
            return known_path
    raise RecipeError([f"{name}: no recipe file of that name, and no shipped recipe called {stem!r} (see `llmctl recipes`)"])


def for_task(task: str) -> Path:
    """The shipped recipe of a fine-tuning task: recipes/<task>.toml."""
    path = recipes_dir() / f"{task}{SUFFIX}"
    if not path.is_file():
        raise RecipeError([f"no shipped recipe for task {task!r} (see `llmctl recipes`)"])
    return path


def resolve_paths(recipe: Recipe) -> Recipe:
    """The recipe with `pkg:` model/tokenizer paths and `embedded:` data files replaced by real paths (the same
    object when there is nothing to replace). Raises ModelError or DataError for a name that does not exist."""
    from llmctl import embedded
    from llmctl.modeling import resolve_path

    update = {}
    for section in ("model", "tokenizer"):
        part = getattr(recipe, section)
        real = resolve_path(part.path)
        if real != part.path:
            update[section] = part.model_copy(update={"path": real})
    files = {}
    for key in ("train_files", "validation_files"):
        given = getattr(recipe.data, key)
        real = [embedded.resolve(f) for f in given]
        if real != given:
            files[key] = real
    if files:
        update["data"] = recipe.data.model_copy(update=files)
    return recipe.model_copy(update=update) if update else recipe


def _first_comment(path: Path) -> str:
    """The first sentence of the file's leading comment (its first lines up to a blank or an indented one)."""
    parts = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            if parts or line.strip():
                break
            continue
        text = line[1:]
        if not text.strip() or text.startswith("   "):  # a blank comment line or an example command
            if parts:
                break
            continue
        parts.append(text.strip())
    text = " ".join(parts)
    end = text.find(". ")
    return (text[: end + 1] if end >= 0 else text).removesuffix(":")


def summary(path: Path | str) -> dict:
    """name (the shipped name, or the recipe's own name for another file), task, model, description, path."""
    path = Path(path)
    recipe = load(path)
    return {
        "name": shipped_name(path) or recipe.name,
        "task": recipe.task,
        "model": recipe.model.path or recipe.model.arch,
        "description": recipe.description or _first_comment(path),
        "path": str(path),
    }
