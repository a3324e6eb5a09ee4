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


def _token_requests(demonstrations: int, items: list[tuple[int, list[int]]], seed: int = 0):
    """lm-eval request triples on random token ids: a shared run of ``demonstrations`` tokens, then per item a
    suffix of the given length, one last context token, and one choice per continuation length."""
    import random

    draw = random.Random(seed)

    def tokens(count: int) -> list[int]:
        return [draw.randrange(3, 400) for _ in range(count)]  # the tiny tokenizer has 400 ids, 0-2 special

    shared = tokens(demonstrations)
    requests = []
    for suffix_length, continuation_lengths in items:
        context = shared + tokens(suffix_length + 1)
        requests += [(None, context, tokens(length)) for length in continuation_lengths]
    return requests


def _count_embedded_tokens(model, lm, requests) -> tuple[list[tuple[float, bool]], int]:
    """The scores and how many token positions the model's input embeddings saw (padding included)."""
    counted = [0]
    handle = model.get_input_embeddings().register_forward_hook(
        lambda _module, inputs, _output: counted.__setitem__(0, counted[0] + inputs[0].numel())
    )
    try:
        results = lm._loglikelihood_tokens(requests, disable_tqdm=True)
    finally:
        handle.remove()
    return results, counted[0]


# items under one demonstration prefix: 2 and 3 choices, suffixes of 1 to 21 tokens (padded together in a batch
# of 8 items, 11 items: two batches), one- and several-token continuations, and an item with a single request
SECOND_LEVEL_ITEMS = [(1 + 2 * item, [1, 4, 2][: 2 + item % 2]) for item in range(11)] + [(6, [3])]


@pytest.mark.parametrize("kind", ["llama", "gpt2", "gemma3"])
@pytest.mark.parametrize("batch_size", [1, 16])
def test_items_choices_continuing_their_shared_context_equal_lm_eval_hf(tiny_tokenizer, kind, batch_size):
    """The second level, on token ids: each item's suffix after the demonstrations is encoded once, right padded
    to the longest in its batch, and its 2 or 3 choices continue it at their own positions."""
    model = _tiny(kind, tiny_tokenizer)
    reference_lm, lean_lm = _both(model, tiny_tokenizer, batch_size)
    requests = _token_requests(40, SECOND_LEVEL_ITEMS)
    _assert_same(
        reference_lm._loglikelihood_tokens(requests, disable_tqdm=True),
        lean_lm._loglikelihood_tokens(requests, disable_tqdm=True),
    )
    assert (lean_lm.lean_requests, lean_lm.fallback_requests) == (len(requests), 0)


@pytest.mark.parametrize("shots", [1, 5])
def test_items_of_two_and_three_choices_equal_lm_eval_hf(tiny_tokenizer, shots):
    """The same through lm-eval's loglikelihood on text: items of 2, 3 and 4 choices after shared
    demonstrations."""
    model = _tiny("gemma3", tiny_tokenizer)
    reference_lm, lean_lm = _both(model, tiny_tokenizer)
    demonstrations = "".join(DEMONSTRATIONS[:shots])
    pairs = [
        (demonstrations + question + " Answer:", choice)
        for number, question in enumerate(QUESTIONS)
        for choice in CHOICES[: 2 + number % 3]
    ]
    requests = _instances(pairs)
    _assert_same(reference_lm.loglikelihood(requests, disable_tqdm=True), lean_lm.loglikelihood(requests, True))
    assert (lean_lm.lean_requests, lean_lm.fallback_requests) == (len(requests), 0)


def test_each_items_context_is_encoded_once_for_its_choices(tiny_tokenizer):
    """Counted: 4 items of 3 choices, suffixes of 9 tokens after 30 shared ones, continuations of 5 tokens (equal
    lengths: no padding). The blocks see the demonstrations once, each item's suffix once and each choice's 5
    tokens (its last context token and 4 continuation tokens): 30 + 4 x 9 + 12 x 5 = 126 positions, where one
    row per choice would be 30 + 12 x (9 + 1 + 4) = 198."""
    model = _tiny("llama", tiny_tokenizer)
    reference_lm, lean_lm = _both(model, tiny_tokenizer)
    assert lean_lm.lean_support().supported  # its one-time check runs the model too: before the counting starts
    requests = _token_requests(30, [(9, [5, 5, 5])] * 4)
    results, embedded = _count_embedded_tokens(model, lean_lm, requests)
    _assert_same(reference_lm._loglikelihood_tokens(requests, disable_tqdm=True), results)
    assert embedded == 30 + 4 * 9 + 12 * 5


def test_padded_items_stay_under_the_sliding_window(tiny_tokenizer):
    """Each request fits a 40-token window alone, but padded to the other item's 14-token suffix a 15-token
    choice would reach 20 + 14 + 15 = 49 positions, where the window hides the start: the two items go to separate
    batches and stay exact (batched together, they differ from lm-eval's scores)."""
    model = _tiny("gemma3", tiny_tokenizer, sliding_window=40)
    reference_lm, lean_lm = _both(model, tiny_tokenizer)
    requests = _token_requests(20, [(1, [15, 15]), (14, [2, 2])])
    assert all(len(context) + len(continuation) - 1 < 40 for _, context, continuation in requests)
    _assert_same(
        reference_lm._loglikelihood_tokens(requests, disable_tqdm=True),
        lean_lm._loglikelihood_tokens(requests, disable_tqdm=True),
    )
    assert (lean_lm.lean_requests, lean_lm.fallback_requests) == (len(requests), 0)


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


def test_plan_encodes_each_items_suffix_once_for_its_choices():
    from afp_cli.evaluation.prefix_groups import BatchLimits, Row, group_requests, plan_family

    demonstrations = (1, 5, 5, 5)
    contexts = [
        demonstrations + (7, 8, 9),  # an item of 2 choices: suffix (7, 8), last context token 9
        demonstrations + (7, 8, 9),
        demonstrations + (6, 9),  # an item of 3 choices: suffix (6,)
        demonstrations + (6, 9),
        demonstrations + (6, 9),
        demonstrations + (4, 4, 4, 4, 9),  # one request: a row continuing the demonstrations
    ]
    continuations = [(20,), (21, 22), (23,), (24, 25, 26), (27,), (28, 29)]
    (family,) = group_requests(contexts)
    assert family.prefix_length == 4
    plan = plan_family(family, continuations, BatchLimits(items=8, choice_rows=32))
    assert plan.rows == [Row(5, (4, 4, 4, 4, 9, 28), 4)]
    (batch,) = plan.item_batches
    assert batch.suffixes == [(6,), (7, 8)]  # by length: little padding
    assert batch.choice_passes == [
        [
            (0, Row(2, (9,), 0)),
            (0, Row(3, (9, 24, 25), 0)),
            (0, Row(4, (9,), 0)),
            (1, Row(0, (9,), 0)),
            (1, Row(1, (9, 21), 0)),
        ]
    ]
    # limits: one item a batch, two choice rows a pass, or a window the padded requests would not fit
    one_item = plan_family(family, continuations, BatchLimits(items=1, choice_rows=32))
    assert [batch.suffixes for batch in one_item.item_batches] == [[(6,)], [(7, 8)]]
    two_rows = plan_family(family, continuations, BatchLimits(items=1, choice_rows=2))
    assert [len(choices) for choices in two_rows.item_batches[0].choice_passes] == [2, 1]
    # padded to the 2-token suffix, the 3-token continuation needs 4 + 2 + 3 = 9 < window
    assert len(plan_family(family, continuations, BatchLimits(8, 32, padded_input=10)).item_batches) == 1
    assert len(plan_family(family, continuations, BatchLimits(8, 32, padded_input=9)).item_batches) == 2


def test_plan_of_a_zero_shot_item_is_rows_continuing_its_context():
    """An item alone in its family already shares its context but the last token: no second pass."""
    from afp_cli.evaluation.prefix_groups import BatchLimits, Row, group_requests, plan_family

    (family,) = group_requests([(1, 2, 3), (1, 2, 3)])
    plan = plan_family(family, [(4, 5), (6,)], BatchLimits(items=8, choice_rows=32))
    assert plan.item_batches == [] and plan.rows == [Row(0, (3, 4), 0), Row(1, (3,), 0)]
