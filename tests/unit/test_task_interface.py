"""Every fine-tuning task through the task interface alone, on a tiny model: records -> features -> a batch the
model's head takes (a finite loss) -> predictions -> metrics and the baseline, with no per-task code here."""

import math

import pytest
import torch

from llmctl import recipe, tasks
from llmctl import tokenizer as tok_mod
from llmctl.generation import GenerationSettings

RECORDS = {
    "summarization": [{"document": f"Ana baked {i} loaves in Tolm. The oven was hot.", "summary": f"Ana baked {i}."}
                      for i in range(6)],
    "translation": [{"translation": {"en": f"the {w} house", "ro": f"casa {w}"}}
                    for w in ("red", "big", "old", "new", "blue", "small")],
    "classification": [{"text": t, "label": lab} for t, lab in
                       [("good food", "pos"), ("bad food", "neg"), ("good day", "pos"), ("bad day", "neg"),
                        ("good cat", "pos"), ("bad cat", "neg")]],
    "qa": [{"id": str(i), "question": "Who baked?", "context": f"Ana baked {i} loaves.",
            "answers": {"text": ["Ana"], "answer_start": [0]} if i % 2 == 0 else {"text": [], "answer_start": []}}
           for i in range(6)],
    "multiple_choice": [{"sent1": f"Ana is a baker in town {i}.", "sent2": "Every morning she",
                         "ending0": "bakes bread.", "ending1": "mends nets.", "ending2": "sings songs.",
                         "label": i % 3} for i in range(6)],
}
ARCH = {"encoder": ("bert", {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                             "intermediate_size": 64, "max_position_embeddings": 64}),
        "seq2seq": ("t5", {"d_model": 32, "d_ff": 64, "d_kv": 16, "num_layers": 1, "num_decoder_layers": 1, "num_heads": 2}),
        "causal": ("gpt2", {"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 64})}


def cases():
    for name in tasks.finetunable():
        for family in tasks.get(name).families:
            yield name, family


@pytest.mark.parametrize("name,family", list(cases()))
def test_task_interface_end_to_end(name, family):
    from llmctl import evaluation, modeling

    task = tasks.get(name)
    arch, config = ARCH[family]
    r = recipe.load(None, [], base={"name": "t", "task": name, "seed": 3, "data": {
        "train_files": ["x"], "max_source_length": 40, "max_target_length": 12, "source_lang": "en",
        "target_lang": "ro", "doc_stride": 8}, "model": {"arch": arch, "config": config}})
    where = [f"f:{i}" for i in range(1, 7)]
    examples = [task.normalize(w, rec, r.data) for w, rec in zip(where, RECORDS[name])]
    examples, where, skipped = task.clean(examples, where)
    assert skipped == 0 and len(examples) == 6
    tok = tok_mod.train_bpe(list(task.tokenizer_texts(examples)) * 5, vocab_size=300, min_frequency=1,
                            eos_token="<|endoftext|>", pad_token="<|pad|>", show_progress=False)
    probe = modeling.task_config(r, task, tok)
    assert modeling.check_task_family(task, probe, "test") == family
    context = None if family == "seq2seq" else modeling.context_length(probe)
    spec = task.spec(r, tok, examples, family, context, lambda *a: None)
    assert tasks.base.Spec.from_info(spec.to_info()) == spec  # what eval reads back is what training used
    config = modeling.task_config(r, task, tok, extra=task.config_overrides(spec))
    model = modeling.task_model(r, config, task.auto_class(family), seed=3)

    feats, cut = task.features(examples, where, tok, spec)
    batch = task.collator(tok.pad_token_id)(feats[:4])
    loss = model(**batch).loss
    assert math.isfinite(loss.item()) and loss.item() > 0

    settings = GenerationSettings(max_new_tokens=spec.max_new_tokens or 1, batch_size=4,
                                  max_source_length=spec.max_source_length)
    got = task.predict(model, examples, where, tok, spec, settings, **task.prediction_options(examples))
    assert len(got.items) == len(examples)
    assert len(got.capped) == (len(examples) if task.generates else 0)
    names = evaluation.metric_names(task, [])
    kwargs = task.metric_kwargs(r.eval, spec)
    metrics = task.score(names, got.items, examples, where, spec, kwargs)
    base = evaluation.baseline(task, spec, examples, examples, where, names, kwargs)
    assert set(metrics) == set(base) and all(k.split(".")[0] in names for k in metrics)
    row = task.row(examples[0], got.items[0], spec)
    assert {"prediction", "reference"} <= set(row)


def test_baselines_are_the_trivial_predictions():
    """The baseline each task documents: lead sentence, copy, majority label, no answer, majority position."""
    ex = [{"source": "First one. Second one.", "target": "x"}]
    assert tasks.get("summarization").baseline([], ex, None) == ["First one."]
    assert tasks.get("translation").baseline([], ex, None) == ["First one. Second one."]
    spec = tasks.base.Spec(task="classification", family="encoder", max_source_length=8, labels=("a", "b"))
    train = [{"label": "b"}, {"label": "b"}, {"label": "a"}]
    assert tasks.get("classification").baseline(train, [{}, {}], spec) == [1, 1]
    assert tasks.get("qa").baseline([], [{"id": 7}], None) == [
        {"id": "7", "prediction_text": "", "no_answer_probability": 1.0}]
    assert tasks.get("multiple_choice").baseline([{"label": 2}, {"label": 2}, {"label": 0}], [{}], None) == [2]


def test_multiple_choice_accuracy_equals_the_reference():
    from sklearn.metrics import accuracy_score

    task = tasks.get("multiple_choice")
    examples = [{"label": y} for y in (0, 1, 2, 3, 1, 1)]
    preds = [0, 2, 2, 3, 0, 1]
    got = task.score(["accuracy"], preds, examples, [""] * 6, None, {})
    assert got == {"accuracy.accuracy": pytest.approx(accuracy_score([0, 1, 2, 3, 1, 1], preds))}
    assert got["accuracy.accuracy"] == pytest.approx(4 / 6)


def test_adding_a_task_needs_no_change_outside_its_module():
    """No stage branches on a task's name: the names appear only in llmctl/tasks/ (and the recipe schema)."""
    import re
    from pathlib import Path

    root = Path(tasks.__file__).parents[1]
    pattern = re.compile(r"""(==|!=|in)\s*\(?\s*["'](summarization|translation|classification|qa|multiple_choice)["']""")
    offenders = []
    for path in root.glob("*.py"):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.name}:{i}: {line.strip()}")
    assert offenders == []


def test_import_graph_has_no_cycles():
    """Imports inside llmctl/ (at module level and inside functions) form no cycle: cli -> stages ->
    tasks/evaluation -> data/modeling/runs."""
    import ast
    from pathlib import Path

    root = Path(tasks.__file__).parents[1]
    modules = {}
    for path in root.rglob("*.py"):
        rel = path.relative_to(root.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        modules[name] = path
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for t in targets:
                if t in modules and t != name and not name.startswith(t + "."):
                    graph[name].add(t)

    state, stack, cycles = {}, [], []

    def visit(n):
        state[n] = "open"
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == "open":
                cycles.append(stack[stack.index(m):] + [m])
            elif m not in state:
                visit(m)
        stack.pop()
        state[n] = "done"

    for n in sorted(graph):
        if n not in state:
            visit(n)
    assert cycles == []
    importers_of_cli = {n for n, deps in graph.items() if "llmctl.cli" in deps} - {"llmctl.__main__"}
    assert "llmctl.finetune" not in graph["llmctl.evaluation"] and importers_of_cli == set()
