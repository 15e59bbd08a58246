#!/usr/bin/env python3
"""Record the vision and Q-Former outputs of the tiny Blip2ForConditionalGeneration fixtures.

The opt/ and t5/ fixtures (made by shared/tools/hf_fixtures.py) store only LLM logits; the Rust
parity tests for the vision encoder and Q-Former need their intermediate outputs too. This
script loads each checkpoint exactly as it lies and writes FIXTURE/qformer_outputs.safetensors:
  vision_last_hidden_state [B, N, Dv]  (vision_model(...).last_hidden_state, post_layernorm applied)
  query_output             [B, Q, H]   (qformer(query_tokens, encoder_hidden_states=...).last_hidden_state)
  language_projection      [B, Q, d]   (language_projection(query_output), for the LLM bridges)
for the fixture's own pixel_values.

usage: qformer_outputs.py tests/fixtures/hf-tiny/opt tests/fixtures/hf-tiny/t5
Needs torch 2.9.1, transformers 4.57.6, safetensors.
"""
import os
import sys

import torch
from safetensors.torch import load_file, save_file
from transformers import Blip2ForConditionalGeneration

for fx in sys.argv[1:]:
    model = Blip2ForConditionalGeneration.from_pretrained(fx).eval()
    pixel_values = load_file(os.path.join(fx, "expected.safetensors"))["pixel_values"]
    with torch.no_grad():
        vis = model.vision_model(pixel_values=pixel_values).last_hidden_state
        q = model.query_tokens.expand(vis.shape[0], -1, -1)
        qout = model.qformer(query_embeds=q, encoder_hidden_states=vis,
                             encoder_attention_mask=torch.ones(vis.shape[:-1], dtype=torch.long)).last_hidden_state
        proj = model.language_projection(qout)
    out = os.path.join(fx, "qformer_outputs.safetensors")
    save_file({"pixel_values": pixel_values.contiguous(), "vision_last_hidden_state": vis.contiguous(),
               "query_output": qout.contiguous(), "language_projection": proj.contiguous()}, out,
              metadata={"made_by": "tools/qformer_outputs.py", "transformers": __import__("transformers").__version__,
                        "torch": torch.__version__})
    print("wrote", out, tuple(vis.shape), tuple(qout.shape))
