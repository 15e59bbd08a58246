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
and `generate.json`, HF `generate` (KV cache on) from prefixes of those input_ids:
    generation_config            every field the script sets, written out: max_new_tokens,
                                 do_sample=False, num_beams (1 greedy, 3 beam), length_penalty /
                                 early_stopping at their defaults (1.0 / False), pad_token_id, and
                                 eos_token_id = the third new token of an EOS-free greedy run of
                                 the single prompt (so EOS stopping is exercised; the config's
                                 eos id 2 never comes up in a random 100-token model),
    prompts                      "single": [1, P] full mask; "left_padded": [2, P] with row 1
                                 LEFT-padded (pad id 0, mask 0),
                                 each with input_ids, attention_mask and HF's `sequences` for
                                 "greedy" and "beam3" (prompt + new tokens, rows that ended at EOS
                                 padded with pad_token_id, as HF returns them).
Generation runs after everything above and draws no random numbers, so the checkpoint and
`expected.safetensors` do not change with it.
CI never runs this script; the fixtures are committed.
"""

import json
import os

import torch
from safetensors.torch import save_file
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "llama-tiny")
VOCAB = 100
SEQ = 8
PADS = 3  # right padding of row 1
PAD_ID = 0
MAX_NEW = 6
PROMPT = 5  # prompt length of the single prompt and of row 0 of the left-padded batch
PROMPT_SHORT = 3  # real tokens of row 1 of the left-padded batch

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
    write_generation(model, ids, d)
    with open(os.path.join(d, "config.json")) as f:
        saved = json.load(f)
    print(name, "loss", out.loss.item(), "rope_scaling", saved.get("rope_scaling"),
          "bytes", sum(os.path.getsize(os.path.join(d, x)) for x in os.listdir(d)))


def gen_config(num_beams, eos):
    fields = dict(
        max_new_tokens=MAX_NEW,
        do_sample=False,
        num_beams=num_beams,
        length_penalty=1.0,
        early_stopping=False,
        eos_token_id=eos,
        pad_token_id=PAD_ID,
        bos_token_id=1,
    )
    return fields, GenerationConfig(**fields)


def write_generation(model, ids, d):
    single = ids[:1, :PROMPT].clone()
    single_mask = torch.ones_like(single)
    # Left-padded batch: row 0 = ids[0, :PROMPT], row 1 = PAD x 2 + ids[1, :PROMPT_SHORT].
    pad = PROMPT - PROMPT_SHORT
    left = torch.full((2, PROMPT), PAD_ID, dtype=ids.dtype)
    left[0] = ids[0, :PROMPT]
    left[1, pad:] = ids[1, :PROMPT_SHORT]
    left_mask = torch.ones_like(left)
    left_mask[1, :pad] = 0

    # EOS = third new token of an EOS-free greedy run of the single prompt (a plain argmax loop:
    # `generate` would fill an unset eos_token_id from the model's generation config).
    run = single
    with torch.no_grad():
        for _ in range(3):
            nxt = model(input_ids=run).logits[:, -1].argmax(-1, keepdim=True)
            run = torch.cat([run, nxt], 1)
    eos = int(run[0, -1])
    assert eos != PAD_ID, "EOS would coincide with the pad id"

    out = {"generation_config": {}, "prompts": {}}
    for name, (x, m) in {"single": (single, single_mask), "left_padded": (left, left_mask)}.items():
        entry = {"input_ids": x.tolist(), "attention_mask": m.tolist()}
        for key, beams in (("greedy", 1), ("beam3", 3)):
            fields, gc = gen_config(beams, eos)
            out["generation_config"][key] = fields
            seq = model.generate(input_ids=x, attention_mask=m, generation_config=gc)
            entry[key] = seq.tolist()
        out["prompts"][name] = entry
    with open(os.path.join(d, "generate.json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(os.path.basename(d), "eos", eos, {k: {g: v[g] for g in ("greedy", "beam3")}
                                           for k, v in out["prompts"].items()})


def main():
    import transformers

    print("torch", torch.__version__, "transformers", transformers.__version__)
    for name, spec in CASES.items():
        build(name, spec)


if __name__ == "__main__":
    main()
