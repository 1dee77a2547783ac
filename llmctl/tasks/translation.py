"""Translation: source-language text in, target-language text out. Default metrics sacreBLEU and chrF;
baseline: copy the source."""

from __future__ import annotations

from dataclasses import dataclass

from llmctl.tasks.generative import TextToText


@dataclass(kw_only=True)
class Translation(TextToText):
    def normalize(self, where, rec, d):
        """`{"translation": {"en": ..., "ro": ...}}` records, or the two languages as plain columns."""
        from llmctl.data import DataError, text_field

        pair = rec.get(d.translation_column)
        if pair is None:
            pair = rec
        elif not isinstance(pair, dict):
            raise DataError(f"{where}: column '{d.translation_column}' must hold a {{language: text}} object")
        return {
            "source": text_field(where, pair, d.source_lang, "source-language"),
            "target": text_field(where, pair, d.target_lang, "target-language"),
        }

    def baseline(self, train, examples, spec):
        return [ex["source"] for ex in examples]


TASK = Translation(name="translation", default_metrics=("sacrebleu", "chrf"), best_metric="sacrebleu.score",
                   default_prompt="{source}\nTranslation:", endpoint="/v1/translate", output_field="translation")
