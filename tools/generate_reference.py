"""Reference captions and zero-shot VQA answers for the CLI tests, from transformers 4.57.6
`Blip2ForConditionalGeneration.generate` on the hf-tiny OPT/T5 fixtures and image files.

Writes tests/fixtures/vqa-tiny/reference.json:
  captions[model][image] = ids/text with LAVIS caption settings (beams 5, max 30, min 8, "a photo of")
  vqa[model] = [{"question_id", "answer"}] with LAVIS zero-shot VQA settings, batched HF-style
  (batch 3, OPT left padding), questions cleaned as LAVIS pre_question, answers as predict_answers.
"""
import json
import re
from pathlib import Path

import torch
from PIL import Image
from transformers import Blip2ForConditionalGeneration, BlipImageProcessor, PreTrainedTokenizerFast

ROOT = Path(__file__).resolve().parent.parent
FX = ROOT / "tests/fixtures/hf-tiny"
VQA = ROOT / "tests/fixtures/vqa-tiny"


def pre_question(q, max_words=50):
    q = re.sub(r"([.!\"()*#:;~])", "", q.lower())
    q = q.rstrip(" ")
    words = q.split(" ")
    if len(words) > max_words:
        q = " ".join(words[:max_words])
    return q


def load(name):
    d = FX / name
    model = Blip2ForConditionalGeneration.from_pretrained(d).eval()
    proc = BlipImageProcessor(**json.loads((d / "preprocessor_config.json").read_text()))
    tok = PreTrainedTokenizerFast(tokenizer_file=str(d / "tokenizer.json"))
    return model, proc, tok


def inputs(model, proc, tok, images, prompts, side):
    pix = proc([Image.open(p).convert("RGB") for p in images], return_tensors="pt").pixel_values
    nq = model.config.num_query_tokens
    rows = [[model.config.image_token_index] * nq + tok(p).input_ids for p in prompts]
    L = max(len(r) for r in rows)
    pad = model.config.text_config.pad_token_id
    ids, mask = [], []
    for r in rows:
        n = L - len(r)
        if side == "left":
            ids.append([pad] * n + r)
            mask.append([0] * n + [1] * len(r))
        else:
            ids.append(r + [pad] * n)
            mask.append([1] * len(r) + [0] * n)
    return pix, torch.tensor(ids), torch.tensor(mask)


def new_tokens(g, ids, opt):
    """HF returns OPT rows as input ids + new tokens: keep the new tokens (T5: decoder output)."""
    if not opt:
        return g
    assert torch.equal(g[:, : ids.shape[1]], ids), "OPT output does not start with the input ids"
    return g[:, ids.shape[1]:]


def main():
    out = {"captions": {}, "vqa": {}}
    images = [FX / "images" / f"img{i}.png" for i in range(4)]
    questions = json.loads((VQA / "questions.json").read_text())["questions"]
    for name in ["opt", "t5"]:
        model, proc, tok = load(name)
        opt = name == "opt"
        side = "left" if opt else "right"
        caps = []
        for img in images:
            pix, ids, mask = inputs(model, proc, tok, [img], ["a photo of"], side)
            with torch.no_grad():
                g = model.generate(pixel_values=pix, input_ids=ids, attention_mask=mask,
                                   num_beams=5, max_new_tokens=30, min_new_tokens=8)
            row = new_tokens(g, ids, opt)[0].tolist()
            caps.append({"ids": row, "text": tok.decode(row, skip_special_tokens=True).strip()})
        out["captions"][name] = caps
        answers = []
        for s in range(0, len(questions), 3):
            chunk = questions[s:s + 3]
            prompts = ["Question: {} Short answer:".format(pre_question(q["question"])) for q in chunk]
            imgs = [FX / "images" / f"img{q['image_id']}.png" for q in chunk]
            pix, ids, mask = inputs(model, proc, tok, imgs, prompts, side)
            with torch.no_grad():
                g = model.generate(pixel_values=pix, input_ids=ids, attention_mask=mask,
                                   num_beams=5, max_new_tokens=10, min_new_tokens=1,
                                   length_penalty=0.0 if opt else -1.0)
            texts = tok.batch_decode(new_tokens(g, ids, opt), skip_special_tokens=True)
            for q, t in zip(chunk, texts):
                answers.append({"question_id": q["question_id"], "answer": t.strip() if opt else t})
        out["vqa"][name] = answers
    (VQA / "reference.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
