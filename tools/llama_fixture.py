#!/usr/bin/env python3
"""Tiny random HF `LlamaForCausalLM` fixtures for qformer/tests/integration/llm_llama.rs.

Reference: transformers 4.57.6, torch 2.9.1, CPU, float32, eager attention.
    pip install torch==2.9.1 transformers==4.57.6
    python tools/llama_fixture.py            # writes tests/fixtures/llama-tiny/<case>/

Each case directory holds the HF checkpoint (`config.json`, `model.safetensors`) and
`expected.safetensors`:
    input_ids [2, L] i64, attention_mask [2, L] i64 (row 0 full, row 1 RIGHT-padded),
    position_ids [2, L] i64      the positions HF's forward used: `model(input_ids,
                                 attention_mask=mask)` without position_ids takes
                                 cache_position = 0..L-1 for every row, whatever the padding
                                 (asserted below against an explicit arange),
    logits [2, L, V] f32         that forward's logits,
    position_ids_cumsum [2, L]   cumsum(mask) - 1 clamped at 0 (what `generate` derives),
    logits_cumsum [2, L, V] f32  forward with those explicit position_ids,
    loss [1] f32                 HF causal-LM loss with labels = input_ids, pads -> -100.
CI never runs this script; the fixtures are committed.
"""

import json
import os

import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "llama-tiny")
VOCAB = 100
SEQ = 8
PADS = 3  # right padding of row 1
PAD_ID = 0

CASES = {
    # (a) MHA, default RoPE, untied, with q/k/v/o and MLP biases.
    "mha": dict(
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=4,
        num_key_value_heads=4,
        attention_bias=True,
        mlp_bias=True,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        rope_scaling=None,
        tie_word_embeddings=False,
        seed=1,
    ),
    # (b) GQA 4/2, explicit head_dim 16 != hidden/heads, llama3 frequencies (all three bands).
    "gqa-llama3": dict(
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        rms_norm_eps=1e-6,
        rope_theta=10000.0,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 32,
        },
        tie_word_embeddings=False,
        seed=2,
    ),
    # (c) GQA 4/1 (MQA), linear scaling x2 (legacy "type" key), tied LM head.
    "gqa-linear-tied": dict(
        hidden_size=32,
        intermediate_size=48,
        num_attention_heads=4,
        num_key_value_heads=1,
        rms_norm_eps=1e-6,
        rope_theta=500.0,
        rope_scaling={"type": "linear", "factor": 2.0},
        tie_word_embeddings=True,
        seed=3,
    ),
}


def build(name, spec):
    spec = dict(spec)
    seed = spec.pop("seed")
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=VOCAB,
        num_hidden_layers=2,
        max_position_embeddings=128,
        hidden_act="silu",
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=PAD_ID,
        **spec,
    )
    cfg._attn_implementation = "eager"
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "norm" in pname:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))  # not the all-ones init
            elif pname.endswith("bias"):
                p.normal_(0.0, 0.05)
            else:
                p.normal_(0.0, 0.15)

    ids = torch.randint(1, VOCAB, (2, SEQ))
    mask = torch.ones(2, SEQ, dtype=torch.long)
    mask[1, SEQ - PADS :] = 0
    ids[1, SEQ - PADS :] = PAD_ID
    labels = ids.masked_fill(mask == 0, -100)

    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
        # HF forward without position_ids: 0..L-1 for every row.
        arange = torch.arange(SEQ).unsqueeze(0).expand(2, SEQ)
        explicit = model(input_ids=ids, attention_mask=mask, position_ids=arange).logits
        assert torch.equal(out.logits, explicit), "forward's default position_ids are not 0..L-1"
        cumsum = (mask.cumsum(-1) - 1).clamp(min=0)
        logits_cumsum = model(input_ids=ids, attention_mask=mask, position_ids=cumsum).logits
        # Right padding: the real tokens get the same positions either way.
        real = mask.bool()
        assert torch.equal(out.logits[real], logits_cumsum[real])

    d = os.path.join(ROOT, name)
    os.makedirs(d, exist_ok=True)
    model.save_pretrained(d, safe_serialization=True)
    gen = os.path.join(d, "generation_config.json")
    if os.path.exists(gen):
        os.remove(gen)
    save_file(
        {
            "input_ids": ids.contiguous(),
            "attention_mask": mask.contiguous(),
            "position_ids": arange.contiguous(),
            "logits": out.logits.float().contiguous(),
            "position_ids_cumsum": cumsum.contiguous(),
            "logits_cumsum": logits_cumsum.float().contiguous(),
            "loss": out.loss.float().reshape(1).contiguous(),
        },
        os.path.join(d, "expected.safetensors"),
    )
    with open(os.path.join(d, "config.json")) as f:
        saved = json.load(f)
    print(name, "loss", out.loss.item(), "rope_scaling", saved.get("rope_scaling"),
          "bytes", sum(os.path.getsize(os.path.join(d, x)) for x in os.listdir(d)))


def main():
    import transformers

    print("torch", torch.__version__, "transformers", transformers.__version__)
    for name, spec in CASES.items():
        build(name, spec)


if __name__ == "__main__":
    main()
