"""afp's lean loglikelihood scoring (LM head on continuations only, shared prefixes once) against lm-eval's HFLM:
the same numbers on tiny LLaMA / GPT-2 / Gemma 3 models with LoRA on the embeddings, less work, and lm-eval's own
path wherever reuse would not be exact."""

from __future__ import annotations

import pytest

# Gemma 3 270M's layout shrunk: sliding layers with one full layer, one KV head, head_dim set apart from
# hidden/heads, and the final logit soft-capping Gemma 2 has (Gemma 3 270M's config sets it to null)
GEMMA3 = {
    "model_type": "gemma3_text",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 1,
    "head_dim": 16,
    "sliding_window": 512,
    "layer_types": ["sliding_attention", "sliding_attention", "sliding_attention", "full_attention"],
    "final_logit_softcapping": 30.0,
    "max_position_embeddings": 2048,
}
DEMONSTRATIONS = [
    "The cat sits on the mat. Answer: yes</s>",
    "I like green tea very much. Answer: no</s>",
    "你今天好吗？ How are you today? Answer: yes</s>",
    "Der Hund schläft. Le chien dort. Answer: no</s>",
    "猫坐在垫子上。 The cat sits. Answer: yes</s>",
]
QUESTIONS = ["The cat sits on", "green tea very", "How are you today?", "Le chien dort."]
# " tea" is one token of the tiny tokenizer, " yes" three, the others more: both kinds of continuation
CHOICES = [" tea", " yes", " Yes, the cat sits", " 猫坐在垫子上"]


def _requests(shots: int) -> list[tuple[str, str]]:
    demonstrations = "".join(DEMONSTRATIONS[:shots])
    return [(demonstrations + question + " Answer:", choice) for question in QUESTIONS for choice in CHOICES]


def _instances(pairs):
    from lm_eval.api.instance import Instance

    return [Instance("loglikelihood", {}, pair, index) for index, pair in enumerate(pairs)]


def _with_lora(model, targets: list[str]):
    """A peft LoRA with non-zero B matrices (a fresh LoRA is the identity and would hide an adapter bypassed)."""
    import torch
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=targets))
    generator = torch.Generator().manual_seed(0)
    for name, parameter in peft_model.named_parameters():
        if "lora_B" in name or "lora_embedding_B" in name:
            parameter.data = torch.randn(parameter.shape, generator=generator) * 0.5
    return peft_model.eval()


def _tiny(kind: str, tokenizer, **overrides):
    """A tiny random model with LoRA on its input embeddings and attention (and the LM head, where untied)."""
    from afp_cli.model.tiny import build_model, tiny_architecture

    if kind == "gemma3":
        model = build_model({**GEMMA3, **overrides}, tokenizer, seed=0)
        targets = ["embed_tokens", "q_proj", "v_proj"]
    elif kind == "gpt2":
        model = build_model(tiny_architecture("gpt2", n_positions=2048, **overrides), tokenizer, seed=0)
        targets = ["wte", "c_attn"]
    else:
        model = build_model(tiny_architecture("llama", max_position_embeddings=2048, **overrides), tokenizer, seed=0)
        targets = ["embed_tokens", "q_proj", "v_proj", "lm_head"]
    return _with_lora(model.eval(), targets)


def _both(model, tokenizer, batch_size: int = 1, **kwargs):
    from lm_eval.models.huggingface import HFLM

    from afp_cli.evaluation.lean_scoring import LeanHFLM

    return (
        HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, **kwargs),
        LeanHFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, **kwargs),
    )


def _assert_same(reference, lean):
    assert len(reference) == len(lean)
    for (expected, expected_greedy), (got, got_greedy) in zip(reference, lean, strict=True):
        # 1e-4, or two float32 steps where a sum (a random tiny model's, over ~100 byte tokens) is too large in
        # magnitude for 1e-4 to be representable: at |x| > 1024 one float32 step is 1.2e-4
        assert got == pytest.approx(expected, abs=1e-4, rel=2.4e-7)
        assert got_greedy == expected_greedy


@pytest.mark.parametrize("kind", ["llama", "gpt2", "gemma3"])
@pytest.mark.parametrize("batch_size", [1, 4])
@pytest.mark.parametrize("shots", [0, 1, 5])
def test_loglikelihoods_equal_lm_eval_hf(tiny_tokenizer, kind, batch_size, shots):
    model = _tiny(kind, tiny_tokenizer)
    reference_lm, lean_lm = _both(model, tiny_tokenizer, batch_size)
    requests = _instances(_requests(shots))
    reference = reference_lm.loglikelihood(requests, disable_tqdm=True)
    lean = lean_lm.loglikelihood(requests, disable_tqdm=True)
    _assert_same(reference, lean)
    assert (lean_lm.lean_requests, lean_lm.fallback_requests) == (len(requests), 0)
    continuation_lengths = {len(lean_lm._encode_pair(*pair)[1]) for pair in _requests(shots)}
    assert 1 in continuation_lengths and max(continuation_lengths) > 1


def test_lora_reaches_the_scores_through_embeddings_and_head(tiny_tokenizer):
    """The adapter changes the scores (so a path that skipped it would fail the test above); its LM head is the
    peft LoRA module, which lean scoring calls through get_output_embeddings()."""
    from peft.tuners.lora import Linear

    model = _tiny("llama", tiny_tokenizer)
    assert isinstance(model.get_output_embeddings(), Linear)
    requests = _instances(_requests(1))
    _, lean_lm = _both(model, tiny_tokenizer)
    with_adapter = lean_lm.loglikelihood(requests, disable_tqdm=True)
    with model.disable_adapter():
        reference_lm, lean_lm = _both(model, tiny_tokenizer)
        _assert_same(
            reference_lm.loglikelihood(requests, disable_tqdm=True),
            without := lean_lm.loglikelihood(requests, disable_tqdm=True),
        )
    assert max(abs(a[0] - b[0]) for a, b in zip(with_adapter, without, strict=True)) > 0.1


def test_head_runs_on_continuation_positions_and_prefixes_once(tiny_tokenizer):
    """The work saved, counted: LM-head rows are the continuation tokens only, and at 5 shots the blocks see the
    demonstrations once instead of once per request."""
    model = _tiny("llama", tiny_tokenizer)
    reference_lm, lean_lm = _both(model, tiny_tokenizer)
    assert lean_lm.lean_support().supported  # its one-time check runs the model too: before the counting starts
    pairs = _requests(5)
    counts = {"head rows": 0, "embedded tokens": 0}

    def count(name):
        def hook(_module, inputs, _output):
            counts[name] += inputs[0].shape[:-1].numel() if name == "head rows" else inputs[0].numel()

        return hook

    handles = [
        model.get_output_embeddings().register_forward_hook(count("head rows")),
        model.get_input_embeddings().register_forward_hook(count("embedded tokens")),
    ]
    try:
        reference_lm.loglikelihood(_instances(pairs), disable_tqdm=True)
        reference_counts = dict(counts)
        counts.update({"head rows": 0, "embedded tokens": 0})
        lean_lm.loglikelihood(_instances(pairs), disable_tqdm=True)
    finally:
        for handle in handles:
            handle.remove()
    encoded = [lean_lm._encode_pair(*pair) for pair in pairs]
    assert counts["head rows"] == sum(len(continuation) for _, continuation in encoded)
    assert reference_counts["head rows"] == sum(len(context) + len(cont) - 1 for context, cont in encoded)
    assert counts["embedded tokens"] < 0.3 * reference_counts["embedded tokens"]


def test_requests_longer_than_max_length_take_lm_eval_path(tiny_tokenizer):
    model = _tiny("llama", tiny_tokenizer)
    pairs = _requests(5)
    lengths = [sum(map(len, _both(model, tiny_tokenizer)[1]._encode_pair(*pair))) for pair in pairs]
    max_length = sorted(lengths)[len(lengths) // 2]  # half the requests are cut from the left by lm-eval
    reference_lm, lean_lm = _both(model, tiny_tokenizer, batch_size=4, max_length=max_length)
    requests = _instances(pairs)
    _assert_same(reference_lm.loglikelihood(requests, disable_tqdm=True), lean_lm.loglikelihood(requests, True))
    truncated = sum(length - 1 > max_length for length in lengths)
    assert 0 < truncated < len(pairs)
    assert (lean_lm.lean_requests, lean_lm.fallback_requests) == (len(pairs) - truncated, truncated)


def test_sliding_window_shorter_than_the_request_takes_lm_eval_path(tiny_tokenizer):
    window = 48
    model = _tiny("gemma3", tiny_tokenizer, sliding_window=window)
    reference_lm, lean_lm = _both(model, tiny_tokenizer, batch_size=4)
    pairs = _requests(0) + _requests(5)
    requests = _instances(pairs)
    _assert_same(reference_lm.loglikelihood(requests, disable_tqdm=True), lean_lm.loglikelihood(requests, True))
    too_long = sum(sum(map(len, lean_lm._encode_pair(*pair))) - 1 >= window for pair in pairs)
    assert too_long == len(_requests(5))  # every 5-shot request, no 0-shot one
    assert (lean_lm.lean_requests, lean_lm.fallback_requests) == (len(pairs) - too_long, too_long)


def test_model_whose_logits_the_head_does_not_reproduce_takes_lm_eval_path(tiny_tokenizer):
    """The first call checks backbone + head + cache against the model's own logits: a config soft-capping that
    LLaMA's forward never applies stands for any logit transform lean scoring does not know."""
    model = _tiny("llama", tiny_tokenizer)
    model.config.final_logit_softcapping = 2.0
    reference_lm, lean_lm = _both(model, tiny_tokenizer)
    requests = _instances(_requests(1))
    _assert_same(reference_lm.loglikelihood(requests, disable_tqdm=True), lean_lm.loglikelihood(requests, True))
    assert not lean_lm.lean_support().supported and "differ" in lean_lm.lean_support().reason
    assert (lean_lm.lean_requests, lean_lm.fallback_requests) == (0, len(requests))


def test_rolling_loglikelihood_stays_lm_eval(tiny_tokenizer):
    from lm_eval.api.instance import Instance

    model = _tiny("llama", tiny_tokenizer)
    reference_lm, lean_lm = _both(model, tiny_tokenizer)
    requests = [Instance("loglikelihood_rolling", {}, (text,), index) for index, text in enumerate(DEMONSTRATIONS)]
    expected = reference_lm.loglikelihood_rolling(requests, disable_tqdm=True)
    assert lean_lm.loglikelihood_rolling(requests, disable_tqdm=True) == pytest.approx(expected, abs=1e-4)
    assert lean_lm.lean_requests == 0 and lean_lm.fallback_requests > 0


@pytest.mark.parametrize(
    ("task", "shots"),
    [("afp_pawsx_zh", 0), ("afp_pawsx_zh", 5), ("afp_xcopa_zh_demo_native", 0), ("afp_xcopa_zh_demo_native", 5)],
)
def test_afp_task_samples_equal_lm_eval_hf(tiny_tokenizer, shared_data, task, shots):
    import lm_eval

    from afp_cli.evaluation.tasks import build_task_manager, default_include_path

    model = _tiny("llama", tiny_tokenizer)
    scores = []
    for lm in _both(model, tiny_tokenizer, batch_size=4):
        output = lm_eval.simple_evaluate(
            model=lm,
            tasks=[task],
            num_fewshot=shots,
            limit=4,
            task_manager=build_task_manager(default_include_path(), [task], shared_data),
            log_samples=True,
            fewshot_random_seed=0,
        )
        scores.append([response for sample in output["samples"][task] for response in sample["resps"]])
    reference, lean = ([tuple(response[0]) for response in responses] for responses in scores)
    assert len(reference) == 8  # 4 items x 2 choices
    _assert_same(reference, lean)


def test_groups_share_demonstrations_across_items_and_context_across_choices():
    from afp_cli.evaluation.prefix_groups import group_requests

    demonstrations_a, demonstrations_b = (1, 5, 5, 5, 5, 5, 5), (1, 6, 6, 6, 6, 6, 6)
    contexts = [
        demonstrations_b + (7, 8),
        demonstrations_a + (7, 8),
        demonstrations_a + (7, 8),  # the second choice of the item above
        demonstrations_a + (9,),
        (1, 2),  # a 0-shot item: shares only the first token
        demonstrations_b + (9, 9, 9),
    ]
    families = group_requests(contexts)
    assert [(family.prefix_length, [item.requests for item in family.items]) for family in families] == [
        (1, [[4]]),
        (7, [[1, 2], [3]]),
        (7, [[0], [5]]),
    ]
    assert families[1].prefix == demonstrations_a
    # a prefix always leaves each item its last context token, the one that scores the first continuation token
    assert group_requests([(1, 2, 3), (1, 2, 3, 4)])[0].prefix_length == 2
