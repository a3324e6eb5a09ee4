"""LoRA target presets: what each adapts per architecture, that MCL's gradient reaches them, the reach warning,
and that an adapter with LoRA on the (tied) embeddings merges to the same logits."""

from __future__ import annotations

import pytest
import torch

from afp_cli.errors import AfpError
from afp_cli.model.loading import add_lora, merge_adapter
from afp_cli.model.lora_targets import mcl_reach_warning, pooling_reach, resolve_targets
from afp_cli.model.tiny import build_model, tiny_architecture

EMBEDDING_NAMES = {
    "llama": "model.embed_tokens",
    "xglm": "model.embed_tokens",
    "qwen2": "model.embed_tokens",
    "gpt2": "transformer.wte",
    "bloom": "transformer.word_embeddings",
    "gpt_neox": "gpt_neox.embed_in",
    "opt": "model.decoder.embed_tokens",
}
BLOCK_LINEARS = {
    "llama": [
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.o_proj",
        "mlp.gate_proj",
        "mlp.up_proj",
        "mlp.down_proj",
    ],
    "gpt2": ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"],
    "bloom": ["self_attention.query_key_value", "self_attention.dense", "mlp.dense_h_to_4h", "mlp.dense_4h_to_h"],
}


@pytest.fixture(scope="module")
def models(tiny_tokenizer):
    return lambda model_type: build_model(tiny_architecture(model_type), tiny_tokenizer, seed=0)


@pytest.mark.parametrize("model_type", sorted(EMBEDDING_NAMES))
def test_auto_adapts_the_input_embeddings_and_every_block_linear_layer_never_the_lm_head(models, model_type):
    model = add_lora(models(model_type), r=4, alpha=8, dropout=0.0, targets="auto", seed=0)
    adapted = {
        name.removeprefix("base_model.model.")
        for name, module in model.named_modules()
        if hasattr(module, "lora_A") or hasattr(module, "lora_embedding_A")
    }
    assert EMBEDDING_NAMES[model_type] in adapted
    assert not any("lm_head" in name or "embed_out" in name for name in adapted)
    blocks = model.config.num_hidden_layers
    if model_type in BLOCK_LINEARS:
        assert len(adapted) == 1 + blocks * len(BLOCK_LINEARS[model_type])
        assert {name.split(".", 3)[-1] for name in adapted if name != EMBEDDING_NAMES[model_type]} == set(
            BLOCK_LINEARS[model_type]
        )
    # only LoRA weights train; the tied output matrix (where there is one) is the frozen base matrix
    assert all("lora_" in name for name, param in model.named_parameters() if param.requires_grad)
    assert not model.get_output_embeddings().weight.requires_grad


def test_presets_resolve_to_the_named_module_sets(models):
    llama = models("llama")
    assert resolve_targets(llama, "attention") == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert resolve_targets(llama, "embeddings+attention") == [
        "model.embed_tokens",
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
    ]
    assert resolve_targets(llama, "all-linear") == BLOCK_LINEARS["llama"]
    assert resolve_targets(llama, "auto") == resolve_targets(llama, "embeddings+all-linear")
    assert resolve_targets(llama, "auto", ["q_proj"]) == ["q_proj"]  # explicit module names win
    with pytest.raises(AfpError, match="lora.targets 'everything' is not one of"):
        resolve_targets(llama, "everything")


def _mcl_gradients(model, pooling_layer: int) -> dict[str, float]:
    from afp_cli.align.losses import info_nce
    from afp_cli.model.pooling import Pooling
    from afp_cli.model.representations import sentence_vectors

    ids = torch.randint(5, 300, (8, 10), generator=torch.Generator().manual_seed(0))
    vectors = sentence_vectors(model, ids, torch.ones_like(ids), Pooling("last", pooling_layer))
    info_nce(vectors[:4], vectors[4:], 0.05).backward()
    return {
        name: float(param.grad.norm())
        for name, param in model.named_parameters()
        if param.requires_grad and param.grad is not None
    }


def test_the_mcl_gradient_reaches_the_embedding_adapter_and_nothing_above_the_pooling_layer(models):
    model = add_lora(models("llama"), r=4, alpha=8, dropout=0.0, targets="auto", seed=0)
    for name, param in model.named_parameters():  # LoRA B starts at zero: give it a value so A gets gradients too
        if "lora_B" in name or "lora_embedding_B" in name:
            torch.nn.init.normal_(param, std=0.02, generator=torch.Generator().manual_seed(1))
    gradients = _mcl_gradients(model, pooling_layer=1)
    # peft starts an embedding LoRA with A = 0 and B random, so A is where the first gradient lands
    assert gradients["base_model.model.model.embed_tokens.lora_embedding_A.default"] > 0
    assert any(".layers.0." in name and value > 0 for name, value in gradients.items())
    assert not any(f".layers.{block}." in name for name in gradients for block in (1, 2, 3))


@pytest.mark.parametrize(
    ("targets", "pooling_layer", "warned"),
    [
        ("attention", 1, "with the input embeddings frozen"),  # the setting the issue measured at chance
        ("all-linear", 1, "with the input embeddings frozen"),
        ("auto", 1, None),
        ("embeddings+attention", 1, None),
        ("attention", 4, None),  # pooling the final layer: every block lies below
    ],
)
def test_the_reach_warning_fires_when_mcl_can_barely_move_its_vectors(models, targets, pooling_layer, warned):
    model = add_lora(models("llama"), r=4, alpha=8, dropout=0.0, targets=targets, seed=0)
    warning = mcl_reach_warning(pooling_reach(model, pooling_layer), model.config.num_hidden_layers)
    assert (warning is None) if warned is None else (warned in warning and "lora.targets=" in warning)


def test_nothing_trained_below_the_pooling_layer_is_named_as_such(models):
    model = add_lora(
        models("llama"), r=4, alpha=8, dropout=0.0, targets="auto", target_modules=["layers.3.self_attn.q_proj"], seed=0
    )
    reach = pooling_reach(model, 1)
    assert reach.parameters_below == 0 and not reach.embeddings_trained
    assert "nothing below it is trained" in mcl_reach_warning(reach, 4)


@pytest.mark.parametrize("model_type", ["xglm", "gpt2", "bloom"])  # LM head tied to the embedding matrix
def test_merging_embedding_lora_into_a_tied_model_keeps_the_logits(models, model_type, tmp_path):
    from transformers import AutoModelForCausalLM

    model = add_lora(models(model_type), r=4, alpha=8, dropout=0.0, targets="auto", seed=0)
    for name, param in model.named_parameters():  # as after training: no LoRA factor at its zero init
        if "lora_" in name:
            torch.nn.init.normal_(param, std=0.1, generator=torch.Generator().manual_seed(2))
    ids = torch.tensor([[1, 30, 31, 32, 33]])
    model.eval()
    with torch.no_grad():
        adapted = model(input_ids=ids).logits
        base_head = model.get_output_embeddings().weight.detach().clone()
        merged = merge_adapter(model)
        torch.testing.assert_close(merged(input_ids=ids).logits, adapted, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(merged.get_output_embeddings().weight, base_head, rtol=0, atol=0)
    merged.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, adapted, rtol=1e-4, atol=1e-5)
