"""The plain way of batched generation: the peer of llmctl's `generation.generate` in tests/bench_generate.py.

What a user following the transformers documentation writes to generate for a list of texts, and nothing more:
the texts in their given order, cut into batches of `--batch-size`, each batch tokenized with the tokenizer's own
padding (on the left for a decoder-only model, as the docs say, with EOS standing in for a missing pad token)
and truncation, then one `model.generate` call per batch: greedy (`do_sample=False`, one beam), a fixed
`max_new_tokens`, the model in fp32 on the CPU. The new tokens are decoded with `skip_special_tokens=True`.

    python tests/peers/generate_peer.py MODEL_DIR TEXTS.jsonl --batch-size 32 --max-new-tokens 48 \\
        [--max-length 192] [--field document] [--limit 96]

Prints one JSON line: outputs, seconds (the generation calls, tokenizing and decoding included; loading the
model is not), outputs_per_sec and new_tokens (generated tokens up to and including each row's EOS).
"""

from __future__ import annotations

import argparse
import json
import time


def peer_generate(model, tokenizer, texts: list[str], *, batch_size: int, max_new_tokens: int,
                  max_length: int | None = None) -> tuple[list[str], list[list[int]]]:
    """Outputs (decoded, stripped) and the new token ids of every text (up to and including EOS), in order."""
    import torch

    encoder_decoder = bool(model.config.is_encoder_decoder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not encoder_decoder:
        # Decoder-only models continue the prompt from its last column: pad and cut on the left.
        tokenizer.padding_side = "left"
        tokenizer.truncation_side = "left"
    eos = model.generation_config.eos_token_id
    if eos is None:
        eos = tokenizer.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos])
    model.eval()
    outputs: list[str] = []
    tokens: list[list[int]] = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(texts[start:start + batch_size], padding=True, truncation=max_length is not None,
                          max_length=max_length, return_tensors="pt")
        with torch.no_grad():
            sequences = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                       pad_token_id=tokenizer.pad_token_id)
        new = sequences[:, 1:] if encoder_decoder else sequences[:, batch["input_ids"].shape[1]:]
        outputs += [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
        for row in new.tolist():
            cut = next((i + 1 for i, t in enumerate(row) if t in eos_ids), len(row))
            tokens.append(row[:cut])
    return outputs, tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="a saved model and tokenizer (a directory)")
    ap.add_argument("texts", help="JSON Lines, one input text per line in FIELD")
    ap.add_argument("--field", default="document")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, required=True)
    ap.add_argument("--max-length", type=int, default=None, help="truncate inputs to this many tokens")
    ap.add_argument("--limit", type=int, default=0, help="the first N texts only (0 = all)")
    args = ap.parse_args()

    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    with open(args.texts, encoding="utf-8") as f:
        texts = [json.loads(line)[args.field] for line in f if line.strip()]
    texts = texts[: args.limit] if args.limit else texts
    config = AutoConfig.from_pretrained(args.model)
    cls = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    model = cls.from_pretrained(args.model)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    start = time.perf_counter()
    outputs, tokens = peer_generate(model, tokenizer, texts, batch_size=args.batch_size,
                                    max_new_tokens=args.max_new_tokens, max_length=args.max_length)
    seconds = time.perf_counter() - start
    print(json.dumps({"outputs": outputs, "seconds": round(seconds, 3),
                      "outputs_per_sec": round(len(outputs) / seconds, 2),
                      "new_tokens": sum(len(t) for t in tokens)}))


if __name__ == "__main__":
    main()
