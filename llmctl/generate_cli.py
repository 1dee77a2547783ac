"""`llmctl generate` and `llmctl chat`: text from any generating model llmctl made (or a hub model).

    llmctl generate --model runs/tiny-pretrain --prompt "The "           # streams to a terminal
    llmctl generate --model runs/gpt-small --file prompts.txt -o out.jsonl
    llmctl generate --model runs/summarization --prompt "$(cat report.txt)"   # like summarize, one document
    printf 'hi\\nhow are you\\n' | llmctl chat --model runs/gpt-small

What gets loaded: `--model` is a run directory (its `final/` is used), a model directory or a hub id; without it,
the most recently finished run under the runs root whose model generates text. Decoder-only models load with
AutoModelForCausalLM and encoder-decoders with AutoModelForSeq2SeqLM; an encoder-only model, or a model with a
classification / QA head, cannot generate text and is a one-line error.

How a prompt becomes the model input: a model fine-tuned by llmctl for a generating task (summarization,
translation) records its task in config.json (`llmctl`), and its input is built as that task builds it (the
prompt template or `source_prefix`), with the task's generation budget as the default; so `generate` on a
summarization run gives what `summarize` gives for the same document. Any other model gets the raw prompt.

Decoding is greedy by default. Sampling is on with `--sample`, or when a sampling option (`--temperature`,
`--top-k`, `--top-p`) is given without `--greedy`; it draws from a generator seeded with `--seed` (default 0),
so a command repeated gives the same text.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Optional, TextIO

import typer

DEFAULT_MAX_NEW_TOKENS = 64
USER_TAG = "User:"
ASSISTANT_TAG = "Assistant:"
SYSTEM_TAG = "System:"
PROMPT_COLUMN = "prompt"


# ----------------------------------------------------------------------------------------------------- model


@dataclass
class Generator:
    """A loaded generating model: the model, its tokenizer, its family, and the generating task it was
    fine-tuned for (None for a plain language model)."""

    path: str
    model: object
    tokenizer: object
    family: str  # "causal" or "seq2seq"
    task: object | None = None
    spec: object | None = None
    info: dict | None = None

    @property
    def context(self) -> int | None:
        """Tokens a causal LM's prompt and output share; None for an encoder-decoder or an unknown context."""
        from llmctl.modeling import context_length

        return context_length(self.model.config) if self.family == "causal" else None

    def model_inputs(self, prompts: list[str]) -> list[str]:
        """The prompts as the model reads them: through the task's template for a task model, else as given."""
        if self.task is None:
            return list(prompts)
        from llmctl.tasks.generative import model_inputs

        return model_inputs([{"source": p.strip()} for p in prompts], self.tokenizer, self.spec)


def resolve_model(model: str | None) -> str:
    """The model directory or hub id that `--model` names: a run directory's final/, a model directory, a
    `pkg:` path or a hub id; None is the most recent finished run that generates text."""
    from llmctl import modeling, runs
    from llmctl.data import DataError

    if model is None:
        found = latest_generating_run()
        if found is None:
            raise DataError(f"no --model given and no finished run under {runs.runs_root()} has a model that "
                            "generates text")
        return str(found / "final")
    path = Path(modeling.resolve_path(model))
    if path.is_dir() and not (path / "config.json").exists():
        if (path / "final").is_dir():
            return str(path / "final")
        if (path / "recipe.toml").exists():
            raise modeling.ModelError(f"{model}: the run has no final/ model (it has not finished)")
    return str(path) if path.exists() else model


def latest_generating_run(base: Path | None = None) -> Path | None:
    """The most recently finished run (by results.json time) whose final/ model generates text."""
    from llmctl import modeling, runs
    from llmctl.tokenizer import TokenizerError

    base = runs.runs_root() if base is None else Path(base)
    if not base.is_dir():
        return None
    finished = sorted(base.glob("*/results.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    for results in finished:
        final = results.parent / "final"
        if not (final / "config.json").exists():
            continue
        try:
            generating_family(modeling.load_config(str(final)), str(final))
        except (modeling.ModelError, TokenizerError):
            continue
        return results.parent
    return None


def generating_family(config, source: str) -> str:
    """"causal" or "seq2seq" for a model that generates text; a one-line ModelError for one that cannot."""
    from llmctl import modeling
    from llmctl import tasks as registry

    info = getattr(config, "llmctl", None) or {}
    name = info.get("task") if isinstance(info, dict) else None
    if name in registry.REGISTRY and name != "causal_lm" and not registry.get(name).generates:
        raise modeling.ModelError(f"{source}: a {name} model cannot generate text (it has a {name} head, "
                                  "not a language-model head)")
    fam = modeling.family(config)
    if fam == "encoder":
        raise modeling.ModelError(f"{source}: {config.model_type} is an encoder-only model; it cannot generate "
                                  "text (use a decoder-only or encoder-decoder model)")
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    auto = AutoModelForSeq2SeqLM if fam == "seq2seq" else AutoModelForCausalLM
    if config.model_type not in auto._model_mapping._model_mapping:
        raise modeling.ModelError(f"{source}: {config.model_type} has no text-generation head in transformers "
                                  f"({auto.__name__}); it cannot generate text")
    return fam


def load_generator(model: str | None, device=None) -> Generator:
    """Resolve `--model` and load it for generation, on `device` (default: CUDA when available, else CPU)."""
    import torch

    from llmctl import evaluation, modeling
    from llmctl import tasks as registry
    from llmctl import tokenizer as tok_mod

    path = resolve_model(model)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    config = modeling.load_config(path)
    fam = generating_family(config, path)
    info = getattr(config, "llmctl", None) or {}
    name = info.get("task") if isinstance(info, dict) else None
    if name in registry.REGISTRY and registry.get(name).generates:
        loaded = evaluation.load_model_dir(path, device=device)
        return Generator(path, loaded.model, loaded.tokenizer, fam, loaded.task, loaded.spec, dict(info))
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    net = modeling.load_pretrained(path, AutoModelForSeq2SeqLM if fam == "seq2seq" else AutoModelForCausalLM)
    tokenizer = tok_mod.load(path)
    net.to(device)
    net.eval()
    return Generator(path, net, tokenizer, fam)


# -------------------------------------------------------------------------------------------------- settings


def sampling_options(greedy: bool | None, temperature: float | None, top_k: int | None,
                     top_p: float | None) -> dict:
    """do_sample and the sampling settings: greedy unless --sample, or a sampling option without --greedy."""
    given = temperature is not None or top_k is not None or top_p is not None
    do_sample = (not greedy) if greedy is not None else given
    return {"do_sample": do_sample, "temperature": 1.0 if temperature is None else temperature,
            "top_k": top_k or 0, "top_p": 1.0 if top_p is None else top_p}


def settings_for(gen: Generator, *, max_new_tokens: int | None, sampling: dict, num_beams: int = 1,
                 batch_size: int = 8):
    """GenerationSettings for `gen`: a task model's own budget (as `summarize` uses it) unless overridden;
    otherwise 64 new tokens, at most half of a causal LM's context when none is given."""
    from llmctl.generation import GenerationSettings

    overrides = {"max_new_tokens": max_new_tokens, "num_beams": num_beams, "batch_size": batch_size, **sampling}
    if gen.task is not None:
        from llmctl.summarize import default_settings

        return default_settings(gen.info or {}, overrides)
    if max_new_tokens is None:
        context = gen.context
        overrides["max_new_tokens"] = DEFAULT_MAX_NEW_TOKENS if not context else \
            max(1, min(DEFAULT_MAX_NEW_TOKENS, context // 2))
    return GenerationSettings(**overrides)


# ---------------------------------------------------------------------------------------------------- inputs


def read_prompts(prompts: list[str], files: list[str], stdin: TextIO | None) -> list[str]:
    """--prompt values, then the prompts of each --file (one per line of a text file; the `prompt` column of a
    JSONL/JSON/CSV/Parquet file; '-' is stdin, one prompt per line), in the order given. `stdin` is read when
    neither is given (pass None when it is a terminal)."""
    from llmctl import data

    out = list(prompts)
    for name in files:
        if name == "-":
            out.extend(_lines(stdin if stdin is not None else sys.stdin))
            continue
        path = Path(name)
        for where, rec in data.iter_records(path, txt_documents="line"):
            if data.file_format(path) == "txt":
                out.append(rec["text"])
            else:
                out.append(data.text_field(where, rec, PROMPT_COLUMN, "prompt"))
    if not prompts and not files and stdin is not None:
        out.extend(_lines(stdin))
    if not out:
        raise data.DataError("no prompts: give --prompt TEXT, --file F, or pipe prompts (one per line) to stdin")
    for i, p in enumerate(out, 1):
        if not p.strip():
            raise data.DataError(f"prompt {i}: empty")
    return out


def _lines(stream: TextIO) -> list[str]:
    return [line.rstrip("\r\n") for line in stream if line.strip()]


# ------------------------------------------------------------------------------------------------ generation


def generate_texts(gen: Generator, prompts: list[str], settings, *, seed: int = 0) -> list[str]:
    """One output per prompt, in input order, generated in length-sorted batches (llmctl.generation)."""
    from llmctl import generation

    gen = _with_settings(gen, settings)
    report = generation.generate(gen.model, gen.tokenizer, gen.model_inputs(prompts), settings, seed=seed)
    return report.outputs


def _with_settings(gen: Generator, settings) -> Generator:
    """A task model's spec with the budget of `settings`, as `summarize` adjusts it."""
    if gen.task is None:
        return gen
    spec = replace(gen.spec, max_new_tokens=settings.max_new_tokens)
    if settings.max_source_length:
        spec = replace(spec, max_source_length=settings.max_source_length)
    return replace(gen, spec=spec)


def stream_text(gen: Generator, prompt: str, settings, *, seed: int = 0, out: TextIO | None = None) -> str:
    """Generate for one prompt, writing the text to `out` (default stdout) as it is produced; returns it as
    `generate_texts` would (stripped). Beam search cannot stream: its best sequence is known only at the end."""
    from llmctl import generation

    gen = _with_settings(gen, settings)
    text = gen.model_inputs([prompt])[0]
    limit = generation.source_limit(gen.model, gen.tokenizer, settings, encoder_decoder=gen.family == "seq2seq")
    ids = generation._tokenize(gen.tokenizer, [text], limit, left=gen.family != "seq2seq")[0]
    if not ids:
        raise generation.GenerationError("input 1: empty (no tokens)")
    streamer = make_streamer(gen.tokenizer, out or sys.stdout)
    new = _generate_ids(gen, ids, settings, seed=seed, streamer=streamer)
    return gen.tokenizer.decode(new, skip_special_tokens=True).strip()


def make_streamer(tokenizer, out: TextIO, stop: str | None = None):
    """A transformers TextStreamer (prompt skipped, special tokens hidden) that writes to `out` the text that
    `generate_texts` returns (no whitespace around it), then a newline; given `stop`, nothing from the first
    `stop` on."""
    from transformers import TextStreamer

    class Streamer(TextStreamer):
        def __init__(self):
            super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
            self.pending = ""  # text held back: it may be the start of `stop`
            self.started = False
            self.stopped = False

        def on_finalized_text(self, text: str, stream_end: bool = False):
            if not self.stopped:
                self.pending += text
                if not self.started:
                    self.pending = self.pending.lstrip()
                    self.started = bool(self.pending)
                cut = self.pending.find(stop) if stop else -1
                if cut >= 0:
                    show, self.stopped = self.pending[:cut].rstrip(), True
                elif stream_end:
                    show = self.pending.rstrip()
                else:  # whitespace is held back until text follows it: the output ends stripped, like generate's
                    end = len(self.pending) - (_held_back(self.pending, stop) if stop else 0)
                    show = self.pending[:end].rstrip()
                self.pending = self.pending[len(show):]
                out.write(show)
            if stream_end:
                out.write("\n")
            out.flush()

    return Streamer()


def _held_back(text: str, stop: str) -> int:
    """Length of the longest end of `text` that begins `stop` (it may turn into `stop` with the next tokens)."""
    for n in range(min(len(text), len(stop) - 1), 0, -1):
        if stop.startswith(text[-n:]):
            return n
    return 0


def _generate_ids(gen: Generator, ids: list[int], settings, *, seed: int | None, streamer=None,
                  stop: str | None = None) -> list[int]:
    """The new token ids model.generate gives for one tokenized input, with llmctl.generation's settings;
    sampling is seeded with `seed` first (as llmctl.generation seeds it), or not at all when it is None."""
    import torch

    from llmctl import generation

    tokenizer, model = gen.tokenizer, gen.model
    eos_ids = generation._eos_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = getattr(model.generation_config, "pad_token_id", None)
    if pad_id is None:
        pad_id = eos_ids[0] if eos_ids else 0
    kwargs = generation._generate_kwargs(settings, pad_id=pad_id, eos_ids=eos_ids)
    if streamer is not None:
        kwargs["streamer"] = streamer
    if stop:
        kwargs["stopping_criteria"] = _stop_criteria(tokenizer, stop, len(ids), gen.family == "seq2seq")
    if settings.do_sample and seed is not None:
        torch.manual_seed(seed)
    input_ids = torch.tensor([ids], dtype=torch.long, device=model.device)
    with torch.no_grad():
        sequences = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), **kwargs)
    return sequences[0, 1:].tolist() if gen.family == "seq2seq" else sequences[0, len(ids):].tolist()


def _stop_criteria(tokenizer, stop: str, prompt_len: int, encoder_decoder: bool):
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    start = 1 if encoder_decoder else prompt_len

    class StopText(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            texts = tokenizer.batch_decode(input_ids[:, start:], skip_special_tokens=True)
            return torch.tensor([stop in t for t in texts], dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([StopText()])


# ------------------------------------------------------------------------------------------------------ chat


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def chat_prompt(tokenizer, messages: list[dict]) -> str:
    """The prompt for the assistant's next reply: the tokenizer's chat template (with the generation prompt)
    when it has one, else plain "User: ..." / "Assistant: ..." lines ending with "Assistant:"."""
    if has_chat_template(tokenizer):
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    lines = []
    for m in messages:
        tag = {"system": SYSTEM_TAG, "user": USER_TAG, "assistant": ASSISTANT_TAG}[m["role"]]
        lines.append(f"{tag} {m['content']}")
    lines.append(ASSISTANT_TAG)
    return "\n".join(lines)


def prompt_ids(tokenizer, messages: list[dict]) -> list[int]:
    """chat_prompt as token ids; a template's text already holds its special tokens, so none are added."""
    text = chat_prompt(tokenizer, messages)
    return tokenizer(text, add_special_tokens=not has_chat_template(tokenizer))["input_ids"]


def fit_history(tokenizer, messages: list[dict], budget: int | None) -> list[dict]:
    """`messages` less their oldest turns (a system message stays) until the prompt takes at most `budget`
    tokens; the last user message always stays (generation then keeps the end of an overlong prompt)."""
    if budget is None:
        return list(messages)
    system = [m for m in messages if m["role"] == "system"]
    turns = [m for m in messages if m["role"] != "system"]
    while len(turns) > 1 and len(prompt_ids(tokenizer, system + turns)) > budget:
        turns = turns[1:]
        while len(turns) > 1 and turns[0]["role"] != "user":  # a turn starts with the user's message
            turns = turns[1:]
    return system + turns


def chat_budget(gen: Generator, settings) -> int | None:
    """Prompt tokens a reply leaves room for: the causal LM's context less max_new_tokens (None: no limit)."""
    from llmctl import generation

    return generation.source_limit(gen.model, gen.tokenizer, replace(settings, max_source_length=None),
                                   encoder_decoder=gen.family == "seq2seq")


def reply(gen: Generator, messages: list[dict], settings, *, seed: int | None = 0,
          out: TextIO | None = None) -> str:
    """The assistant's reply to `messages` (the history ending with a user message). Plain prompts stop at the
    next "User:" the model writes. With `out`, the reply is streamed to it as it is generated. Sampling is
    seeded with `seed` first; None draws on from the current random state."""
    budget = chat_budget(gen, settings)
    ids = prompt_ids(gen.tokenizer, fit_history(gen.tokenizer, messages, budget))
    if budget is not None and len(ids) > budget:
        ids = ids[len(ids) - budget:]
    stop = None if has_chat_template(gen.tokenizer) else USER_TAG
    streamer = make_streamer(gen.tokenizer, out, stop=stop) if out is not None else None
    new = _generate_ids(gen, ids, settings, seed=seed, streamer=streamer, stop=stop)
    text = gen.tokenizer.decode(new, skip_special_tokens=True)
    if stop and stop in text:
        text = text[:text.index(stop)]
    return text.strip()


def run_chat(gen: Generator, lines: Iterable[str], settings, *, seed: int = 0, system: str | None = None,
             out: TextIO, stream: bool = False, ask: TextIO | None = None) -> list[dict]:
    """The conversation loop: each line is a user turn, answered with "assistant: ..." on `out`; "/reset"
    clears the history, "/exit" (or the end of `lines`) ends. `ask`, when given, shows a prompt for each turn.
    Returns the history."""
    import torch

    base = [{"role": "system", "content": system}] if system else []
    messages = list(base)
    if settings.do_sample:
        torch.manual_seed(seed)  # once: the whole conversation is reproducible from the seed

    def prompt():
        if ask is not None:
            ask.write("you: ")
            ask.flush()

    prompt()
    for line in lines:
        text = line.rstrip("\r\n").strip()
        if text == "/exit":
            break
        if text == "/reset":
            messages = list(base)
            out.write("(history cleared)\n")
            out.flush()
            prompt()
            continue
        if not text:
            prompt()
            continue
        messages.append({"role": "user", "content": text})
        if stream:
            out.write("assistant: ")
            out.flush()
        answer = reply(gen, messages, settings, seed=None, out=out if stream else None)
        if not stream:
            out.write(f"assistant: {answer}\n")
            out.flush()
        messages.append({"role": "assistant", "content": answer})
        prompt()
    return messages


# ------------------------------------------------------------------------------------------------- commands


ModelOpt = Annotated[Optional[str], typer.Option(
    "--model", help="A run directory (its final/ is used), a model directory or a hub id \\[default: the latest "
                    "finished run whose model generates text].")]
MaxNewOpt = Annotated[Optional[int], typer.Option(
    "--max-new-tokens", min=1, help="Tokens to generate at most \\[default: a fine-tuned model's own budget, "
                                    "else 64, at most half a causal LM's context].")]
TemperatureOpt = Annotated[Optional[float], typer.Option(
    "--temperature", help="Sampling temperature \\[default: 1.0]; implies --sample.")]
TopKOpt = Annotated[Optional[int], typer.Option(
    "--top-k", min=0, help="Sample from the k most likely tokens (0: all); implies --sample.")]
TopPOpt = Annotated[Optional[float], typer.Option(
    "--top-p", help="Nucleus sampling threshold; implies --sample.")]
GreedyOpt = Annotated[Optional[bool], typer.Option(
    "--greedy/--sample", help="Greedy decoding, or sampling \\[default: greedy, unless --temperature, --top-k or "
                              "--top-p is given].")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed of sampling: the same seed gives the same text.")]


def generate(
    prompt: Annotated[Optional[list[str]], typer.Option(
        "--prompt", "-p", help="A prompt (repeatable).")] = None,
    file: Annotated[Optional[list[str]], typer.Option(
        "--file", "-f", help="Prompts from a file (repeatable): one per line of a .txt file, the 'prompt' column "
                             "of a JSONL/CSV/Parquet file, '-' for stdin (one per line).")] = None,
    model: ModelOpt = None,
    max_new_tokens: MaxNewOpt = None,
    temperature: TemperatureOpt = None,
    top_k: TopKOpt = None,
    top_p: TopPOpt = None,
    greedy: GreedyOpt = None,
    num_beams: Annotated[int, typer.Option("--num-beams", min=1, help="Beam search width.")] = 1,
    seed: SeedOpt = 0,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Prompts per generation batch.")] = 8,
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", help="Write JSON Lines {prompt, output} to this file.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON Lines {prompt, output} instead of text.")] = False,
):
    """Generate text from prompts with a causal or encoder-decoder model.

    Prompts come from --prompt, --file, or stdin (one per line) when neither is given. Output: one line per
    prompt (newlines inside an output become spaces when there are several prompts), or JSON Lines with --json
    or --output; a single prompt is streamed to a terminal as it is generated. A fine-tuned summarizer or
    translator reads its prompt as it was trained to (like `summarize`). Greedy unless --sample or a sampling
    option is given. [bold]Examples:[/]

        llmctl generate --model runs/gpt-small --prompt "Once upon a time"
        llmctl generate --model runs/gpt-small --file prompts.txt --temperature 0.8 --top-p 0.9 -o out.jsonl
        cat prompts.txt | llmctl generate --model runs/gpt-small --json
        llmctl generate --model runs/summarization --prompt "$(cat report.txt)"
    """
    stdin = None if sys.stdin is None or sys.stdin.isatty() else sys.stdin
    prompts = read_prompts(prompt or [], file or [], stdin)
    gen = load_generator(model)
    settings = settings_for(gen, max_new_tokens=max_new_tokens, num_beams=num_beams, batch_size=batch_size,
                            sampling=sampling_options(greedy, temperature, top_k, top_p))
    stream = len(prompts) == 1 and output is None and not as_json and num_beams == 1 and sys.stdout.isatty()
    if stream:
        stream_text(gen, prompts[0], settings, seed=seed, out=sys.stdout)
        return
    outputs = generate_texts(gen, prompts, settings, seed=seed)
    if output is not None or as_json:
        lines = [json.dumps({"prompt": p, "output": o}, ensure_ascii=False) + "\n" for p, o in zip(prompts, outputs)]
        if output is None:
            sys.stdout.write("".join(lines))
        else:
            from llmctl import runs

            runs.write_text(output, "".join(lines))
            print(f"generate: {len(outputs)} outputs -> {output}", file=sys.stderr)
        return
    if len(outputs) == 1:
        sys.stdout.write(outputs[0] + "\n")
    else:
        sys.stdout.write("".join(" ".join(o.splitlines()) + "\n" for o in outputs))
    sys.stdout.flush()


def chat(
    model: ModelOpt = None,
    max_new_tokens: MaxNewOpt = None,
    temperature: TemperatureOpt = None,
    top_k: TopKOpt = None,
    top_p: TopPOpt = None,
    greedy: GreedyOpt = None,
    seed: SeedOpt = 0,
    system: Annotated[Optional[str], typer.Option(
        "--system", help="A system message that opens the conversation.")] = None,
):
    """Talk with a model: each line on stdin is your turn, each reply is printed as "assistant: ...".

    The conversation is kept and given to the model with the tokenizer's chat template when it has one, else as
    "User: ..." / "Assistant: ..." lines (the reply then ends at the next "User:"). The oldest turns are left
    out when the conversation no longer fits the model's context. Type /reset to start over, /exit (or end the
    input) to quit. Greedy unless --sample or a sampling option is given. [bold]Examples:[/]

        llmctl chat --model runs/gpt-small
        printf 'hi\\nhow are you\\n' | llmctl chat --model runs/gpt-small --temperature 0.7
        llmctl chat --model path/to/instruct-model --system "Answer briefly."
    """
    gen = load_generator(model)
    if gen.task is not None:  # a fine-tuned summarizer still chats from the raw conversation
        gen = replace(gen, task=None, spec=None)
    settings = settings_for(gen, max_new_tokens=max_new_tokens, sampling=sampling_options(greedy, temperature,
                                                                                           top_k, top_p))
    interactive = sys.stdin is not None and sys.stdin.isatty()
    run_chat(gen, sys.stdin, settings, seed=seed, system=system, out=sys.stdout,
             stream=sys.stdout.isatty(), ask=sys.stderr if interactive else None)
