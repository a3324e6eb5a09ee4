"""The MCL pass stops at the pooling layer and still returns exactly transformers' hidden states."""

import pytest
import torch

from afp_cli.model.blocks import decoder_layers
from afp_cli.model.representations import hidden_states_at
from afp_cli.model.tiny import TINY_ARCHITECTURES, build_model, tiny_architecture

INPUT_IDS = torch.tensor([[1, 50, 60, 70, 80], [1, 90, 100, 0, 0]])
MASK = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])


@pytest.mark.parametrize("model_type", sorted(TINY_ARCHITECTURES))
def test_hidden_states_equal_output_hidden_states_at_every_layer(model_type, tiny_tokenizer):
    model = build_model(tiny_architecture(model_type), tiny_tokenizer, seed=0).eval()
    with torch.no_grad():
        reference = model(input_ids=INPUT_IDS, attention_mask=MASK, output_hidden_states=True).hidden_states
        for layer in range(model.config.num_hidden_layers + 1):
            ours = hidden_states_at(model, INPUT_IDS, MASK, layer)
            torch.testing.assert_close(ours, reference[layer], rtol=0, atol=0)


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "xglm", "bloom"])
@pytest.mark.parametrize("layer", [0, 1, 3])
def test_layers_above_the_pooling_layer_are_not_executed(model_type, layer, tiny_tokenizer):
    model = build_model(tiny_architecture(model_type), tiny_tokenizer, seed=0)
    calls = []
    blocks = decoder_layers(model)
    # a forward hook fires when a block has computed its output: exactly the blocks that ran
    handles = [
        block.register_forward_hook(lambda module, args, output, index=index: calls.append(index))
        for index, block in enumerate(blocks)
    ]
    lm_head_calls = []
    handles.append(model.get_output_embeddings().register_forward_hook(lambda *args: lm_head_calls.append(1)))
    hidden_states_at(model, INPUT_IDS, MASK, layer)
    for handle in handles:
        handle.remove()
    assert calls == list(range(layer))
    assert lm_head_calls == []


def test_gradients_flow_through_the_stopped_pass_with_gradient_checkpointing(tiny_tokenizer):
    model = build_model(tiny_architecture("llama"), tiny_tokenizer, seed=0)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    hidden = hidden_states_at(model, INPUT_IDS, MASK, 2)
    hidden.sum().backward()
    first_block = decoder_layers(model)[0]
    third_block = decoder_layers(model)[2]
    assert first_block.self_attn.q_proj.weight.grad.abs().sum() > 0
    assert third_block.self_attn.q_proj.weight.grad is None  # never run, so never touched
