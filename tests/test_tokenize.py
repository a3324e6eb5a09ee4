"""CIT masking: clm_prompt_len (characters) becomes the right token boundary; EOS is learned; BOS never is."""

import pytest

from afp_cli.data.tokenize import IGNORE_INDEX, encode_instruction, encode_sentences


def _targets(tokenizer, encoded):
    return tokenizer.decode([token for token, label in zip(encoded.input_ids, encoded.labels) if label != IGNORE_INDEX])


@pytest.mark.parametrize(
    "prompt, answer",
    [
        ("The cat sits on the mat. Answer in Chinese: ", "猫坐在垫子上。"),
        ("我非常喜欢绿茶。 Answer in English: ", "I like green tea very much."),
        ("How are you today? Translate into Chinese:", " 你好"),  # boundary before a space: " 你" is one token
    ],
)
def test_prompt_tokens_are_masked_and_the_answer_is_learned(tiny_tokenizer, prompt, answer):
    encoded = encode_instruction(
        tiny_tokenizer, prompt + answer, len(prompt), max_length=256, learn_prompt=False, append_eos=True
    )
    assert encoded.input_ids[0] == tiny_tokenizer.bos_token_id and encoded.labels[0] == IGNORE_INDEX
    assert encoded.input_ids[-1] == tiny_tokenizer.eos_token_id == encoded.labels[-1]
    assert _targets(tiny_tokenizer, encoded).replace("</s>", "").strip() == answer.strip()
    # the prompt part of the labels is masked, the answer part is not: one boundary, no holes
    first_target = next(index for index, label in enumerate(encoded.labels) if label != IGNORE_INDEX)
    assert all(label == IGNORE_INDEX for label in encoded.labels[:first_target])
    assert all(label != IGNORE_INDEX for label in encoded.labels[first_target:])
    prompt_only = tiny_tokenizer(prompt)["input_ids"]
    assert encoded.input_ids[:first_target] == prompt_only[:first_target]


def test_learn_prompt_keeps_every_token_but_bos_as_target(tiny_tokenizer):
    text = "Hello. Answer in Chinese: 你好"
    encoded = encode_instruction(tiny_tokenizer, text, 26, max_length=256, learn_prompt=True, append_eos=False)
    assert encoded.labels[0] == IGNORE_INDEX
    assert encoded.labels[1:] == encoded.input_ids[1:]
    assert encoded.input_ids[-1] != tiny_tokenizer.eos_token_id


def test_truncation_is_reported(tiny_tokenizer):
    encoded = encode_instruction(
        tiny_tokenizer, "word " * 50 + "Answer in English: ok", 270, max_length=16, learn_prompt=False, append_eos=True
    )
    assert encoded.truncated and len(encoded.input_ids) == len(encoded.labels) == 16


def test_encode_sentences_counts_truncated(tiny_tokenizer):
    ids, truncated = encode_sentences(tiny_tokenizer, ["short", "a much longer sentence " * 10], max_length=8)
    assert truncated == 1 and len(ids[1]) == 8 and ids[0][0] == tiny_tokenizer.bos_token_id
