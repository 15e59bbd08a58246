#!/usr/bin/env python3
"""Bridge fixtures for the stage-two LLM tests: the Q-Former query outputs of the hf-tiny OPT and
T5 checkpoints, so the Rust LLM port can be tested without the vision encoder / Q-Former port.

For tests/fixtures/hf-tiny/{opt,t5} this loads the checkpoint with transformers 4.57.6,
recomputes the Q-Former query output for every image, checks that projection + LLM on top of
them reproduces the logits in expected.safetensors, and writes
  bridge.safetensors: query_output [images, Q, Hq], language_model_inputs (projected queries),
                      inputs_embeds_{i}_{j} / attention_mask_{i}_{j} of every image x prompt case,
                      logits of the extra cases below
  bridge.json:        extra reference cases from HF (batched left-padded OPT generation, repetition
                      penalty, length penalty, min_new_tokens, batched right-padded losses).

usage: python tools/llm_bridge_fixture.py [tests/fixtures/hf-tiny]
Needs torch 2.9.1, transformers 4.57.6, tokenizers, safetensors.
"""
import json, os, sys
import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer
from transformers import Blip2ForConditionalGeneration

ROOT = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/hf-tiny"


def query_output(model, pixel_values):
    # The same three steps as Blip2ForConditionalGeneration.get_image_features.
    with torch.no_grad():
        image_embeds = model.vision_model(pixel_values=pixel_values, return_dict=True).last_hidden_state
        mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long)
        queries = model.query_tokens.expand(image_embeds.shape[0], -1, -1)
        return model.qformer(query_embeds=queries, encoder_hidden_states=image_embeds,
                             encoder_attention_mask=mask, return_dict=True).last_hidden_state


def f32(d):
    return {k: v.detach().contiguous().float() if v.is_floating_point() else v.detach().contiguous().to(torch.int64)
            for k, v in d.items()}


def opt_fixture():
    d = os.path.join(ROOT, "opt")
    model = Blip2ForConditionalGeneration.from_pretrained(d).eval()
    tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    exp = json.load(open(os.path.join(d, "expected.json")))
    ref = load_file(os.path.join(d, "expected.safetensors"))
    pv = ref["pixel_values"]
    nq = model.config.num_query_tokens
    img_tok = model.config.image_token_index
    q = query_output(model, pv)
    out = {"query_output": q}
    with torch.no_grad():
        proj = model.language_projection(q)
        out["language_model_inputs"] = proj
        emb = model.get_input_embeddings()
        worst = 0.0
        for c in exp["cases"]:
            i, j = c["image"], c["prompt"]
            ids = torch.tensor([[img_tok] * nq + c["prompt_ids"]])
            e = emb(ids)
            e[0, :nq] = proj[i]
            logits = model.language_model(inputs_embeds=e, attention_mask=torch.ones_like(ids)).logits[0, nq:]
            worst = max(worst, (logits - ref[f"logits_{i}_{j}"]).abs().max().item())
            out[f"inputs_embeds_{i}_{j}"] = e[0]
            # expected.json's loss used p + target: record those ids (the Rust side has no tokenizer).
            full = tok.encode(exp["prompts"][j] + c["target"]).ids
            assert full[: len(c["prompt_ids"])] == c["prompt_ids"]
            out[f"loss_ids_{i}_{j}"] = torch.tensor(full)
        print(f"opt: max |logits - expected| from recomputed query outputs = {worst:.3g}")
        assert worst < 1e-5, worst

        extra = {"pad_token_id": 1, "eos_token_id": 2, "image_token_index": img_tok, "cases": []}
        # Batched, left padded as the HF processor pads OPT prompts for generation: pads go before
        # the <image> tokens; positions come from the attention-mask cumsum.
        prompts = ["Question: what color is the circle? Short answer:", "a photo of", "a"]
        images = [0, 1, 3]
        rows = [[img_tok] * nq + tok.encode(p).ids for p in prompts]
        L = max(len(r) for r in rows)
        input_ids = torch.tensor([[1] * (L - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (L - len(r)) + [1] * len(r) for r in rows])
        settings = [
            dict(name="greedy", num_beams=1, max_new_tokens=6, min_new_tokens=1),
            dict(name="greedy_rep1.5_min3", num_beams=1, max_new_tokens=7, min_new_tokens=3, repetition_penalty=1.5),
            dict(name="beam3", num_beams=3, max_new_tokens=6, min_new_tokens=1, length_penalty=1.0),
            dict(name="beam4_lp0_rep1.3", num_beams=4, max_new_tokens=8, min_new_tokens=0, length_penalty=0.0,
                 repetition_penalty=1.3),
            dict(name="beam3_lp-1_eos366", num_beams=3, max_new_tokens=6, min_new_tokens=0, length_penalty=-1.0,
                 eos_token_id=366),
            dict(name="beam5_lp2_eos366", num_beams=5, max_new_tokens=6, min_new_tokens=2, length_penalty=2.0,
                 eos_token_id=366),
        ]
        for s in settings:
            kw = {k: v for k, v in s.items() if k != "name"}
            kw.setdefault("repetition_penalty", 1.0)
            kw.setdefault("length_penalty", 1.0)
            kw.setdefault("eos_token_id", 2)
            g = model.generate(pixel_values=pv[images], input_ids=input_ids, attention_mask=mask, do_sample=False,
                               pad_token_id=1, **kw)
            extra["cases"].append(dict(name=s["name"], images=images, input_ids=input_ids.tolist(),
                                       attention_mask=mask.tolist(), settings=kw,
                                       output_ids=g[:, L:].tolist()))
        out["batch_attention_mask"] = mask
        # Left-padded batched logits (every row, every position incl. padding rows' outputs ignored).
        e = emb(input_ids)
        e = e.masked_scatter((input_ids == img_tok)[..., None].expand_as(e), proj[images])
        out["batch_inputs_embeds"] = e
        out["batch_logits"] = model.language_model(inputs_embeds=e, attention_mask=mask).logits
        # Batched LM loss, right padded: LAVIS layout, captions end with "\n", labels -100 on
        # queries, prompt (incl. BOS) and padding.
        texts = [("a photo of", " a red circle\n"), ("", " a blue square next to a green triangle\n"),
                 ("Question: what is it? Answer:", " a cat\n")]
        rows, labels = [], []
        for p, t in texts:
            pid = tok.encode(p).ids
            full = tok.encode(p + t).ids
            rows.append(full)
            labels.append([-100] * nq + [-100] * len(pid) + full[len(pid):])
        L = max(len(r) for r in rows)
        ids = torch.tensor([[img_tok] * nq + r + [1] * (L - len(r)) for r in rows])
        m = torch.tensor([[1] * (nq + len(r)) + [0] * (L - len(r)) for r in rows])
        lab = torch.tensor([l + [-100] * (L - len(r)) for l, r in zip(labels, rows)])
        loss_imgs = [2, 0, 1]
        loss = model(pixel_values=pv[loss_imgs], input_ids=ids, attention_mask=m, labels=lab).loss
        extra["loss_case"] = dict(images=loss_imgs, texts=[list(t) for t in texts],
                                  token_ids=rows, prompt_lens=[len(tok.encode(p).ids) for p, _ in texts],
                                  loss=float(loss))
    save_file(f32(out), os.path.join(d, "bridge.safetensors"))
    json.dump(extra, open(os.path.join(d, "bridge.json"), "w"), indent=1)


def t5_fixture():
    d = os.path.join(ROOT, "t5")
    model = Blip2ForConditionalGeneration.from_pretrained(d).eval()
    tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    exp = json.load(open(os.path.join(d, "expected.json")))
    ref = load_file(os.path.join(d, "expected.safetensors"))
    pv = ref["pixel_values"]
    nq = model.config.num_query_tokens
    img_tok = model.config.image_token_index
    q = query_output(model, pv)
    out = {"query_output": q}
    with torch.no_grad():
        proj = model.language_projection(q)
        out["language_model_inputs"] = proj
        emb = model.get_input_embeddings()
        worst = 0.0
        for c in exp["cases"]:
            i, j = c["image"], c["prompt"]
            ids = torch.tensor([[img_tok] * nq + c["prompt_ids"]])
            e = emb(ids)
            e[0, :nq] = proj[i]
            dec = torch.tensor([c["decoder_input_ids"]])
            logits = model.language_model(inputs_embeds=e, attention_mask=torch.ones_like(ids),
                                          decoder_input_ids=dec).logits[0]
            worst = max(worst, (logits - ref[f"decoder_logits_{i}_{j}"]).abs().max().item())
            out[f"inputs_embeds_{i}_{j}"] = e[0]
        print(f"t5: max |logits - expected| from recomputed query outputs = {worst:.3g}")
        assert worst < 1e-5, worst

        extra = {"pad_token_id": 0, "eos_token_id": 1, "image_token_index": img_tok, "cases": []}
        # Batched, right padded (T5 prompts end with </s>).
        prompts = ["Question: what color is the circle? Short answer:", "a photo of", "a"]
        images = [0, 2, 3]
        rows = [[img_tok] * nq + tok.encode(p).ids for p in prompts]
        L = max(len(r) for r in rows)
        input_ids = torch.tensor([r + [0] * (L - len(r)) for r in rows])
        mask = torch.tensor([[1] * len(r) + [0] * (L - len(r)) for r in rows])
        settings = [
            dict(name="greedy", num_beams=1, max_new_tokens=6),
            dict(name="greedy_rep1.5_min3", num_beams=1, max_new_tokens=7, min_new_tokens=3, repetition_penalty=1.5),
            dict(name="beam3", num_beams=3, max_new_tokens=6, length_penalty=1.0),
            dict(name="beam5_lp-1", num_beams=5, max_new_tokens=10, min_new_tokens=1, length_penalty=-1.0),
            dict(name="beam4_lp0_rep1.3", num_beams=4, max_new_tokens=8, length_penalty=0.0, repetition_penalty=1.3),
        ]
        for s in settings:
            kw = {k: v for k, v in s.items() if k != "name"}
            kw.setdefault("repetition_penalty", 1.0)
            kw.setdefault("length_penalty", 1.0)
            kw.setdefault("min_new_tokens", 0)
            g = model.generate(pixel_values=pv[images], input_ids=input_ids, attention_mask=mask, do_sample=False,
                               eos_token_id=1, pad_token_id=0, **kw)
            extra["cases"].append(dict(name=s["name"], images=images, input_ids=input_ids.tolist(),
                                       attention_mask=mask.tolist(), settings=kw, output_ids=g.tolist()))
        # Batched LM loss, both sides right padded, labels pad -> -100.
        pairs = [("a photo of", "a red circle"), ("a", "blue square next to a green triangle"),
                 ("Question: where is it? Short answer:", "left")]
        enc = [tok.encode(p).ids for p, _ in pairs]
        tgt = [tok.encode(t).ids for _, t in pairs]
        Le, Lt = max(map(len, enc)), max(map(len, tgt))
        ids = torch.tensor([[img_tok] * nq + r + [0] * (Le - len(r)) for r in enc])
        m = torch.tensor([[1] * (nq + len(r)) + [0] * (Le - len(r)) for r in enc])
        lab = torch.tensor([r + [-100] * (Lt - len(r)) for r in tgt])
        dm = torch.tensor([[1] * len(r) + [0] * (Lt - len(r)) for r in tgt])
        loss_imgs = [1, 3, 0]
        loss = model(pixel_values=pv[loss_imgs], input_ids=ids, attention_mask=m, labels=lab,
                     decoder_attention_mask=dm).loss
        extra["loss_case"] = dict(images=loss_imgs, pairs=[list(p) for p in pairs], encoder_ids=enc,
                                  target_ids=tgt, loss=float(loss))
    save_file(f32(out), os.path.join(d, "bridge.safetensors"))
    json.dump(extra, open(os.path.join(d, "bridge.json"), "w"), indent=1)


if __name__ == "__main__":
    torch.manual_seed(0)
    opt_fixture()
    t5_fixture()
