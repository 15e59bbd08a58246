#!/usr/bin/env python3
"""Reference numbers for `blip2 eval retrieval` on the hf-tiny `itm` fixture.

transformers 4.57.6 `Blip2ForImageTextRetrieval` gives the ITC similarities (`use_image_text_matching_head=False`,
`logits_per_image` = max over queries of the cosine) and the ITM logits of every (image, text) pair
(`use_image_text_matching_head=True`, class 1 averaged over query positions). The re-ranking and the metrics are
LAVIS 1.0.2 `Blip2Qformer.compute_sim_matrix` (score matrices filled with -100, the top `k_test` by ITC re-scored as
ITM logit + ITC sim) and `RetrievalTask._report_metrics`, line for line in numpy. Captions are cleaned with BLIP
`pre_caption` (max 50 words, the `blip_caption` processor) and tokenized to max_length 35 like LAVIS.

    python3 tools/retrieval_hf_reference.py tests/fixtures/hf-tiny \
        tests/fixtures/hf-tiny/retrieval/karpathy_test.json tests/fixtures/hf-tiny/retrieval/expected.json
"""
import json, os, re, sys

import numpy as np
import torch
from PIL import Image
from transformers import Blip2ForImageTextRetrieval, BlipImageProcessor, PreTrainedTokenizerFast

root, ann_path, out_path = sys.argv[1:4]
K_TESTS = [2, 128]  # 2 < gallery (fillers appear), 128 > gallery (torch.topk is clamped here)


def pre_caption(caption, max_words=50):
    caption = re.sub(r"([.!\"()*#:;~])", " ", caption.lower())
    caption = re.sub(r"\s{2,}", " ", caption)
    caption = caption.rstrip("\n").strip(" ")
    words = caption.split(" ")
    if len(words) > max_words:
        caption = " ".join(words[:max_words])
    return caption


ann = json.load(open(ann_path))
images, texts, img2txt, txt2img = [], [], [], []
for i, row in enumerate(ann):
    caps = row["caption"] if isinstance(row["caption"], list) else [row["caption"]]
    images.append(row["image"])
    img2txt.append([])
    for c in caps:
        img2txt[i].append(len(texts))
        texts.append(pre_caption(c))
        txt2img.append(i)

model = Blip2ForImageTextRetrieval.from_pretrained(f"{root}/itm").eval()
proc = BlipImageProcessor.from_pretrained(f"{root}/itm")
tok = PreTrainedTokenizerFast(tokenizer_file=f"{root}/itm/tokenizer.json", pad_token="[PAD]")
pixels = proc([Image.open(f"{root}/images/{p}").convert("RGB") for p in images], return_tensors="pt").pixel_values
enc = tok(texts, padding="max_length", truncation=True, max_length=35, return_tensors="pt")

with torch.no_grad():
    sims = model(input_ids=enc.input_ids, attention_mask=enc.attention_mask, pixel_values=pixels,
                 use_image_text_matching_head=False).logits_per_image  # [N_img, N_txt]
    n_img, n_txt = sims.shape
    ii = torch.arange(n_img).repeat_interleave(n_txt)
    tt = torch.arange(n_txt).repeat(n_img)
    itm = model(input_ids=enc.input_ids[tt], attention_mask=enc.attention_mask[tt], pixel_values=pixels[ii],
                use_image_text_matching_head=True).logits_per_image[:, 1].reshape(n_img, n_txt)


def compute_sim_matrix(sims, itm, k_test):
    # LAVIS: score_matrix_i2t[i, topk_idx] = compute_itm(...) + topk_sim, the rest -100.
    i2t = torch.full((n_img, n_txt), -100.0)
    for i in range(n_img):
        topk_sim, topk_idx = sims[i].topk(k=min(k_test, n_txt), dim=0)
        i2t[i, topk_idx] = itm[i, topk_idx] + topk_sim
    sims_t = sims.t()
    t2i = torch.full((n_txt, n_img), -100.0)
    for t in range(n_txt):
        topk_sim, topk_idx = sims_t[t].topk(k=min(k_test, n_img), dim=0)
        t2i[t, topk_idx] = itm[topk_idx, t] + topk_sim
    return i2t.numpy(), t2i.numpy()


def report_metrics(scores_i2t, scores_t2i):
    ranks = np.zeros(scores_i2t.shape[0])
    for index, score in enumerate(scores_i2t):
        inds = np.argsort(score)[::-1]
        rank = 1e20
        for i in img2txt[index]:
            tmp = np.where(inds == i)[0][0]
            if tmp < rank:
                rank = tmp
        ranks[index] = rank
    tr1 = 100.0 * len(np.where(ranks < 1)[0]) / len(ranks)
    tr5 = 100.0 * len(np.where(ranks < 5)[0]) / len(ranks)
    tr10 = 100.0 * len(np.where(ranks < 10)[0]) / len(ranks)
    ranks = np.zeros(scores_t2i.shape[0])
    for index, score in enumerate(scores_t2i):
        inds = np.argsort(score)[::-1]
        ranks[index] = np.where(inds == txt2img[index])[0][0]
    ir1 = 100.0 * len(np.where(ranks < 1)[0]) / len(ranks)
    ir5 = 100.0 * len(np.where(ranks < 5)[0]) / len(ranks)
    ir10 = 100.0 * len(np.where(ranks < 10)[0]) / len(ranks)
    tr_mean = (tr1 + tr5 + tr10) / 3
    ir_mean = (ir1 + ir5 + ir10) / 3
    r_mean = (tr_mean + ir_mean) / 2
    agg_metrics = (tr1 + tr5 + tr10) / 3
    return {"txt_r1": tr1, "txt_r5": tr5, "txt_r10": tr10, "txt_r_mean": tr_mean, "img_r1": ir1, "img_r5": ir5,
            "img_r10": ir10, "img_r_mean": ir_mean, "r_mean": r_mean, "agg_metrics": agg_metrics}


out = {"texts": texts, "img2txt": img2txt, "txt2img": txt2img, "sims_i2t": sims.tolist(), "itm_logit": itm.tolist(),
       "itc_metrics": report_metrics(sims.numpy(), sims.t().numpy()), "rerank": {}}
for k in K_TESTS:
    i2t, t2i = compute_sim_matrix(sims, itm, k)
    out["rerank"][str(k)] = {"score_i2t": i2t.tolist(), "score_t2i": t2i.tolist(),
                             "metrics": report_metrics(i2t, t2i)}
json.dump(out, open(out_path, "w"), indent=1)
# The exact model inputs, so the Rust loop can be checked apart from image resizing (which agrees with Pillow to
# 1e-4 in pixel space; the tiny random ViT amplifies that to ~1e-4 in the similarities of img2).
from safetensors.torch import save_file
save_file({"pixel_values": pixels.contiguous(), "input_ids": enc.input_ids.to(torch.int64).contiguous(),
           "attention_mask": enc.attention_mask.to(torch.int64).contiguous()},
          os.path.join(os.path.dirname(out_path), "inputs.safetensors"))
print(json.dumps({k: out[k] for k in ["itc_metrics"]}), {k: v["metrics"] for k, v in out["rerank"].items()})
