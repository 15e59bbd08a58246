"""Reference trajectories for `blip2 pretrain` with `model.connector` (LLaVA, MiniGPT-4).

Run: python tools/connector_train_reference.py   (torch==2.9.1, transformers==4.57.6, CPU)
Writes tests/fixtures/connector-train/{expected.json, expected.safetensors}, read by
tests/integration/cli_pretrain_connector.rs.

Each run trains from the in-tree fixtures (tests/fixtures/llava-tiny, tests/fixtures/minigpt4-tiny)
on the small data of tests/fixtures/connector-train (4 images, 6 captions, 5 conversations) with
full-batch steps, so that the loss of a step does not depend on the order the loader draws the
samples in:

- llava_stage1: LLaVA `preprocess_plain` (`<image>` + caption + "\\n", tokenizer_image_token), the
  projector trains, tower and LLM frozen.
- llava_stage2: LLaVA `preprocess_v1` (conv_vicuna_v1, `preprocess_multimodal` moving `<image>` to
  the front of its turn, the loss on every assistant answer and its `</s>`), projector and LLM train.
- minigpt4_stage1: [BOS] + image + pre_caption(caption) + "\\n" (no special tokens), llama_proj trains.
- minigpt4_stage2: `###Human: <Img><ImageHere></Img> {question} ###Assistant: ` + answer + "###" on
  the first exchange of each conversation, llama_proj trains.
- minigpt4_stage2_align: the same template on MiniGPT-4's own stage-2 layout, a `cc_sbu_align`
  directory (`filter_cap.json`, `image/{id}.jpg`) and a prompt file; the file has one prompt with the
  marker (the line without it is dropped, as MiniGPT-4 drops it), so the per-batch draw is known. The
  `.jpg` files hold PNG bytes (both decoders go by content), so that decoding is exact on both sides.

The model computes the loss as HF does with `labels` (mean over the learned tokens of the batch,
shift inside), images spliced in where the marker is. AdamW (torch, foreach=False) with two groups
(no weight decay for tensors of ndim < 2 or names holding "bias", as `decay_rule = "lavis_base"`),
constant lr, grad-norm clipping at 1.0.
"""
import json
import os
import re

import torch
from PIL import Image
from safetensors.torch import save_file
from torch import nn
from transformers import (BlipImageProcessor, Blip2ForImageTextRetrieval, CLIPImageProcessor,
                          LlamaForCausalLM, LlavaForConditionalGeneration, PreTrainedTokenizerFast)

torch.set_num_threads(1)
ROOT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")
OUT = os.path.join(ROOT, "connector-train")
STEPS = 4
IGNORE = -100
V1_SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. "
             "The assistant gives helpful, detailed, and polite answers to the human's questions.")

CAPTIONS = [
    ("images/img0.png", "0", "A red circle, on the left!"),
    ("images/img0.png", "0", "a circle that is red"),
    ("images/img1.png", "1", "A blue square on the right."),
    ("images/img2.png", "2", "A green triangle next to a yellow square."),
    ("images/img3.png", "3", "Two shapes: a circle (white) and a square."),
    ("images/img3.png", "3", "white circle"),
]
CONVERSATIONS = [
    {"id": "a", "image": "images/img0.png", "conversations": [
        {"from": "human", "value": "<image>\nWhat color is the circle?"},
        {"from": "gpt", "value": "Red."}]},
    {"id": "b", "image": "images/img1.png", "conversations": [
        {"from": "human", "value": "Where is the square?\n<image>"},
        {"from": "gpt", "value": "On the right."},
        {"from": "human", "value": "And its color?"},
        {"from": "gpt", "value": "Blue, like the sky."}]},
    {"id": "c", "image": "images/img2.png", "conversations": [
        {"from": "gpt", "value": "Hello."},
        {"from": "human", "value": "<image>\nDescribe the picture."},
        {"from": "gpt", "value": "A green triangle next to a yellow square."}]},
    {"id": "d", "conversations": [
        {"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]},
    {"id": "e", "image": "images/img3.png", "conversations": [
        {"from": "human", "value": "<image>\nWhat shape is it?"},
        {"from": "gpt", "value": "A circle."}]},
]
RUNS = {
    "llava_stage1": dict(lr=1e-3),
    "llava_stage2": dict(lr=2e-4),
    "minigpt4_stage1": dict(lr=1e-3),
    "minigpt4_stage2": dict(lr=1e-3),
    "minigpt4_stage2_align": dict(lr=1e-3),
}
ALIGN = [("7", "images/img1.png", "A blue square, on the right."),
         ("9", "images/img2.png", "Green triangle; yellow square!"),
         ("11", "images/img3.png", "A white circle.")]
ALIGN_PROMPTS = ["<Img><ImageHere></Img> Describe this image in detail.", "a line without the marker"]
WEIGHT_DECAY, BETAS, EPS, MAX_NORM = 0.05, (0.9, 0.999), 1e-8, 1.0
MAX_TXT_LEN = 32


def write_data():
    os.makedirs(os.path.join(OUT, "images"), exist_ok=True)
    os.makedirs(os.path.join(OUT, "annotations"), exist_ok=True)
    for i in range(4):
        Image.open(os.path.join(ROOT, "llava-tiny", "images", f"img{i}.png")).save(
            os.path.join(OUT, "images", f"img{i}.png"))
    rows = [{"image": im, "caption": c, "image_id": i} for im, i, c in CAPTIONS]
    with open(os.path.join(OUT, "annotations", "karpathy_train.json"), "w") as f:
        json.dump(rows, f, indent=1)
    with open(os.path.join(OUT, "conversations.json"), "w") as f:
        json.dump(CONVERSATIONS, f, indent=1)
    align = os.path.join(OUT, "cc_sbu_align")
    os.makedirs(os.path.join(align, "image"), exist_ok=True)
    for i, im, _ in ALIGN:
        with open(os.path.join(OUT, im), "rb") as src, open(os.path.join(align, "image", f"{i}.jpg"), "wb") as dst:
            dst.write(src.read())
    with open(os.path.join(align, "filter_cap.json"), "w") as f:
        json.dump({"annotations": [{"image_id": i, "caption": c} for i, _, c in ALIGN]}, f, indent=1)
    with open(os.path.join(OUT, "alignment.txt"), "w") as f:
        f.write("\n".join(ALIGN_PROMPTS) + "\n")


# ---------------------------------------------------------------- LLaVA (haotian-liu/LLaVA train.py)

def tokenizer_image_token(prompt, tok):
    """Returns ids with None where the image goes."""
    chunks = [tok(c).input_ids for c in prompt.split("<image>")]
    out, offset = [], 0
    if chunks and chunks[0] and chunks[0][0] == tok.bos_token_id:
        offset = 1
        out.append(chunks[0][0])
    for i, c in enumerate(chunks):
        if i > 0:
            out.append(None)
        out.extend(c[offset:])
    return out


def llava_plain(caption, tok):
    ids = tokenizer_image_token("<image>" + caption + "\n", tok)
    n = len(tokenizer_image_token("<image>", tok))
    return ids, [IGNORE] * n + ids[n:]


def llava_v1(turns, tok, legacy=True):
    if turns[0]["from"] != "human":
        turns = turns[1:]
    msgs = []
    for t in turns:
        v = t["value"]
        if "<image>" in v:
            v = ("<image>\n" + v.replace("<image>", "").strip()).strip()
        msgs.append(v)
    prompt = V1_SYSTEM + " "
    for j, v in enumerate(msgs):
        prompt += ("USER" if j % 2 == 0 else "ASSISTANT") + ": " + v + (" " if j % 2 == 0 else "</s>")
    ids = tokenizer_image_token(prompt, tok)
    target = list(ids)
    sep = " ASSISTANT: "
    cur = 1
    target[:cur] = [IGNORE]
    for i, rou in enumerate(prompt.split("</s>")):
        if rou == "":
            break
        parts = rou.split(sep)
        if len(parts) != 2:
            break
        parts[0] += sep
        round_len = len(tokenizer_image_token(rou, tok))
        instruction_len = len(tokenizer_image_token(parts[0], tok)) - 2
        if i != 0 and not legacy:
            round_len -= 1
            instruction_len -= 1
        target[cur:cur + instruction_len] = [IGNORE] * instruction_len
        cur += round_len
    target[cur:] = [IGNORE] * (len(target) - cur)
    assert cur == len(ids), (cur, len(ids))
    return ids, target


def llava_run(name, stage, lr):
    d = os.path.join(ROOT, "llava-tiny")
    model = LlavaForConditionalGeneration.from_pretrained(d)
    tok = PreTrainedTokenizerFast.from_pretrained(d)
    ip = CLIPImageProcessor.from_pretrained(d)
    n_img = model.config.image_seq_length
    img_id = model.config.image_token_index
    if stage == 1:
        samples = [(im, llava_plain(c, tok)) for im, _, c in CAPTIONS]
    else:
        samples = [(c["image"], llava_v1(c["conversations"], tok)) for c in CONVERSATIONS if "image" in c]
    rows, labels = [], []
    for _, (ids, target) in samples:
        r, lab = [], []
        for t, l in zip(ids, target):
            if t is None:
                r += [img_id] * n_img
                lab += [IGNORE] * n_img
            else:
                r.append(t)
                lab.append(IGNORE if l is None else l)
        rows.append(r)
        labels.append(lab)
    L = max(map(len, rows))
    pad = model.config.pad_token_id
    input_ids = torch.tensor([r + [pad] * (L - len(r)) for r in rows])
    attn = torch.tensor([[1] * len(r) + [0] * (L - len(r)) for r in rows])
    lab = torch.tensor([lb + [IGNORE] * (L - len(lb)) for lb in labels])
    pv = ip(images=[Image.open(os.path.join(OUT, im)).convert("RGB") for im, _ in samples],
            return_tensors="pt")["pixel_values"]
    trainable = {n: p for n, p in model.named_parameters()
                 if "multi_modal_projector" in n or (stage == 2 and "vision_tower" not in n)}
    for n, p in model.named_parameters():
        p.requires_grad_(n in trainable)
    model.train()

    def loss_fn():
        return model(input_ids=input_ids, pixel_values=pv, attention_mask=attn, labels=lab).loss

    losses = train(trainable, loss_fn, lr)
    proj = {f"{name}.{k.replace('model.', '', 1)}": v.detach().clone()
            for k, v in trainable.items() if "multi_modal_projector" in k}
    return {"losses": losses, "samples": len(samples),
            "labels_first": [x for x in labels[0]], "ids_first": [x for x in rows[0]]}, proj


# ---------------------------------------------------------------- MiniGPT-4 (Vision-CAIR minigpt4.py)

def pre_caption(caption, max_words=50):
    caption = re.sub(r"([.!\"()*#:;~])", " ", caption.lower())
    caption = re.sub(r"\s{2,}", " ", caption)
    caption = caption.rstrip("\n").strip(" ")
    words = caption.split(" ")
    if len(words) > max_words:
        caption = " ".join(words[:max_words])
    return caption


def minigpt4_run(name, stage, lr):
    d = os.path.join(ROOT, "minigpt4-tiny")
    blip2 = Blip2ForImageTextRetrieval.from_pretrained(os.path.join(d, "blip2")).eval()
    llama = LlamaForCausalLM.from_pretrained(os.path.join(d, "llama"))
    fast = PreTrainedTokenizerFast.from_pretrained(os.path.join(d, "llama"))
    ip = BlipImageProcessor.from_pretrained(os.path.join(d, "blip2"))
    sd = torch.load(os.path.join(d, "pretrained_minigpt4.pth"), map_location="cpu")["model"]
    proj = nn.Linear(sd["llama_proj.weight"].shape[1], sd["llama_proj.weight"].shape[0])
    proj.load_state_dict({k.split(".", 1)[1]: v for k, v in sd.items()})
    ids = lambda t: fast(t, add_special_tokens=False).input_ids  # noqa: E731
    if stage == 1:
        samples = [(im, None, pre_caption(c) + "\n") for im, _, c in CAPTIONS]
    elif name.endswith("align"):
        prompt = [p for p in ALIGN_PROMPTS if "<ImageHere>" in p][0]
        samples = [(im, "###Human: {} ###Assistant: ".format(prompt), pre_caption(c) + "###") for _, im, c in ALIGN]
    else:
        samples = []
        for c in CONVERSATIONS:
            if "image" not in c:
                continue
            turns = c["conversations"]
            q = next(i for i, t in enumerate(turns) if t["from"] == "human")
            instr = "<Img><ImageHere></Img> " + turns[q]["value"].replace("<image>", "").strip()
            samples.append((c["image"], "###Human: {} ###Assistant: ".format(instr), turns[q + 1]["value"] + "###"))
    pv = ip(images=[Image.open(os.path.join(OUT, im)).convert("RGB") for im, _, _ in samples],
            return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        vis = blip2.vision_model(pixel_values=pv).last_hidden_state
        q = blip2.query_tokens.expand(vis.shape[0], -1, -1)
        qout = blip2.qformer(query_embeds=q, encoder_hidden_states=vis).last_hidden_state
    for p in llama.parameters():
        p.requires_grad_(False)
    emb = llama.model.embed_tokens
    bos = fast.bos_token_id

    def loss_fn():
        img = proj(qout)
        rows, labs = [], []
        for k, (_, prompt, target) in enumerate(samples):
            reg = ids(target)[:MAX_TXT_LEN]
            if prompt is None:
                pre, post = [bos], []
            else:
                before, after = prompt.split("<ImageHere>")
                pre, post = [bos] + ids(before), ids(after)
            parts = [emb(torch.tensor(pre)), img[k]]
            if post + reg:
                parts.append(emb(torch.tensor(post + reg)))
            x = torch.cat(parts)
            rows.append(x)
            labs.append([IGNORE] * (x.shape[0] - len(reg)) + reg)
        L = max(r.shape[0] for r in rows)
        x = torch.stack([torch.cat([r, r.new_zeros(L - r.shape[0], r.shape[1])]) for r in rows])
        att = torch.tensor([[1] * r.shape[0] + [0] * (L - r.shape[0]) for r in rows])
        lab = torch.tensor([lb + [IGNORE] * (L - len(lb)) for lb in labs])
        return llama(inputs_embeds=x, attention_mask=att, labels=lab).loss

    trainable = {"llama_proj.weight": proj.weight, "llama_proj.bias": proj.bias}
    losses = train(trainable, loss_fn, lr)
    return {"losses": losses, "samples": len(samples)}, {
        f"{name}.{k}": v.detach().clone() for k, v in trainable.items()}


def train(params, loss_fn, lr):
    decay = [p for n, p in params.items() if not (p.ndim < 2 or "bias" in n)]
    no_decay = [p for n, p in params.items() if p.ndim < 2 or "bias" in n]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=BETAS, eps=EPS, foreach=False)
    losses = []
    for _ in range(STEPS):
        loss = loss_fn()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(params.values()), MAX_NORM, foreach=False)
        opt.step()
        losses.append(loss.item())
    return losses


def main():
    write_data()
    expected, tensors = {"steps": STEPS, "weight_decay": WEIGHT_DECAY, "betas": BETAS, "eps": EPS,
                         "max_grad_norm": MAX_NORM, "max_txt_len": MAX_TXT_LEN}, {}
    for name, run in RUNS.items():
        fn = llava_run if name.startswith("llava") else minigpt4_run
        out, ts = fn(name, int(name.split("_stage")[1][0]), run["lr"])
        out["lr"] = run["lr"]
        expected[name] = out
        tensors.update({k: v.contiguous() for k, v in ts.items()})
        print(name, out["losses"])
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
    save_file(tensors, os.path.join(OUT, "expected.safetensors"))


if __name__ == "__main__":
    main()
