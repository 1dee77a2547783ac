"""Extractive question answering (SQuAD v1/v2 style): predict the span of the context that answers a question.

A record is `{"id", "question", "context", "answers": {"text": [...], "answer_start": [...]}}`; empty answer lists
mark an unanswerable question (SQuAD 2.0). Contexts longer than the model's window are cut into overlapping
windows ("features"): each window holds the whole question and a slice of the context, consecutive slices sharing
`doc_stride` tokens so that an answer cut by one window boundary lies whole in the next window.

Training labels are token indices of the answer's first and last token in each window; a window that does not hold
the whole answer, and every window of an unanswerable question, points both at the null position (the CLS token,
or index 0 for tokenizers without one). At evaluation the model's start/end logits of all windows of an example
are mapped back to character spans of the context through the tokenizer's offsets (`postprocess`).

Functions take a list of records or a batch of columns (the dict of lists `Dataset.map(batched=True)` passes).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from llmctl.tasks.base import Predictions, RecordCheck, Spec, Task, request_text


class QAError(Exception):
    """Bad QA data: one line naming the file and line."""


# ------------------------------------------------------------------------------------------------------ records


def _rows(records) -> list[dict]:
    # A datasets batch is a mapping (a LazyBatch, not a dict) of equally long columns; turn it into records so
    # one code path serves both.
    if isinstance(records, Mapping):
        keys = list(records)
        n = len(records[keys[0]]) if keys else 0
        return [{k: records[k][i] for k in keys} for i in range(n)]
    return list(records)


def _answer_ok(context: str, text, start) -> bool:
    if not isinstance(text, str) or not text or isinstance(start, bool) or not isinstance(start, int):
        return False
    return 0 <= start and context[start : start + len(text)] == text


class AnswerCheck(RecordCheck):
    """Drops the records whose answers are not at `answer_start` in the context, and rejects duplicate ids.

    A wrong offset would otherwise train the model on whatever span happens to sit there. A record is dropped
    if any of its answers is wrong (SQuAD dev records carry several), or if its text and start lists differ in
    length. When every answerable record is wrong the offsets are surely systematically off (bytes vs
    characters, 1-based, ...), so that is an error rather than a silently empty split. Ids key predictions to
    references in the squad metrics, so a repeated id would score one question's answer against another's.
    """

    def __init__(self):
        self.bad: list[str] = []
        self.answerable = 0
        self.seen: dict[str, str] = {}

    def keep(self, where, rec):
        key = str(rec.get("id"))
        if key in self.seen:
            raise QAError(f"{where}: duplicate id {key!r} (first at {self.seen[key]})")
        self.seen[key] = where
        answers = rec.get("answers") or {"text": [], "answer_start": []}
        texts, starts = list(answers.get("text", [])), list(answers.get("answer_start", []))
        if not texts and not starts:
            return True
        self.answerable += 1
        context = rec.get("context", "")
        if len(texts) == len(starts) and all(_answer_ok(context, t, s) for t, s in zip(texts, starts)):
            return True
        self.bad.append(where)
        return False

    def done(self):
        if self.answerable and len(self.bad) == self.answerable:
            raise QAError(f"{self.bad[0]}: no answer is in its context ({len(self.bad)} records)")
        return len(self.bad)


def check_answers(records: list[dict], where: list[str]) -> tuple[list[dict], int]:
    """`AnswerCheck` over lists: (kept records, how many were dropped)."""
    checker = AnswerCheck()
    kept = [rec for rec, loc in zip(records, where, strict=True) if checker.keep(loc, rec)]
    return kept, checker.done()


def references(records: list[dict]) -> list[dict]:
    """Gold answers in the form the squad / squad_v2 metrics take."""
    return [
        {"id": str(r["id"]), "answers": {"text": list(r["answers"]["text"]),
                                         "answer_start": list(r["answers"]["answer_start"])}}
        for r in _rows(records)
    ]


def pick_metric(records: list[dict]) -> str:
    """squad_v2 when some question is unanswerable, squad otherwise (v2 would report empty NoAns_* keys)."""
    return "squad_v2" if any(not r["answers"]["text"] for r in _rows(records)) else "squad"


def metric_predictions(predictions: list[dict], metric: str) -> list[dict]:
    """Keep the keys the metric accepts: `evaluate` rejects unknown keys such as "nbest", and squad (v1) also
    rejects "no_answer_probability"."""
    keys = ("id", "prediction_text", "no_answer_probability") if metric == "squad_v2" else ("id", "prediction_text")
    return [{k: p[k] for k in keys} for p in predictions]


# ----------------------------------------------------------------------------------------------------- features


def _cls_index(input_ids: list[int], cls_id) -> int:
    # Tokenizers without a CLS token (GPT-2, Llama) have no natural null position; index 0 is the convention.
    if cls_id is not None and cls_id in input_ids:
        return input_ids.index(cls_id)
    return 0


def _trim(offsets: tuple[int, int], context: str) -> tuple[int, int]:
    """A character span [start, end) of the context without its leading and trailing whitespace."""
    # Byte-level BPE tokens carry their leading space (" Paris" spans ' Paris'); trimming makes spans start on
    # the word, so labels and predicted text are the same whatever the tokenizer's add_prefix_space/trim_offsets.
    start, end = offsets
    while start < end and context[start].isspace():
        start += 1
    while end > start and context[end - 1].isspace():
        end -= 1
    return start, end


def _answer_chars(rec: dict) -> tuple[int, int] | None:
    """Character span [start, end) of the first answer, whitespace trimmed; None when unanswerable or empty."""
    answers = rec.get("answers") or {}
    texts, starts = answers.get("text") or [], answers.get("answer_start") or []
    if not texts or not starts:
        return None
    context = rec["context"]
    # Clamped so that an unchecked, out-of-range offset labels nothing instead of raising IndexError.
    start = min(max(int(starts[0]), 0), len(context))
    start, end = _trim((start, min(start + len(texts[0]), len(context))), context)
    return (start, end) if start < end else None


def _encode(records: list[dict], tokenizer, max_length: int, doc_stride: int):
    """Tokenize question/context pairs into overlapping windows; return (rows, encoding, context sequence id)."""
    rows = _rows(records)
    # Questions with leading whitespace waste window room and, for byte-level tokenizers, change the tokens.
    questions = _fit_questions([r["question"].lstrip() for r in rows], tokenizer, max_length, doc_stride)
    contexts = [r["context"] for r in rows]
    # A left-padding tokenizer puts the context first, so the question stays next to the generated side.
    context_first = getattr(tokenizer, "padding_side", "right") == "left"
    first, second = (contexts, questions) if context_first else (questions, contexts)
    try:
        enc = tokenizer(
            first,
            second,
            truncation="only_first" if context_first else "only_second",
            max_length=max_length,
            stride=doc_stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            padding=False,
        )
    except Exception as exc:  # the Rust tokenizer raises its own exception types, with a multi-line message
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise QAError(
            f"cannot cut question/context pairs into windows of {max_length} tokens with stride {doc_stride}: {msg}"
        ) from None
    return rows, enc, (0 if context_first else 1)


def _fit_questions(questions: list[str], tokenizer, max_length: int, doc_stride: int) -> list[str]:
    """Cut questions too long to leave a window more than doc_stride context tokens.

    The Rust tokenizer panics (a PanicException, which is not an Exception, after printing a Rust backtrace) when
    the room left for the context is not larger than the stride, and fails when the question alone exceeds
    max_length. One overlong
    question (rare: SQuAD questions are under 64 tokens) should not stop a dataset, so it keeps its first tokens,
    at most half the window: a question that filled all but stride + 1 tokens would make one window per token.
    """
    specials = tokenizer.num_special_tokens_to_add(pair=True)
    budget = min(max_length - specials - doc_stride - 1, (max_length - specials) // 2)
    if doc_stride < 0 or budget < 1:
        raise QAError(
            f"max_length={max_length} with doc_stride={doc_stride} leaves no room for a question: a window holds "
            f"the question, {specials} special tokens and more than doc_stride context tokens; raise max_length "
            f"or lower doc_stride"
        )
    enc = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)
    return [
        q if len(ids) <= budget else q[: offsets[budget - 1][1]]
        for q, ids, offsets in zip(questions, enc["input_ids"], enc["offset_mapping"])
    ]


def _context_range(seq_ids: list, context_seq: int) -> tuple[int, int]:
    idx = [i for i, s in enumerate(seq_ids) if s == context_seq]
    return (idx[0], idx[-1]) if idx else (-1, -1)


def _positions(offsets: list, seq_ids: list, context_seq: int, answer: tuple[int, int] | None, cls: int):
    """Token indices of the answer's first and last token in this window, or (cls, cls)."""
    if answer is None:
        return cls, cls
    lo, hi = _context_range(seq_ids, context_seq)
    if lo < 0:
        return cls, cls
    start_char, end_char = answer
    if offsets[lo][0] > start_char or offsets[hi][1] < end_char:  # answer not wholly in this window
        return cls, cls
    # Start: the last context token that begins at or before the answer; end: the first that reaches its end.
    start = lo
    while start + 1 <= hi and offsets[start + 1][0] <= start_char:
        start += 1
    end = hi
    while end - 1 >= start and offsets[end - 1][1] >= end_char:
        end -= 1
    return start, end


def _features(records, tokenizer, max_length: int, doc_stride: int, for_eval: bool) -> dict[str, list]:
    rows, enc, context_seq = _encode(records, tokenizer, max_length, doc_stride)
    cls_id = getattr(tokenizer, "cls_token_id", None)
    out: dict[str, list] = {"input_ids": [], "attention_mask": []}
    if "token_type_ids" in enc:
        out["token_type_ids"] = []
    out["start_positions"], out["end_positions"] = [], []
    if for_eval:
        out["example_id"], out["offset_mapping"], out["cls_index"] = [], [], []
    answers = [_answer_chars(r) for r in rows]
    for i, sample in enumerate(enc["overflow_to_sample_mapping"]):
        context = rows[sample]["context"]
        ids = list(enc["input_ids"][i])
        seq_ids = enc.sequence_ids(i)
        offsets = [
            _trim(tuple(o), context) if s == context_seq else None for o, s in zip(enc["offset_mapping"][i], seq_ids)
        ]
        cls = _cls_index(ids, cls_id)
        start, end = _positions(offsets, seq_ids, context_seq, answers[sample], cls)
        out["input_ids"].append(ids)
        out["attention_mask"].append(list(enc["attention_mask"][i]))
        if "token_type_ids" in out:
            out["token_type_ids"].append(list(enc["token_type_ids"][i]))
        out["start_positions"].append(start)
        out["end_positions"].append(end)
        if for_eval:
            out["example_id"].append(str(rows[sample]["id"]))
            out["offset_mapping"].append([list(o) if o is not None else None for o in offsets])
            out["cls_index"].append(cls)
    return out


def prepare_train_features(records, tokenizer, *, max_length: int = 384, doc_stride: int = 128) -> dict[str, list]:
    """Windows of question + context with the answer's token positions (start_positions, end_positions).

    Returns input_ids, attention_mask, token_type_ids (when the tokenizer makes them), start_positions and
    end_positions, one entry per window; a record yields one window or more. Unpadded: the collator pads.
    """
    return _features(records, tokenizer, max_length, doc_stride, for_eval=False)


def prepare_eval_features(records, tokenizer, *, max_length: int = 384, doc_stride: int = 128) -> dict[str, list]:
    """The same windows as `prepare_train_features`, plus what `postprocess` needs to map logits back to text:
    example_id (the record's id), offset_mapping ([start, end) characters of each context token, None for
    question and special tokens) and cls_index (the null position). start/end positions are kept too, so an
    evaluation can report the span loss on the same batches."""
    return _features(records, tokenizer, max_length, doc_stride, for_eval=True)


def collator(pad_id: int):
    """Right-pad windows into a batch. Right padding keeps the token indices of start/end positions valid
    whatever the tokenizer's padding side. Non-model columns (example_id, offset_mapping, ...) are dropped."""
    import torch

    from llmctl.tasks.batching import pad_inputs

    def collate(rows: list[dict]) -> dict:
        batch = pad_inputs(rows, pad_id)
        for key in ("start_positions", "end_positions"):
            if key in rows[0] and rows[0][key] is not None:
                batch[key] = torch.as_tensor([r[key] for r in rows], dtype=torch.long)
        return batch

    return collate


# ------------------------------------------------------------------------------------------------- predictions


def postprocess(
    records,
    features,
    start_logits,
    end_logits,
    *,
    n_best: int = 20,
    max_answer_length: int = 30,
    null_threshold: float = 0.0,
    allow_impossible: bool = True,
) -> list[dict]:
    """Turn per-window start/end logits into one answer per record, in record order.

    `features` is what `prepare_eval_features` returned (a dict of lists or a Dataset); start_logits[i] and
    end_logits[i] are window i's logits (a 2-D array, or a list of 1-D arrays when batches were padded to
    different lengths; entries past the window's length are ignored). Candidates are the n_best start and end
    tokens of each window, kept when both are context tokens, end >= start and the span is at most
    max_answer_length tokens; a span's score is start + end logit. The null score of a record is the lowest
    start + end logit at the null position over its windows: a window that does not hold the answer must point
    there, so the lowest is the window that most believes it holds one. With allow_impossible the prediction is
    "" when null score - best span score > null_threshold; no_answer_probability is then the two-way softmax
    of those scores (sigmoid of their difference), else 0.0.
    """
    import numpy as np

    rows = _rows(records)
    example_ids = [str(x) for x in features["example_id"]]
    offsets_all = list(features["offset_mapping"])
    cls_all = list(features["cls_index"]) if "cls_index" in _columns(features) else [0] * len(example_ids)
    if len(start_logits) != len(example_ids) or len(end_logits) != len(example_ids):
        raise ValueError(f"got logits for {len(start_logits)}/{len(end_logits)} windows, expected {len(example_ids)}")
    by_example: dict[str, list[int]] = {}
    for i, eid in enumerate(example_ids):
        by_example.setdefault(eid, []).append(i)

    results = []
    for rec in rows:
        context = rec["context"]
        best: dict[str, float] = {}  # text -> best score (the same text can come from two overlapping windows)
        null_score = math.inf
        for f in by_example.get(str(rec["id"]), []):
            offsets = offsets_all[f]
            n = len(offsets)
            starts = np.asarray(start_logits[f], dtype=np.float64)[:n]
            ends = np.asarray(end_logits[f], dtype=np.float64)[:n]
            cls = int(cls_all[f])
            null_score = min(null_score, float(starts[cls] + ends[cls]))
            top_starts = np.argsort(starts)[::-1][:n_best]
            top_ends = np.argsort(ends)[::-1][:n_best]
            for s in top_starts:
                if offsets[s] is None:
                    continue
                for e in top_ends:
                    if offsets[e] is None or e < s or e - s + 1 > max_answer_length:
                        continue
                    text = context[offsets[s][0] : offsets[e][1]]
                    score = float(starts[s] + ends[e])
                    if text and score > best.get(text, -math.inf):
                        best[text] = score
        ranked = sorted(best.items(), key=lambda kv: kv[1], reverse=True)
        best_text, best_score = ranked[0] if ranked else ("", -math.inf)
        no_answer_probability = 0.0
        if allow_impossible:
            if null_score == math.inf:  # no window at all (all filtered out upstream): nothing to answer from
                null_score = 0.0
            if null_score - best_score > null_threshold:
                best_text = ""
            no_answer_probability = _sigmoid(null_score - best_score)
            ranked = sorted([*ranked, ("", null_score)], key=lambda kv: kv[1], reverse=True)
        results.append({
            "id": str(rec["id"]),
            "prediction_text": best_text,
            "no_answer_probability": no_answer_probability,
            "nbest": [{"text": t, "score": s} for t, s in ranked[:5]],
        })
    return results


def _columns(features) -> list[str]:
    return list(features.column_names) if hasattr(features, "column_names") else list(features)


def _sigmoid(x: float) -> float:
    if x == math.inf:
        return 1.0
    if x == -math.inf:
        return 0.0
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


# ------------------------------------------------------------------------------------------------------- task


@dataclass(kw_only=True)
class ExtractiveQA(Task):
    # Span heads exist for encoders and for several decoder-only and encoder-decoder models (GPT-2, Llama, BART, T5).
    families: tuple[str, ...] = ("encoder", "causal", "seq2seq")
    auto_classes: dict = field(default_factory=lambda: dict.fromkeys(
        ("encoder", "causal", "seq2seq"), "AutoModelForQuestionAnswering"))
    peft_types: dict = field(default_factory=lambda: dict.fromkeys(("encoder", "causal", "seq2seq"),
                                                                   "QUESTION_ANS"))

    def normalize(self, where, rec, d):
        """A SQuAD-style record with the recipe's column names; answers as {"text": [...], "answer_start": [...]}."""
        from llmctl.data import DataError, require_column, text_field

        def start(k, value) -> int:
            """A character offset: a non-negative integer, an integral float (1.0), or a string of digits (CSV)."""
            offset = None
            if isinstance(value, int) and not isinstance(value, bool):
                offset = value
            elif isinstance(value, float) and value.is_integer():
                offset = int(value)
            elif isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
                offset = int(value.strip())
            if offset is None or offset < 0:
                raise DataError(f"{where}: column '{col}.answer_start' answer {k} must be a non-negative integer "
                                f"(a character offset into the context), got {show(value)}")
            return offset

        def show(value) -> str:  # a bad value in a one-line message, cut short
            text = repr(value)
            return text if len(text) <= 60 else text[:57] + "..."

        # Ids key predictions to references in the squad metrics: a record without one is bad input, not
        # something to number by its location (which changes when the file is edited).
        rid = require_column(where, rec, d.id_column, role="id")
        if isinstance(rid, float) and rid.is_integer():  # an integer id column with gaps, as pandas writes it
            rid = int(rid)
        if rid is None or (isinstance(rid, str) and not rid.strip()):
            raise DataError(f"{where}: id column '{d.id_column}' is empty ({'null' if rid is None else repr(rid)})")
        if isinstance(rid, bool) or not isinstance(rid, (str, int)):
            raise DataError(f"{where}: id column '{d.id_column}' must hold text or an integer, got {show(rid)}")
        col = d.answers_column
        answers = require_column(where, rec, col, role="answers")
        if not isinstance(answers, dict) or "text" not in answers or "answer_start" not in answers:
            raise DataError(f"{where}: column '{col}' must be {{\"text\": [...], \"answer_start\": [...]}}")
        texts, starts = answers["text"], answers["answer_start"]
        if isinstance(texts, str):  # a single answer written without lists
            texts = [texts]
            starts = starts if isinstance(starts, list) else [starts]
        for key, value in (("text", texts), ("answer_start", starts)):
            if not isinstance(value, (list, tuple)):
                raise DataError(f"{where}: column '{col}.{key}' must be a list, got {show(value)}")
        if len(texts) != len(starts):
            raise DataError(f"{where}: column '{col}' has {len(texts)} answer texts but {len(starts)} answer_start "
                            f"values; give one start per text")
        for k, text in enumerate(texts, 1):
            if not isinstance(text, str):
                raise DataError(f"{where}: column '{col}.text' answer {k} must be a string, got {show(text)}")
        return {
            "id": str(rid),
            "question": text_field(where, rec, d.question_column, "question"),
            "context": text_field(where, rec, d.context_column, "context"),
            "answers": {"text": list(texts), "answer_start": [start(k, x) for k, x in enumerate(starts, 1)]},
        }

    def check(self):
        return AnswerCheck()

    def tokenizer_texts(self, examples):
        for ex in examples:
            yield ex["question"]
            yield ex["context"]

    def spec(self, recipe, tokenizer, train, family, context, say):
        d = recipe.data
        length = min(d.max_source_length, context or d.max_source_length)
        return Spec(task=self.name, family=family, context=context, max_source_length=length,
                    doc_stride=min(d.doc_stride, length // 2))

    def spec_from_info(self, info, config, family, context):
        length = info.get("max_source_length") or context or 384
        return Spec.from_info(info, task=self.name, family=family, context=context, max_source_length=length,
                              doc_stride=min(info.get("doc_stride") or 128, length // 2))

    def features(self, examples, where, tokenizer, spec):
        cols = prepare_train_features(examples, tokenizer, max_length=spec.max_source_length,
                                      doc_stride=spec.doc_stride)
        return [dict(zip(cols, row)) for row in zip(*cols.values())], 0

    def collator(self, pad_id: int):
        return collator(pad_id)

    def prediction_options(self, examples):
        # "No answer" is a possible prediction only when the split has unanswerable questions (SQuAD 2.0).
        return {"allow_impossible": any(not ex["answers"]["text"] for ex in examples)}

    def predict(self, model, examples, where, tokenizer, spec, settings, **options):
        from llmctl.tasks.batching import forward_batches

        if not examples:
            return Predictions([])
        cols = prepare_eval_features(examples, tokenizer, max_length=spec.max_source_length,
                                     doc_stride=spec.doc_stride)
        rows = [dict(zip(cols, r)) for r in zip(*cols.values())]
        starts, ends = [], []
        for chunk, out in forward_batches(model, rows, collator(tokenizer.pad_token_id), settings.batch_size):
            for i, r in enumerate(chunk):
                n = len(r["input_ids"])
                starts.append(out.start_logits[i, :n].float().tolist())
                ends.append(out.end_logits[i, :n].float().tolist())
        preds = postprocess(examples, cols, starts, ends,
                            allow_impossible=options.get("allow_impossible", True))
        return Predictions(preds)

    def score(self, names, predictions, examples, where, spec, kwargs):
        from llmctl.tasks.base import compute_metrics

        refs = references(examples)
        out = {}
        for name in names:
            if name in ("squad", "squad_v2"):
                out.update(compute_metrics([name], metric_predictions(predictions, name), refs, kwargs))
            else:  # a text metric (exact_match, ...) on the first reference answer
                texts = [p["prediction_text"] for p in predictions]
                gold = [r["answers"]["text"][0] if r["answers"]["text"] else "" for r in refs]
                out.update(compute_metrics([name], texts, gold, kwargs))
        return out

    def baseline(self, train, examples, spec):
        return [{"id": str(ex["id"]), "prediction_text": "", "no_answer_probability": 1.0} for ex in examples]

    def row(self, example, prediction, spec):
        return {"id": example["id"], "question": example["question"], "prediction": prediction["prediction_text"],
                "reference": list(example["answers"]["text"])}

    def serve_request(self, body, inputs):
        """`{"question", "context"}`. A long context is read in windows, so it is never cut; under --long-input
        reject one over the input limit is a 413."""
        question, context = request_text(body, "question"), request_text(body, "context")
        inputs.check(context, "context")
        return (), {"question": question, "context": context}

    def serve_batch(self, model, key, items, tokenizer, spec, settings):
        """`{"answer", "no_answer_probability"}` per item, predicted as `eval` does ("no answer" allowed)."""
        examples = [{"id": str(i), **it, "answers": {"text": [], "answer_start": []}} for i, it in enumerate(items)]
        got = self.predict(model, examples, [f"request {i + 1}" for i in range(len(items))], tokenizer, spec,
                           settings, allow_impossible=True)
        return [{"answer": p["prediction_text"], "no_answer_probability": round(p["no_answer_probability"], 6)}
                for p in got.items]


TASK = ExtractiveQA(name="qa", default_metrics=("squad_v2",), best_metric="f1", endpoint="/v1/qa")
