"""A model folder whose config records a task with no head (a pretrained causal LM) is refused in one line that
names the folder and says what to do, not as an unknown --task option the user never gave."""

from __future__ import annotations

import pytest


def test_a_pretrained_language_model_is_refused_with_the_way_forward(tmp_path):
    import transformers

    from llmctl import data
    from llmctl.evaluation import load_model_dir

    config = transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50)
    config.llmctl = {"task": "causal_lm"}
    transformers.GPT2LMHeadModel(config).save_pretrained(tmp_path)
    with pytest.raises(data.DataError) as info:
        load_model_dir(str(tmp_path), default_task="summarization")
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{tmp_path}: the model records task 'causal_lm'")
    assert f"llmctl finetune --task TASK --model {tmp_path}" in message
    with pytest.raises(data.DataError, match="--task nonsense: unknown task"):
        load_model_dir(str(tmp_path), task_name="nonsense")
