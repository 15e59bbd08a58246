#!/usr/bin/env python3
"""HF transformers' side of `blip2 bench llava-generate`: LlavaForConditionalGeneration at
LLaVA-1.5-7B shapes from a random-init config, in the same dtype, timed the same way.

prefill = the first forward over BOS + 576 image tokens + the rest of the prompt with the pixel
values (vision tower, projector, merge, LLM; logits of the last position only, as `generate`
keeps them); decode = the `--new-tokens - 1` single-token greedy steps after it through the KV
cache. Peak RSS is ru_maxrss (the VmHWM the Rust side reads). Prints one JSON object.

    pip install torch==2.9.1 transformers==4.57.6
    python tools/bench_hf_llava_generate.py --threads 2 [--layers N] [--dtype bf16|f32]
"""

import argparse
import json
import platform
import resource
import time

import torch
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration
from transformers.modeling_utils import no_init_weights


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=None, help="tower and LLM layers (default 24 / 32)")
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "f16", "f32"])
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    dtype = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}[args.dtype]

    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                              num_attention_heads=16, image_size=336, patch_size=14,
                              projection_dim=768, hidden_act="quick_gelu", layer_norm_eps=1e-5)
    text = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=32, vocab_size=32064,
                       max_position_embeddings=4096, rms_norm_eps=1e-5)
    if args.layers is not None:
        vision.num_hidden_layers = args.layers
        text.num_hidden_layers = args.layers
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_index=32000,
                      projector_hidden_act="gelu", vision_feature_layer=-2,
                      vision_feature_select_strategy="default")

    t = time.perf_counter()
    # Parameters are created in `dtype` directly (no f32 model first), as from_pretrained(torch_dtype=)
    # holds them. HF's normal_ init of 7B parameters takes minutes here: the init is skipped and
    # the weights are drawn uniform with HF's std 0.02 (norm weights 1, other vectors 0), as the
    # Rust side draws them.
    torch.set_default_dtype(dtype)
    with no_init_weights():
        model = LlavaForConditionalGeneration(cfg).eval()
    torch.set_default_dtype(torch.float32)
    a = 0.02 * 3 ** 0.5
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.uniform_(-a, a)
            elif "norm" in name and name.endswith("weight"):
                p.fill_(1.0)
            else:
                p.uniform_(-a, a)
    build_s = time.perf_counter() - t

    image_tokens = (336 // 14) ** 2
    ids = [1] + [32000] * image_tokens + [100 + (i % 200) for i in range(1, args.prompt_tokens)]
    l = len(ids)
    input_ids = torch.tensor([ids])
    mask = torch.ones(1, l, dtype=torch.long)
    pixels = torch.tensor([((i % 97) / 48.0) - 1.0 for i in range(3 * 336 * 336)])
    pixel_values = pixels.reshape(1, 3, 336, 336).to(dtype)

    generated = []
    with torch.inference_mode():
        t = time.perf_counter()
        out = model(input_ids=input_ids, pixel_values=pixel_values, attention_mask=mask,
                    use_cache=True, logits_to_keep=1)
        nxt = out.logits[:, -1].float().argmax(-1)
        prefill_s = time.perf_counter() - t
        generated.append(int(nxt))
        past = out.past_key_values
        t = time.perf_counter()
        for _ in range(1, args.new_tokens):
            mask = torch.cat([mask, torch.ones(1, 1, dtype=torch.long)], 1)
            out = model(input_ids=nxt[:, None], attention_mask=mask, past_key_values=past,
                        use_cache=True)
            past = out.past_key_values
            nxt = out.logits[:, -1].float().argmax(-1)
            generated.append(int(nxt))
        decode_s = time.perf_counter() - t
    steps = args.new_tokens - 1
    print(json.dumps({
        "workload": "llava-generate-hf",
        "dtype": args.dtype,
        "llm_layers": text.num_hidden_layers,
        "vision_layers": vision.num_hidden_layers,
        "threads": torch.get_num_threads(),
        "prompt_tokens": args.prompt_tokens,
        "image_tokens": image_tokens,
        "seq_len": l,
        "new_tokens": args.new_tokens,
        "generated": generated,
        "build_s": build_s,
        "prefill_s": prefill_s,
        "decode_s": decode_s,
        "decode_tokens_per_s": steps / decode_s if steps > 0 else None,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "cpu_model": cpu_model(),
        "torch": torch.__version__,
        "attn_implementation": model.config._attn_implementation,
    }))


if __name__ == "__main__":
    main()
