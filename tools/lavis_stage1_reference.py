#!/usr/bin/env python3
"""Gradient and optimizer-trajectory references for BLIP-2 stage one, from the ORIGINAL LAVIS 1.0.2 code.

Developer tool (CI never runs it). Builds the LAVIS Blip2Qformer on the tiny HF fixture exactly as
tools/lavis_losses.py does (same shims, same LM head, hardest negatives via argmax multinomial,
ln_vision eps 1e-5 as LAVIS), then writes into the fixture directory:

  stage1_grads.safetensors   d(loss)/d(param) at the fixture weights for each loss separately
                             (keys "<loss>/<LAVIS name>", loss in itc|itm|itg|total), for a set of
                             parameters covering every kind of trainable tensor.
  stage1_trajectory.json     10 AdamW steps on the fixture batch: per-step losses (before the update),
                             the negatives chosen at each step, the optimizer settings and LAVIS's
                             parameter grouping (which names get weight decay).
  stage1_trajectory.safetensors  a few parameters after the 10 steps.

usage: python tools/lavis_stage1_reference.py tests/fixtures/hf-tiny/itm --lavis-src /tmp/lavis/src/lavis
(lavis-src = the lavis/ folder of `pip download --no-deps salesforce-lavis==1.0.2`, unzipped)
Needs torch==2.9.1 transformers==4.57.6.
"""
import argparse, json, os, sys

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lavis_losses as ll  # noqa: E402

GRAD_PARAMS = [  # one of every trainable tensor kind
    "query_tokens", "temp", "ln_vision.weight", "ln_vision.bias",
    "Qformer.bert.embeddings.word_embeddings.weight", "Qformer.bert.embeddings.position_embeddings.weight",
    "Qformer.bert.embeddings.LayerNorm.weight",
    "Qformer.bert.encoder.layer.0.attention.self.query.weight",
    "Qformer.bert.encoder.layer.0.attention.self.key.bias",
    "Qformer.bert.encoder.layer.0.attention.output.LayerNorm.bias",
    "Qformer.bert.encoder.layer.0.crossattention.self.key.weight",
    "Qformer.bert.encoder.layer.0.crossattention.output.dense.weight",
    "Qformer.bert.encoder.layer.0.intermediate_query.dense.weight",
    "Qformer.bert.encoder.layer.0.output_query.dense.weight",
    "Qformer.bert.encoder.layer.1.intermediate.dense.weight",
    "Qformer.bert.encoder.layer.1.output.LayerNorm.weight",
    "Qformer.cls.predictions.transform.dense.weight", "Qformer.cls.predictions.transform.LayerNorm.weight",
    "Qformer.cls.predictions.bias",
    "vision_proj.weight", "text_proj.weight", "text_proj.bias", "itm_head.weight", "itm_head.bias",
]
FINAL_PARAMS = ["query_tokens", "temp", "ln_vision.weight", "itm_head.weight", "vision_proj.weight",
                "Qformer.bert.encoder.layer.0.crossattention.self.key.weight",
                "Qformer.bert.embeddings.word_embeddings.weight"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("fixture")
    ap.add_argument("--lavis-src", required=True)
    ap.add_argument("--scratch", default="/tmp/lavis_scratch")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--weight-decay", type=float, default=0.05)
    ap.add_argument("--steps", type=int, default=10)
    a = ap.parse_args()
    os.makedirs(a.scratch, exist_ok=True)
    ll.setup_lavis(os.path.abspath(a.lavis_src), os.path.abspath(a.scratch))
    import importlib
    mods = {n: importlib.import_module(f"lavis.models.blip2_models.{n}") for n in ("Qformer", "blip2", "blip2_qformer")}
    dist_note = ll.init_dist(os.path.abspath(a.scratch))

    from transformers import Blip2ForImageTextRetrieval, PreTrainedTokenizerFast
    fx = os.path.abspath(a.fixture)
    cfg = json.load(open(os.path.join(fx, "config.json")))
    exp = load_file(os.path.join(fx, "expected.safetensors"))
    exp_json = json.load(open(os.path.join(fx, "expected.json")))
    pixel_values = exp["pixel_values"]
    B = pixel_values.shape[0]
    samples = {"image": pixel_values, "text_input": exp_json["texts"][:B], "image_id": torch.arange(B)}
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=os.path.join(fx, "tokenizer.json"), bos_token="[DEC]",
                                        pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
                                        unk_token="[UNK]", mask_token="[MASK]")
    hf = Blip2ForImageTextRetrieval.from_pretrained(fx, dtype=torch.float32).eval()
    lm_head = load_file(os.path.join(fx, "lm_head.safetensors"))

    model = ll.build_model(mods, fx, cfg, tokenizer, hf)
    sd = {ll.hf_to_lavis_name(k): v for k, v in hf.state_dict().items()}
    sd.update(lm_head)
    sd["Qformer.cls.predictions.decoder.weight"] = sd["Qformer.bert.embeddings.word_embeddings.weight"]
    sd["Qformer.cls.predictions.decoder.bias"] = sd["Qformer.cls.predictions.bias"]
    msd = model.state_dict()
    sd["Qformer.bert.embeddings.position_ids"] = msd["Qformer.bert.embeddings.position_ids"]
    sd["temp"] = msd["temp"]
    model.load_state_dict(sd, strict=True)
    model.train()  # dropout probabilities are 0 in the fixture config; the ViT stays in eval (LAVIS freeze_vit)
    torch.set_grad_enabled(True)

    chosen = []

    def argmax_multinomial(input, num_samples, replacement=False, *, generator=None, out=None):
        idx = torch.argmax(input).reshape(1)
        chosen.append(int(idx))
        return idx
    torch.multinomial = argmax_multinomial

    named = dict(model.named_parameters())
    # ---- gradients of each loss separately at the fixture weights ----
    out = model(samples)
    grads = {}
    for name, loss in (("itc", out.loss_itc), ("itm", out.loss_itm), ("itg", out.loss_lm), ("total", out.loss)):
        model.zero_grad(set_to_none=True)
        loss.backward(retain_graph=True)
        for p in GRAD_PARAMS:
            g = named[p].grad
            grads[f"{name}/{p}"] = (torch.zeros_like(named[p]) if g is None else g).detach().float().clone().contiguous()
    model.zero_grad(set_to_none=True)
    save_file(grads, os.path.join(fx, "stage1_grads.safetensors"), metadata={
        "what": "d loss / d param at the fixture weights, LAVIS 1.0.2 Blip2Qformer.forward, hardest negatives, "
                "ln_vision eps 1e-5; keys '<itc|itm|itg|total>/<LAVIS parameter name>'",
        "losses": json.dumps({"itc": float(out.loss_itc), "itm": float(out.loss_itm), "itg": float(out.loss_lm)})})
    del out

    # ---- AdamW trajectory with LAVIS's parameter grouping (runner_base.py optimizer property) ----
    decay, no_decay, decay_names = [], [], []
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or "bias" in n or "ln" in n or "bn" in n:
            no_decay.append(p)
        else:
            decay.append(p)
            decay_names.append(n)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.999), eps=1e-8)
    steps = []
    for step in range(a.steps):
        chosen.clear()
        opt.zero_grad(set_to_none=True)
        out = model(samples)
        out.loss.backward()
        opt.step()
        steps.append({"step": step, "itc": float(out.loss_itc), "itm": float(out.loss_itm), "itg": float(out.loss_lm),
                      "total": float(out.loss), "neg_image_idx_for_text": chosen[:B], "neg_text_idx_for_image": chosen[B:]})
        print(steps[-1])
    final = {p: named[p].detach().float().clone().contiguous() for p in FINAL_PARAMS}
    save_file(final, os.path.join(fx, "stage1_trajectory.safetensors"))
    json.dump({
        "what": "10 AdamW steps of LAVIS 1.0.2 Blip2Qformer on the fixture batch (losses before each update)",
        "optimizer": {"type": "torch.optim.AdamW", "lr": a.lr, "betas": [0.9, 0.999], "eps": 1e-8,
                      "weight_decay": a.weight_decay, "schedule": "constant lr", "grad_clip": None,
                      "grouping": "LAVIS runner_base: no decay if p.ndim < 2 or 'bias'/'ln'/'bn' in the name"},
        "decayed_parameters": decay_names,
        "num_decayed_tensors": len(decay), "num_no_decay_tensors": len(no_decay),
        "settings": {"ln_vision_eps": model.ln_vision.eps, "negatives": "hardest (argmax of LAVIS weights)",
                     "dropout": 0.0, "frozen": "visual_encoder (HF vision trunk without post_layernorm)",
                     "distributed": dist_note, "torch": torch.__version__},
        "steps": steps,
    }, open(os.path.join(fx, "stage1_trajectory.json"), "w"), indent=1)


if __name__ == "__main__":
    main()
