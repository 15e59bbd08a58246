"""Tiny BERT checkpoint + the Q-Former LAVIS would start from it (fixture for `model.bert`).

Writes (transformers 4.57.6, torch 2.9.1, CPU):
  tests/fixtures/bert-tiny/config.json, model.safetensors
      a `BertForMaskedLM` saved with `save_pretrained` (HF layout). LayerNorm weights and all
      biases are perturbed away from 1/0 so that "copied" and "freshly initialized" differ.
  tests/fixtures/bert-tiny/expected.json
      the copied part of LAVIS's Q-Former: each LAVIS `Blip2Qformer` state-dict name with the
      checkpoint tensor it equals exactly (checked here, tensor by tensor), and the vocabulary
      growth. What LAVIS does:
      `Blip2Base.init_Qformer` does `BertLMHeadModel.from_pretrained(bert, config=encoder_config)`
      with `add_cross_attention=True`, then `Blip2Qformer.__init__` resizes the vocabulary to
      `len(tokenizer)` (+1 for `[DEC]`) and copies every `*_query` parameter from the same name
      without `_query`. The load is done here by transformers' own `BertLMHeadModel` (the class
      LAVIS's `Qformer.py` forks), so which tensors are copied and how the vocabulary grows
      (`mean_resizing=False`: the transformers LAVIS used initialized the new row N(0, 0.02)
      and padded the tied decoder bias with 0) come from transformers, not from our code.
      Cross-attention is in every layer of transformers' class but only in every
      `cross_attention_freq`-th layer of LAVIS's, and is freshly initialized either way: it is
      listed, not mapped. `token_type_embeddings` do not exist in LAVIS's Q-Former.
  tests/fixtures/bert-tiny-bin/config.json, pytorch_model.bin
      the same weights as a torch zip with the pre-2019 `LayerNorm.gamma/beta` names that the
      original bert-base-uncased `pytorch_model.bin` uses.

Shapes: hidden 32, 2 layers, 4 heads, intermediate 64, 32 positions, vocabulary 183 = the
hf-tiny tokenizer without `[DEC]` (id 183), i.e. the `tiny` run preset's Q-Former.

Usage: python3 tools/make_tiny_bert.py
"""

import json
import os

import torch
from transformers import BertConfig, BertForMaskedLM, BertLMHeadModel

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
OUT = os.path.join(ROOT, "bert-tiny")
OUT_BIN = os.path.join(ROOT, "bert-tiny-bin")
VOCAB = 183  # hf-tiny tokenizer.json without [DEC]
CROSS_ATTENTION_FREQ = 2
ENCODER_WIDTH = 32  # the tiny preset's ViT width

torch.manual_seed(0)
cfg = BertConfig(
    vocab_size=VOCAB,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=32,
    hidden_act="gelu",
    layer_norm_eps=1e-12,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)
mlm = BertForMaskedLM(cfg).eval()
with torch.no_grad():
    for name, p in mlm.named_parameters():
        if "LayerNorm.weight" in name:
            p.copy_(1.0 + 0.1 * torch.randn_like(p))
        elif name.endswith("bias"):
            p.copy_(0.05 * torch.randn_like(p))
os.makedirs(OUT, exist_ok=True)
mlm.save_pretrained(OUT, safe_serialization=True)

# --- LAVIS Blip2Base.init_Qformer + Blip2Qformer.__init__ ------------------------------------
encoder_config = BertConfig.from_pretrained(OUT)
encoder_config.encoder_width = ENCODER_WIDTH
encoder_config.add_cross_attention = True
encoder_config.cross_attention_freq = CROSS_ATTENTION_FREQ
encoder_config.query_length = 4
encoder_config.is_decoder = True
qformer, info = BertLMHeadModel.from_pretrained(
    OUT, config=encoder_config, output_loading_info=True
)
# len(tokenizer) after tokenizer.add_special_tokens({"bos_token": "[DEC]"})
qformer.resize_token_embeddings(VOCAB + 1, mean_resizing=False)
sd = qformer.state_dict()
assert sd["cls.predictions.bias"].shape == (VOCAB + 1,)
assert float(sd["cls.predictions.bias"][-1]) == 0.0

fresh = sorted(info["missing_keys"])
assert all("crossattention" in k for k in fresh), fresh
ckpt = mlm.state_dict()
copied = {}  # LAVIS name -> BERT checkpoint name
for name, t in sd.items():
    if "crossattention" in name or "token_type_embeddings" in name:
        continue
    if name.startswith("cls.predictions.decoder.") or name.endswith("position_ids"):
        continue  # tied to word_embeddings / the same tensor as cls.predictions.bias; a buffer
    src = ckpt[name]
    if name in ("bert.embeddings.word_embeddings.weight", "cls.predictions.bias"):
        assert t.shape[0] == VOCAB + 1
        assert torch.equal(t[:VOCAB], src), name
    else:
        assert torch.equal(t, src), name
    copied["Qformer." + name] = name
# Blip2Qformer: `if "_query" in name: param.data.copy_(state_dict[name.replace("_query", "")])`
for i in range(cfg.num_hidden_layers):
    for part in ["intermediate", "output"]:
        leaves = ["dense.weight", "dense.bias"]
        if part == "output":
            leaves += ["LayerNorm.weight", "LayerNorm.bias"]
        for leaf in leaves:
            copied[f"Qformer.bert.encoder.layer.{i}.{part}_query.{leaf}"] = (
                f"bert.encoder.layer.{i}.{part}.{leaf}"
            )
new_row = sd["bert.embeddings.word_embeddings.weight"][VOCAB]
with open(os.path.join(OUT, "expected.json"), "w") as f:
    json.dump(
        {
            "bert_vocab_size": VOCAB,
            "qformer_vocab_size": VOCAB + 1,
            "cls_predictions_bias_new_entry": float(sd["cls.predictions.bias"][VOCAB]),
            "word_embeddings_new_row_std_init": encoder_config.initializer_range,
            "word_embeddings_new_row_std_drawn": float(new_row.std()),
            "copied": dict(sorted(copied.items())),
            "bert_tensors_not_copied": sorted(
                k for k in ckpt if "Qformer." + k not in copied
            ),
            "fresh_in_transformers_bert_lm_head_model": fresh,
        },
        f,
        indent=1,
    )

# --- the same weights as an old-style pytorch_model.bin --------------------------------------
os.makedirs(OUT_BIN, exist_ok=True)
old = {}
for name, t in mlm.state_dict().items():
    name = name.replace("LayerNorm.weight", "LayerNorm.gamma").replace(
        "LayerNorm.bias", "LayerNorm.beta"
    )
    old[name] = t.clone().contiguous()
torch.save(old, os.path.join(OUT_BIN, "pytorch_model.bin"))
cfg.save_pretrained(OUT_BIN)

for d in [OUT, OUT_BIN]:
    for f in sorted(os.listdir(d)):
        print(os.path.join(d, f), os.path.getsize(os.path.join(d, f)))
