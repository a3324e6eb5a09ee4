"""Turn training examples into token ids: sentences for MCL, instruction texts with masked prompts for CIT."""

from __future__ import annotations

from dataclasses import dataclass

IGNORE_INDEX = -100  # label value the causal-LM loss skips


@dataclass(frozen=True)
class EncodedInstruction:
    input_ids: list[int]
    labels: list[int]
    truncated: bool


def encode_instruction(
    tokenizer, text: str, prompt_chars: int, max_length: int, learn_prompt: bool, append_eos: bool
) -> EncodedInstruction:
    """Tokenise ``text`` once and mask the prompt out of the labels.

    The prompt/answer boundary is given in characters (``clm_prompt_len``) and mapped to tokens through the
    tokenizer's character offsets: a token is a target when it ends after the boundary. Tokenising the whole text
    (rather than prompt and answer apart) keeps exactly the tokenisation the model sees at inference, and a token
    that straddles the boundary (" 你" in byte-level BPE) is the answer's first token, so it is learned.
    Special tokens added by the tokenizer (BOS) are never targets. EOS is appended so the model learns to stop.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError("afp needs a fast tokenizer (character offsets) to map clm_prompt_len to tokens")
    encoding = tokenizer(text, return_offsets_mapping=True, add_special_tokens=True)
    special = tokenizer.get_special_tokens_mask(encoding["input_ids"], already_has_special_tokens=True)
    input_ids = list(encoding["input_ids"])
    labels = []
    for token_id, (_, end), is_special in zip(input_ids, encoding["offset_mapping"], special):
        is_target = not is_special and (learn_prompt or end > prompt_chars)
        labels.append(token_id if is_target else IGNORE_INDEX)
    if append_eos and tokenizer.eos_token_id is not None and (not input_ids or input_ids[-1] != tokenizer.eos_token_id):
        input_ids.append(tokenizer.eos_token_id)
        labels.append(tokenizer.eos_token_id)
    truncated = len(input_ids) > max_length
    return EncodedInstruction(input_ids[:max_length], labels[:max_length], truncated)


def encode_sentences(tokenizer, sentences: list[str], max_length: int) -> tuple[list[list[int]], int]:
    """Token ids of each sentence (with the tokenizer's special tokens), truncated; returns ids and how many were
    cut."""
    encoded = tokenizer(sentences, add_special_tokens=True, truncation=False)["input_ids"]
    truncated = sum(len(ids) > max_length for ids in encoded)
    return [list(ids[:max_length]) for ids in encoded], truncated
