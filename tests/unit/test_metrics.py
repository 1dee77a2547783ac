"""llmctl.metrics: local evaluate modules checked against the reference libraries / definitions."""

import math
import os
import random
import re
import socket
import string
import sys
from collections import Counter

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402

from llmctl import metrics  # noqa: E402

TIGHT = dict(rel=1e-12, abs=1e-12)


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# --------------------------------------------------------------------------------------------------
# names, errors, loading


def test_metric_names():
    assert metrics.METRICS == (
        "accuracy",
        "bleu",
        "chrf",
        "exact_match",
        "f1",
        "perplexity",
        "rouge",
        "sacrebleu",
        "squad",
        "squad_v2",
    )
    assert set(metrics.TEXT_METRICS) == set(metrics.METRICS) - {"perplexity"}
    for name in metrics.TEXT_METRICS:
        assert (metrics.METRICS_DIR / name / f"{name}.py").is_file()
    for table in (metrics.DEFAULT_KWARGS, metrics.DESCRIPTIONS, metrics.PRIMARY_KEY, metrics.HIGHER_IS_BETTER):
        assert set(table) == set(metrics.METRICS)


def test_unknown_metric_message():
    with pytest.raises(metrics.MetricError) as info:
        metrics.load("rogue")
    assert str(info.value) == (
        "unknown metric 'rogue' (did you mean 'rouge'?); valid metrics: accuracy, bleu, chrf, exact_match, "
        "f1, perplexity, rouge, sacrebleu, squad, squad_v2"
    )
    with pytest.raises(metrics.MetricError) as info:
        metrics.compute("zzz", ["a"], ["a"])
    assert str(info.value) == (
        "unknown metric 'zzz'; valid metrics: accuracy, bleu, chrf, exact_match, f1, perplexity, rouge, "
        "sacrebleu, squad, squad_v2"
    )
    assert isinstance(info.value, ValueError)


def test_name_normalization():
    assert metrics.resolve_name("ROUGE") == "rouge"
    assert metrics.resolve_name("squad-v2") == "squad_v2"
    assert metrics.resolve_name(" exact-match ") == "exact_match"


def test_perplexity_is_not_a_text_metric():
    for call in (lambda: metrics.load("perplexity"), lambda: metrics.compute("perplexity", ["a"], ["a"])):
        with pytest.raises(metrics.MetricError, match="perplexity.*model's loss"):
            call()


def test_load_by_path_offline_without_network(monkeypatch):
    """Every module loads from its directory with HF_HUB_OFFLINE=1 and no network at all."""

    def no_network(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    metrics._load.cache_clear()
    for name in metrics.TEXT_METRICS:
        module = metrics.load(name)
        assert module.name == name
        assert metrics.load(name) is module  # cached per process
    assert metrics.compute("exact_match", ["a"], ["a"]) == {"exact_match": 1.0}


def test_evaluate_load_directly():
    """The modules are ordinary evaluate modules: evaluate.load(<dir>) works without llmctl's wrapper."""
    import evaluate

    squad = evaluate.load(str(metrics.metric_path("squad")), keep_in_memory=True)
    out = squad.compute(
        predictions=[{"id": "q1", "prediction_text": "Denver Broncos"}],
        references=[{"id": "q1", "answers": {"text": ["Denver Broncos", "Broncos"], "answer_start": [177, 184]}}],
    )
    assert out == {"exact_match": 100.0, "f1": 100.0}
    rouge = evaluate.load(str(metrics.METRICS_DIR / "rouge" / "rouge.py"), keep_in_memory=True)
    assert rouge.compute(predictions=["a b"], references=["a b"])["rouge1"] == 1.0


def test_input_errors_are_one_line_metric_errors():
    with pytest.raises(metrics.MetricError, match=r"^rouge: got 2 predictions but 1 references$"):
        metrics.compute("rouge", ["a", "b"], ["a"])
    with pytest.raises(metrics.MetricError, match="no predictions"):
        metrics.compute("bleu", [], [])
    with pytest.raises(metrics.MetricError, match="unknown option.*use_stemer"):
        metrics.compute("rouge", ["a"], ["a"], use_stemer=True)
    with pytest.raises(metrics.MetricError) as info:
        metrics.compute("exact_match", [["a"]], ["a"])
    assert "\n" not in str(info.value)
    with pytest.raises(metrics.MetricError, match="same"):
        metrics.compute("sacrebleu", ["a", "b"], [["a", "a"], ["b"]])
    with pytest.raises(metrics.MetricError, match="unknown rouge tokenizer"):
        metrics.compute("rouge", ["a"], ["a"], tokenizer="spaces")


# --------------------------------------------------------------------------------------------------
# rouge

PREDS = [
    "The cat sat on the mat.",
    "A quick brown fox jumps over the lazy dog",
    "the cat sat on the mat\nthen the dog ran away",
    "nothing in common",
    "running runners ran",
]
REFS = [
    "The cat is sitting on the mat.",
    "The quick brown fox jumped over a lazy dog!",
    "The dog ran away.\nThe cat sat on the mat.",
    "completely different words",
    "the runner runs",
]


def _rouge_score_mean(predictions, references, rouge_types, use_stemmer):
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(rouge_types, use_stemmer=use_stemmer)
    out = {}
    for t in rouge_types:
        vals = []
        for p, r in zip(predictions, references):
            s = scorer.score_multi(r, p) if isinstance(r, list) else scorer.score(r, p)
            vals.append(s[t].fmeasure)
        out[t] = vals
    return out


@pytest.mark.parametrize("use_stemmer", [False, True])
def test_rouge_equals_rouge_score_mean(use_stemmer):
    types = ["rouge1", "rouge2", "rougeL", "rougeLsum"]
    expected = _rouge_score_mean(PREDS, REFS, types, use_stemmer)
    got = metrics.compute("rouge", PREDS, REFS, use_stemmer=use_stemmer)
    assert got["tokenizer"] == "default"
    for t in types:
        assert got[t] == pytest.approx(sum(expected[t]) / len(PREDS), **TIGHT)
    per_example = metrics.compute("rouge", PREDS, REFS, use_stemmer=use_stemmer, use_aggregator=False)
    for t in types:
        assert per_example[t] == pytest.approx(expected[t], **TIGHT)
    # rougeLsum splits sentences on newlines: the swapped sentences of example 2 are a perfect summary
    assert per_example["rougeLsum"][2] > 0.9 > per_example["rougeL"][2]
    assert per_example["rougeLsum"][0] == per_example["rougeL"][0]


def test_rouge_multi_reference_and_types():
    refs = [[r, "the mat"] for r in REFS]
    expected = _rouge_score_mean(PREDS, refs, ["rouge1", "rouge3"], False)
    got = metrics.compute("rouge", PREDS, refs, rouge_types=["rouge1", "rouge3"])
    assert set(got) == {"rouge1", "rouge3", "tokenizer"}
    for t in ("rouge1", "rouge3"):
        assert got[t] == pytest.approx(sum(expected[t]) / len(PREDS), **TIGHT)


def test_rouge_chinese_char_tokenizer():
    pred, ref = "猫坐在垫子上", "猫坐在地毯上"
    # rouge_score's default tokenizer drops every CJK character: zero
    default = metrics.compute("rouge", [pred], [ref], tokenizer="default")
    assert default == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0, "rougeLsum": 0.0, "tokenizer": "default"}
    # By hand: 6 vs 6 characters, 4 shared (猫 坐 在 上) -> P = R = F = 4/6; bigrams 2 of 5 shared
    # (猫坐, 坐在) -> 2/5; LCS 猫坐在上 = 4 -> 4/6.
    for tokenizer in ("char", "auto"):
        got = metrics.compute("rouge", [pred], [ref], tokenizer=tokenizer)
        assert got["tokenizer"] == "char"
        assert got["rouge1"] == pytest.approx(4 / 6, **TIGHT)
        assert got["rouge2"] == pytest.approx(2 / 5, **TIGHT)
        assert got["rougeL"] == pytest.approx(4 / 6, **TIGHT)
        assert got["rougeLsum"] == pytest.approx(4 / 6, **TIGHT)
    # auto is the default; English-only input stays on rouge_score's tokenizer
    assert metrics.compute("rouge", [pred], [ref])["tokenizer"] == "char"
    assert metrics.compute("rouge", ["a b"], ["a c"])["tokenizer"] == "default"
    # auto looks at references too
    assert metrics.compute("rouge", ["cat"], ["猫"])["tokenizer"] == "char"


def test_char_tokenizer_tokens():
    from rouge_score.tokenizers import DefaultTokenizer

    char_tokenizer_cls = sys.modules[type(metrics.load("rouge")).__module__].CharTokenizer
    tok = char_tokenizer_cls()
    assert tok.tokenize("我爱 GPT-4 模型！Hello, world") == ["我", "爱", "gpt", "4", "模", "型", "hello", "world"]
    assert tok.tokenize("ひらがなカタカナ한국") == list("ひらがなカタカナ한국")
    # on non-CJK text it is exactly rouge_score's default tokenizer, with and without stemming
    for stem in (False, True):
        for text in PREDS + REFS + ["Ünïcode café -- naïve 3.14 it's"]:
            assert char_tokenizer_cls(stem).tokenize(text) == DefaultTokenizer(stem).tokenize(text)


def test_rouge_mixed_chinese_english_by_hand():
    # tokens: pred [我, 用, gpt, 写] ref [我, 用, gpt, 4, 写, 诗]: 4 shared -> P=1, R=4/6, F=0.8
    got = metrics.compute("rouge", ["我用GPT写"], ["我用 GPT-4 写诗"], rouge_types=["rouge1"])
    assert got == {"rouge1": pytest.approx(0.8, **TIGHT), "tokenizer": "char"}


# --------------------------------------------------------------------------------------------------
# sacrebleu / chrf

MT_PREDS = [
    "The cat is on the mat.",
    "There is a cat on the mat!",
    "It's raining cats and dogs, isn't it?",
    "He read the book (twice) in 2023.",
]
MT_REFS_A = [
    "The cat sits on the mat.",
    "A cat is on the mat!",
    "It is raining cats and dogs, isn't it?",
    "He read the book twice in 2023.",
]
MT_REFS_B = [
    "On the mat is the cat.",
    "There's a cat on the mat.",
    "It rains heavily, doesn't it?",
    "In 2023 he read that book two times.",
]


def test_sacrebleu_equals_corpus_bleu():
    import sacrebleu

    def check(got, ref):
        assert got["score"] == pytest.approx(ref.score, **TIGHT)
        assert got["counts"] == ref.counts and got["totals"] == ref.totals
        assert got["precisions"] == pytest.approx(ref.precisions, **TIGHT)
        assert got["bp"] == pytest.approx(ref.bp, **TIGHT)
        assert (got["sys_len"], got["ref_len"]) == (ref.sys_len, ref.ref_len)

    check(metrics.compute("sacrebleu", MT_PREDS, MT_REFS_A), sacrebleu.corpus_bleu(MT_PREDS, [MT_REFS_A]))
    multi = [[a, b] for a, b in zip(MT_REFS_A, MT_REFS_B)]
    check(metrics.compute("sacrebleu", MT_PREDS, multi), sacrebleu.corpus_bleu(MT_PREDS, [MT_REFS_A, MT_REFS_B]))
    kwargs = dict(lowercase=True, tokenize="intl", smooth_method="floor", smooth_value=0.2)
    check(
        metrics.compute("sacrebleu", MT_PREDS, multi, **kwargs),
        sacrebleu.corpus_bleu(MT_PREDS, [MT_REFS_A, MT_REFS_B], **kwargs),
    )
    check(
        metrics.compute("sacrebleu", MT_PREDS[:1], MT_REFS_B[:1], use_effective_order=True),
        sacrebleu.corpus_bleu(MT_PREDS[:1], [MT_REFS_B[:1]], use_effective_order=True),
    )


def test_chrf_equals_sacrebleu():
    import sacrebleu

    multi = [[a, b] for a, b in zip(MT_REFS_A, MT_REFS_B)]
    got = metrics.compute("chrf", MT_PREDS, MT_REFS_A)
    assert got == {
        "score": pytest.approx(sacrebleu.corpus_chrf(MT_PREDS, [MT_REFS_A]).score, **TIGHT),
        "char_order": 6,
        "word_order": 0,
        "beta": 2,
    }
    plus = metrics.compute("chrf", MT_PREDS, multi, word_order=2)
    expected = sacrebleu.CHRF(word_order=2).corpus_score(MT_PREDS, [MT_REFS_A, MT_REFS_B]).score
    assert plus["score"] == pytest.approx(expected, **TIGHT)
    assert plus["word_order"] == 2
    assert plus["score"] != got["score"]


# --------------------------------------------------------------------------------------------------
# bleu


def test_bleu_by_hand():
    pred = "the quick brown fox jumps over the dog"  # 8 tokens
    ref = "the quick brown fox jumped over the lazy dog"  # 9 tokens
    # clipped matches: 1-grams 7/8, 2-grams 4/7, 3-grams 2/6, 4-grams 1/5; geometric mean (1/30)^(1/4)
    # brevity penalty exp(1 - 9/8)
    got = metrics.compute("bleu", [pred], [ref])
    assert got["precisions"] == pytest.approx([7 / 8, 4 / 7, 2 / 6, 1 / 5], **TIGHT)
    assert got["brevity_penalty"] == pytest.approx(math.exp(-1 / 8), **TIGHT)
    assert got["bleu"] == pytest.approx(30**-0.25 * math.exp(-1 / 8), **TIGHT)
    assert got["length_ratio"] == pytest.approx(8 / 9, **TIGHT)
    assert (got["translation_length"], got["reference_length"]) == (8, 9)
    smoothed = metrics.compute("bleu", [pred], [ref], smooth=True)
    assert smoothed["precisions"] == pytest.approx([8 / 9, 5 / 8, 3 / 7, 2 / 6], **TIGHT)
    geo = (8 / 9 * 5 / 8 * 3 / 7 * 2 / 6) ** 0.25
    assert smoothed["bleu"] == pytest.approx(geo * math.exp(-1 / 8), **TIGHT)
    # 13a splits punctuation; no 4-gram match -> 0 without smoothing; clipping of repeated words
    assert metrics.compute("bleu", ["the the the the"], ["the cat"])["precisions"][0] == pytest.approx(1 / 4)
    assert metrics.compute("bleu", ["Hello, world!"], ["Hello world"])["translation_length"] == 4
    # multiple references: clip by the max count in any reference; r = the shortest reference
    multi = metrics.compute("bleu", ["the cat the cat"], [["the cat", "a cat the cat on"]], max_order=2)
    assert multi["precisions"] == pytest.approx([3 / 4, 2 / 3], **TIGHT)
    assert multi["reference_length"] == 2 and multi["brevity_penalty"] == 1.0


def _random_corpus(n, seed):
    rng = random.Random(seed)
    vocab = "the a cat dog sat on mat runs quickly , . ! ? big small red (green) it's don't 42 3.5 over".split()

    def sentence():
        return " ".join(rng.choice(vocab) for _ in range(rng.randint(5, 18)))

    preds = [sentence() for _ in range(n)]
    refs = []
    for p in preds:  # references share a good part of the prediction
        words = p.split()
        i = rng.randint(0, len(words) - 1)
        refs.append(" ".join(words[:i] + sentence().split()[: rng.randint(0, 4)] + words[i + 1 :]))
    return preds, refs


def test_bleu_equals_sacrebleu_without_smoothing():
    import sacrebleu

    preds, refs = _random_corpus(60, seed=0)
    got = metrics.compute("bleu", preds, refs)
    ref = sacrebleu.corpus_bleu(preds, [refs], tokenize="13a", smooth_method="none", force=True)
    assert 0.1 < got["bleu"] < 0.9
    assert got["bleu"] * 100 == pytest.approx(ref.score, rel=1e-9, abs=1e-9)
    assert [p * 100 for p in got["precisions"]] == pytest.approx(ref.precisions, rel=1e-9, abs=1e-9)
    assert got["brevity_penalty"] == pytest.approx(ref.bp, rel=1e-9, abs=1e-9)
    assert (got["translation_length"], got["reference_length"]) == (ref.sys_len, ref.ref_len)

    # Short corpus so that the brevity penalty applies (c < r).
    short_preds = [" ".join(p.split()[:4]) for p in preds]
    got = metrics.compute("bleu", short_preds, refs, max_order=2)
    ref = sacrebleu.BLEU(max_ngram_order=2, smooth_method="none", force=True).corpus_score(short_preds, [refs])
    assert got["brevity_penalty"] < 1
    assert got["bleu"] * 100 == pytest.approx(ref.score, rel=1e-9, abs=1e-9)

    # Several references: the same when they have equal lengths ...
    refs2 = [" ".join(reversed(r.split())) for r in refs]
    got = metrics.compute("bleu", preds, [[a, b] for a, b in zip(refs, refs2)])
    ref = sacrebleu.corpus_bleu(preds, [refs, refs2], smooth_method="none", force=True)
    assert got["bleu"] * 100 == pytest.approx(ref.score, rel=1e-9, abs=1e-9)
    # ... but the effective reference length differs when they do not: bleu (like the hub module and
    # tensorflow nmt) takes the SHORTEST reference of each example, sacrebleu the one CLOSEST to the
    # prediction's length. Precisions (clipped n-gram counts) still agree.
    halves = [" ".join(r.split()[: len(r.split()) // 2]) for r in refs]
    got = metrics.compute("bleu", preds, [[a, b] for a, b in zip(refs, halves)])
    ref = sacrebleu.corpus_bleu(preds, [refs, halves], smooth_method="none", force=True)
    assert [p * 100 for p in got["precisions"]] == pytest.approx(ref.precisions, rel=1e-9, abs=1e-9)
    assert got["reference_length"] == sum(len(t.split()) for t in sacrebleu_tokens(halves))
    assert got["reference_length"] < ref.ref_len
    assert got["brevity_penalty"] == 1.0 and got["bleu"] * 100 > ref.score


def sacrebleu_tokens(texts):
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    tok = Tokenizer13a()
    return [tok(t) for t in texts]


# --------------------------------------------------------------------------------------------------
# accuracy / f1 / exact_match


def test_accuracy_and_f1_equal_sklearn():
    from sklearn.metrics import accuracy_score, f1_score

    rng = random.Random(1)
    refs = [rng.randint(0, 2) for _ in range(50)]
    preds = [r if rng.random() < 0.6 else rng.randint(0, 2) for r in refs]
    weights = [rng.random() for _ in refs]
    bin_refs, bin_preds = [int(r > 0) for r in refs], [int(p > 0) for p in preds]

    assert metrics.compute("accuracy", preds, refs)["accuracy"] == pytest.approx(accuracy_score(refs, preds), **TIGHT)
    assert metrics.compute("accuracy", preds, refs, normalize=False, sample_weight=weights)[
        "accuracy"
    ] == pytest.approx(accuracy_score(refs, preds, normalize=False, sample_weight=weights), **TIGHT)
    assert metrics.compute("f1", bin_preds, bin_refs)["f1"] == pytest.approx(f1_score(bin_refs, bin_preds), **TIGHT)
    assert metrics.compute("f1", bin_preds, bin_refs, pos_label=0, sample_weight=weights)["f1"] == pytest.approx(
        f1_score(bin_refs, bin_preds, pos_label=0, sample_weight=weights), **TIGHT
    )
    for average in ("macro", "micro", "weighted"):
        assert metrics.compute("f1", preds, refs, average=average)["f1"] == pytest.approx(
            f1_score(refs, preds, average=average), **TIGHT
        )
    per_class = metrics.compute("f1", preds, refs, average=None)["f1"]
    assert per_class == pytest.approx(list(f1_score(refs, preds, average=None)), **TIGHT)
    # string labels
    labels = ["neg", "pos"]
    s_refs, s_preds = [labels[r] for r in bin_refs], [labels[p] for p in bin_preds]
    assert metrics.compute("accuracy", s_preds, s_refs)["accuracy"] == pytest.approx(
        accuracy_score(s_refs, s_preds), **TIGHT
    )
    assert metrics.compute("f1", s_preds, s_refs, pos_label="pos")["f1"] == pytest.approx(
        f1_score(s_refs, s_preds, pos_label="pos"), **TIGHT
    )


def test_exact_match():
    preds = ["Paris", "the cat!", "Answer: 42", "  spaced", "Cat 3"]
    refs = ["Paris", "The cat", "answer 41", "spaced", "cat"]
    assert metrics.compute("exact_match", preds, refs) == {"exact_match": pytest.approx(1 / 5)}
    assert metrics.compute("exact_match", preds, refs, ignore_case=True)["exact_match"] == pytest.approx(1 / 5)
    assert metrics.compute("exact_match", preds, refs, ignore_case=True, ignore_punctuation=True)[
        "exact_match"
    ] == pytest.approx(2 / 5)
    all_on = dict(ignore_case=True, ignore_punctuation=True, ignore_numbers=True, regexes_to_ignore=[r"^\s+", r"\s+$"])
    # the regexes run first (hub order), so "  spaced" matches but "Cat 3" -> "cat " keeps the space left
    # by removing the digit and does not match "cat"; "Answer: 42" -> "answer " matches "answer 41".
    assert metrics.compute("exact_match", preds, refs, **all_on)["exact_match"] == pytest.approx(4 / 5)


# --------------------------------------------------------------------------------------------------
# squad / squad_v2, against a small transcription of the official scripts


def ref_normalize(s):
    s = s.lower()
    s = s.translate(str.maketrans("", "", string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def ref_f1(pred, gold):
    p, g = ref_normalize(pred).split(), ref_normalize(gold).split()
    same = sum((Counter(p) & Counter(g)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


def ref_squad(preds, golds_list):
    em = sum(max(float(ref_normalize(p) == ref_normalize(g)) for g in golds) for p, golds in zip(preds, golds_list))
    f1 = sum(max(ref_f1(p, g) for g in golds) for p, golds in zip(preds, golds_list))
    return {"exact_match": 100 * em / len(preds), "f1": 100 * f1 / len(preds)}


def ref_f1_v2(pred, gold):
    p, g = ref_normalize(pred).split(), ref_normalize(gold).split()
    if not p or not g:
        return float(p == g)
    return ref_f1(pred, gold)


def ref_squad_v2(preds, answers_list, na_probs=None, thresh=1.0):
    rows = []
    for i, (p, answers) in enumerate(zip(preds, answers_list)):
        golds = [a for a in answers if ref_normalize(a)] or [""]
        em = max(float(ref_normalize(p) == ref_normalize(g)) for g in golds)
        f1 = max(ref_f1_v2(p, g) for g in golds)
        if na_probs is not None and na_probs[i] > thresh:
            em = f1 = float(not answers)
        rows.append((bool(answers), em, f1))

    def agg(sel):
        return 100 * sum(r[1] for r in sel) / len(sel), 100 * sum(r[2] for r in sel) / len(sel), len(sel)

    out = dict(zip(("exact", "f1", "total"), agg(rows)))
    has = [r for r in rows if r[0]]
    no = [r for r in rows if not r[0]]
    if has:
        out.update(zip(("HasAns_exact", "HasAns_f1", "HasAns_total"), agg(has)))
    if no:
        out.update(zip(("NoAns_exact", "NoAns_f1", "NoAns_total"), agg(no)))
    return out


QA_PREDS = [
    "Denver Broncos",  # exact after normalization
    "the Carolina Panthers!",  # article + punctuation
    "Santa Clara, California",  # partial overlap with one of several golds
    "in 1990",  # best of several golds
    "an apple a day",  # articles only differ
    "Levi's Stadium in Santa Clara",
    "nothing relevant",
]
QA_GOLDS = [
    ["Denver Broncos", "The Denver Broncos"],
    ["Carolina Panthers"],
    ["Santa Clara", "Levi's Stadium in the San Francisco Bay Area at Santa Clara, California."],
    ["1989", "in 1990 or so", "1990"],
    ["apple day"],
    ["Levi's Stadium"],
    ["gold"],
]


def test_squad_equals_official_definition():
    expected = ref_squad(QA_PREDS, QA_GOLDS)
    assert 0 < expected["exact_match"] < expected["f1"] < 100
    plain = metrics.compute("squad", QA_PREDS, QA_GOLDS)
    assert plain == {
        "exact_match": pytest.approx(expected["exact_match"], **TIGHT),
        "f1": pytest.approx(expected["f1"], **TIGHT),
    }
    hub_preds = [{"id": str(i), "prediction_text": p} for i, p in enumerate(QA_PREDS)]
    hub_refs = [{"id": str(i), "answers": {"text": g, "answer_start": [0] * len(g)}} for i, g in enumerate(QA_GOLDS)]
    assert metrics.compute("squad", hub_preds[::-1], hub_refs) == plain  # matched by id, not position
    # answer_start may be left out with the convenience API
    no_start = [{"id": r["id"], "answers": {"text": r["answers"]["text"]}} for r in hub_refs]
    assert metrics.compute("squad", hub_preds, no_start) == plain
    # single-string references
    assert metrics.compute("squad", ["The Eiffel tower."], ["eiffel Tower"]) == {"exact_match": 100.0, "f1": 100.0}
    # single strings mixed with lists of gold answers; an answer that is only an article normalizes to
    # "" and gets F1 0 in SQuAD v1.1 (exact match 1)
    assert metrics.compute("squad", ["a", "b"], ["a", ("b", "c")]) == {"exact_match": 100.0, "f1": 50.0}
    # by hand: "santa clara california" vs "santa clara": P = 2/3, R = 1 -> F1 = 0.8
    assert metrics.compute("squad", ["Santa Clara, California"], ["Santa Clara"])["f1"] == pytest.approx(80.0)


V2_PREDS = QA_PREDS + ["", "", "some answer", "  ", "the"]
V2_ANSWERS = QA_GOLDS + [[], ["an answer"], [], ["x"], []]


def test_squad_v2_equals_official_definition():
    expected = ref_squad_v2(V2_PREDS, V2_ANSWERS)
    assert expected["NoAns_total"] == 3 and expected["HasAns_total"] == 9
    got = metrics.compute("squad_v2", V2_PREDS, V2_ANSWERS)
    assert got == {k: pytest.approx(v, **TIGHT) for k, v in expected.items()}
    # unanswerable: "" and "the" (normalizes to "") score 1, "some answer" scores 0
    assert got["NoAns_exact"] == pytest.approx(200 / 3)

    hub_preds = [{"id": f"q{i}", "prediction_text": p} for i, p in enumerate(V2_PREDS)]
    hub_refs = [{"id": f"q{i}", "answers": {"text": a, "answer_start": [1] * len(a)}} for i, a in enumerate(V2_ANSWERS)]
    assert metrics.compute("squad_v2", hub_preds, hub_refs) == got

    # only answerable / only unanswerable questions: the other group is left out
    only_has = metrics.compute("squad_v2", QA_PREDS, QA_GOLDS)
    assert not any(k.startswith("NoAns") for k in only_has)
    only_no = metrics.compute("squad_v2", ["", "x"], ["", " "])
    assert only_no == {
        "exact": 50.0,
        "f1": 50.0,
        "total": 2,
        "NoAns_exact": 50.0,
        "NoAns_f1": 50.0,
        "NoAns_total": 2,
    }


def test_squad_v2_no_answer_probability():
    rng = random.Random(3)
    probs = [round(rng.random(), 3) for _ in V2_PREDS]
    for thresh in (1.0, 0.5, 0.1):
        expected = ref_squad_v2(V2_PREDS, V2_ANSWERS, probs, thresh)
        got = metrics.compute("squad_v2", V2_PREDS, V2_ANSWERS, no_answer_probability=probs, na_prob_thresh=thresh)
        for k, v in expected.items():
            assert got[k] == pytest.approx(v, **TIGHT), k
        assert {"best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh"} <= set(got)
    # hub format carries the probability in each prediction
    hub_preds = [
        {"id": f"q{i}", "prediction_text": p, "no_answer_probability": pr}
        for i, (p, pr) in enumerate(zip(V2_PREDS, probs))
    ]
    hub_refs = [{"id": f"q{i}", "answers": {"text": a, "answer_start": [1] * len(a)}} for i, a in enumerate(V2_ANSWERS)]
    hub = metrics.compute("squad_v2", hub_preds, hub_refs, na_prob_thresh=0.5)
    plain = metrics.compute("squad_v2", V2_PREDS, V2_ANSWERS, no_answer_probability=probs, na_prob_thresh=0.5)
    assert hub == pytest.approx(plain)

    # best threshold by hand: q0 answerable & right (p=.1), q1 unanswerable but answered (p=.9),
    # q2 answerable & wrong (p=.5). Threshold 0.1 keeps only q0's answer and abstains on the rest:
    # q0 1 + q1 1 + q2 0 = 2/3, the best reachable.
    best = metrics.compute(
        "squad_v2", ["cat", "dog", "bird"], [["cat"], [], ["fish"]], no_answer_probability=[0.1, 0.9, 0.5]
    )
    assert best["best_exact"] == pytest.approx(200 / 3) and best["best_exact_thresh"] == pytest.approx(0.1)
    assert best["exact"] == pytest.approx(100 / 3)  # default threshold 1.0: nothing abstains
