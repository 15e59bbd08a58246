"""Original haotian-liu LLaVA fixtures from tests/fixtures/llava-tiny (HF LlavaForConditionalGeneration).

Writes, under tests/fixtures/:

- llava-tiny-clip/: the CLIP tower alone (`CLIPVisionModel.save_pretrained` + llava-tiny's
  CLIPImageProcessor config), what `mm_vision_tower` names.
- llava-tiny-original/: llava-tiny's weights in the original layout (`model.*`, `lm_head.*`,
  `model.mm_projector.{0,2}.*`, mlp2x_gelu), config.json with the LLaMA keys at top level and
  `mm_vision_tower = "../llava-tiny-clip"` (no `image_aspect_ratio`: square, as HF processes). Its expected outputs are
  llava-tiny's (HF's); the script checks that LLaVA's own composition gives them.
- llava-tiny-original-linear/: a fresh `linear` projector with `cls_patch` features, the LLM in
  `pytorch_model.bin` and the projector in a separate `mm_projector.bin` (stage-1 output), with
  expected.json from LLaVA's composition.
- llava-tiny-original-mlp3/: a fresh `mlp3x_gelu` projector, `image_aspect_ratio = "pad"` on
  llava-tiny's (mostly non-square) images (expand2square with the mean colour), expected.json +
  expected.safetensors (pixel_values) from LLaVA's composition.

LLaVA's composition, as llava/mm_utils.py, llava_arch.py and the builder run it:
`tokenizer_image_token` (chunks between `<image>` tokenized with BOS, BOS kept once in front),
`hidden_states[mm_vision_select_layer]` (`[:, 1:]` for `patch`), the projector
`nn.Sequential(Linear, GELU, Linear, ...)`, the image rows put where `<image>` stood, and
`LlamaForCausalLM.generate(inputs_embeds=...)`.

Run from the project root in a venv with torch 2.9.1, transformers 4.57.6, pillow, safetensors:

    python tools/llava_original_fixtures.py
"""

import json
import re
import shutil
from pathlib import Path

import safetensors.torch as st
import torch
from PIL import Image
from torch import nn
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "tests" / "fixtures"
SRC = FIX / "llava-tiny"
TOWER = FIX / "llava-tiny-clip"
IMAGE_TOKEN_INDEX = -200
QUESTION_TEMPLATE = "USER: <image>\n{} ASSISTANT:"
MAX_NEW = 6

torch.set_num_threads(1)
torch.manual_seed(0)


def expand2square(pil_img, background_color):
    """llava/mm_utils.py `expand2square`."""
    width, height = pil_img.size
    if width == height:
        return pil_img
    elif width > height:
        result = Image.new(pil_img.mode, (width, width), background_color)
        result.paste(pil_img, (0, (width - height) // 2))
        return result
    else:
        result = Image.new(pil_img.mode, (height, height), background_color)
        result.paste(pil_img, ((height - width) // 2, 0))
        return result


def tokenizer_image_token(prompt, tokenizer):
    """llava/mm_utils.py `tokenizer_image_token`."""
    prompt_chunks = [tokenizer(chunk).input_ids for chunk in prompt.split("<image>")]

    def insert_separator(X, sep):
        return [ele for sublist in zip(X, [sep] * len(X)) for ele in sublist][:-1]

    input_ids = []
    offset = 0
    if len(prompt_chunks) > 0 and len(prompt_chunks[0]) > 0 and prompt_chunks[0][0] == tokenizer.bos_token_id:
        offset = 1
        input_ids.append(prompt_chunks[0][0])
    for x in insert_separator(prompt_chunks, [IMAGE_TOKEN_INDEX] * (offset + 1)):
        input_ids.extend(x[offset:])
    return input_ids


def build_projector(ptype, mm_hidden, hidden):
    """llava/model/multimodal_projector/builder.py `build_vision_projector`."""
    if ptype == "linear":
        return nn.Linear(mm_hidden, hidden)
    m = re.match(r"^mlp(\d+)x_gelu$", ptype)
    depth = int(m.group(1))
    modules = [nn.Linear(mm_hidden, hidden)]
    for _ in range(1, depth):
        modules.append(nn.GELU())
        modules.append(nn.Linear(hidden, hidden))
    return nn.Sequential(*modules)


def projector_state(proj, ptype):
    prefix = "model.mm_projector."
    return {prefix + k: v.detach().clone().contiguous() for k, v in proj.state_dict().items()}


class Llava:
    """LLaVA's inference path over a tower, a projector and a LLaMA."""

    def __init__(self, tower, proj, llm, tokenizer, processor, cfg):
        self.tower, self.proj, self.llm, self.tok, self.processor, self.cfg = (
            tower, proj, llm, tokenizer, processor, cfg)

    def pixel_values(self, image):
        if self.cfg.get("image_aspect_ratio") == "pad":
            bg = tuple(int(x * 255) for x in self.processor.image_mean)
            image = expand2square(image, bg)
        return self.processor.preprocess(image, return_tensors="pt")["pixel_values"]

    @torch.no_grad()
    def image_rows(self, pv):
        out = self.tower(pv, output_hidden_states=True)
        f = out.hidden_states[self.cfg["mm_vision_select_layer"]]
        if self.cfg["mm_vision_select_feature"] == "patch":
            f = f[:, 1:]
        return self.proj(f)

    @torch.no_grad()
    def generate(self, image, prompt, num_beams):
        ids = tokenizer_image_token(prompt, self.tok)
        pv = self.pixel_values(image)
        rows = self.image_rows(pv)
        embed = self.llm.get_input_embeddings()
        parts, run, k = [], [], 0
        for t in ids + [None]:
            if t is None or t == IMAGE_TOKEN_INDEX:
                if run:
                    parts.append(embed(torch.tensor(run)))
                run = []
                if t == IMAGE_TOKEN_INDEX:
                    parts.append(rows[k])
                    k += 1
            else:
                run.append(t)
        emb = torch.cat(parts)[None]
        out = self.llm.generate(
            inputs_embeds=emb,
            attention_mask=torch.ones(emb.shape[:2], dtype=torch.long),
            max_new_tokens=MAX_NEW,
            do_sample=False,
            num_beams=num_beams,
            length_penalty=1.0,
            early_stopping=False,
            eos_token_id=2,
            pad_token_id=493,
        )
        return ids, pv, out[0].tolist()


def original_config(text_cfg, **mm):
    c = {k: v for k, v in text_cfg.items() if k != "model_type"}
    c.update(
        architectures=["LlavaLlamaForCausalLM"],
        model_type="llava",
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
        torch_dtype="float32",
        mm_vision_tower="../llava-tiny-clip",
        mm_hidden_size=32,
        mm_vision_select_layer=-2,
        mm_use_im_start_end=False,
        mm_use_im_patch_token=False,
        mm_patch_merge_type="flat",
        tune_mm_mlp_adapter=False,
        freeze_mm_mlp_adapter=False,
        tokenizer_model_max_length=2048,
        tokenizer_padding_side="right",
    )
    c.update(mm)
    return c


def write_dir(name, cfg):
    d = FIX / name
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    for f in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"]:
        shutil.copy(SRC / f, d / f)
    (d / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    return d


def main():
    src_cfg = json.loads((SRC / "config.json").read_text())
    expected = json.loads((SRC / "expected.json").read_text())
    w = st.load_file(SRC / "model.safetensors")

    # The tower, as its own CLIPVisionModel directory.
    tower = CLIPVisionModel(CLIPVisionConfig(**src_cfg["vision_config"])).eval()
    tower_sd = {k[len("model.vision_tower."):]: v for k, v in w.items() if k.startswith("model.vision_tower.")}
    missing, unexpected = tower.load_state_dict(tower_sd, strict=False)
    assert not unexpected and all("position_ids" in m for m in missing), (missing, unexpected)
    if TOWER.exists():
        shutil.rmtree(TOWER)
    tower.save_pretrained(TOWER, safe_serialization=True)
    shutil.copy(SRC / "preprocessor_config.json", TOWER / "preprocessor_config.json")
    processor = CLIPImageProcessor.from_pretrained(TOWER)

    # The LLM in original names.
    llm_sd = {}
    for k, v in w.items():
        if k.startswith("model.language_model."):
            llm_sd["model." + k[len("model.language_model."):]] = v.clone().contiguous()
        elif k == "lm_head.weight":
            llm_sd[k] = v.clone().contiguous()
    text_cfg = src_cfg["text_config"]
    llm = LlamaForCausalLM(LlamaConfig(**text_cfg)).eval()
    missing, unexpected = llm.load_state_dict(llm_sd, strict=False)
    assert not unexpected and not [m for m in missing if "rotary" not in m], (missing, unexpected)
    tok = PreTrainedTokenizerFast.from_pretrained(SRC)
    images = [Image.open(SRC / p).convert("RGB") for p in expected["images"]]

    # A: llava-tiny itself (mlp2x_gelu); no image_aspect_ratio (square: the processor as it is).
    cfg_a = original_config(text_cfg, mm_projector_type="mlp2x_gelu", mm_vision_select_feature="patch")
    d = write_dir("llava-tiny-original", cfg_a)
    proj2 = build_projector("mlp2x_gelu", 32, 64)
    proj2[0].weight.data = w["model.multi_modal_projector.linear_1.weight"]
    proj2[0].bias.data = w["model.multi_modal_projector.linear_1.bias"]
    proj2[2].weight.data = w["model.multi_modal_projector.linear_2.weight"]
    proj2[2].bias.data = w["model.multi_modal_projector.linear_2.bias"]
    st.save_file({**llm_sd, **projector_state(proj2, "mlp2x_gelu")}, d / "model.safetensors", metadata={"format": "pt"})
    model = Llava(tower, proj2.eval(), llm, tok, processor, cfg_a)
    for case in expected["cases"]:
        prompt = case["prompt_text"]
        for key, beams in [("greedy_ids", 1), ("beam3_ids", 3)]:
            ids, _, out = model.generate(images[case["image"]], prompt, beams)
            want_prompt = [IMAGE_TOKEN_INDEX if t == 492 else t for t in case["prompt_ids"]]
            assert ids == want_prompt, (ids, want_prompt)
            want = case[key]
            if 2 in want:
                want = want[: want.index(2) + 1]
            assert out == want, (case["image"], case["prompt"], key, out, want)
    print("llava-tiny-original: LLaVA's composition gives llava-tiny's greedy and beam-3 ids")

    # B: linear projector, cls_patch, LLM in pytorch_model.bin, projector in mm_projector.bin.
    cfg_b = original_config(text_cfg, mm_projector_type="linear", mm_vision_select_feature="cls_patch")
    d = write_dir("llava-tiny-original-linear", cfg_b)
    torch.manual_seed(1)
    proj_lin = build_projector("linear", 32, 64).eval()
    torch.save(llm_sd, d / "pytorch_model.bin")
    torch.save(projector_state(proj_lin, "linear"), d / "mm_projector.bin")
    model = Llava(tower, proj_lin, llm, tok, processor, cfg_b)
    cases = []
    question = expected["questions"][0]
    for i, image in enumerate(images):
        prompt = QUESTION_TEMPLATE.format(question)
        ids, _, greedy = model.generate(image, prompt, 1)
        cases.append({"image": i, "prompt_text": prompt, "prompt_ids": ids, "greedy_ids": greedy})
    exp_b = {
        "provenance": provenance(),
        "images": ["../llava-tiny/" + p for p in expected["images"]],
        "question": question,
        "tokens_per_image": 17,
        "generation": {"max_new_tokens": MAX_NEW, "num_beams": 1, "eos_token_id": 2},
        "cases": cases,
    }
    (d / "expected.json").write_text(json.dumps(exp_b, indent=1) + "\n")
    print("llava-tiny-original-linear:", [c["greedy_ids"] for c in cases])

    # C: mlp3x_gelu, pad on non-square images.
    cfg_c = original_config(
        text_cfg, mm_projector_type="mlp3x_gelu", mm_vision_select_feature="patch", image_aspect_ratio="pad")
    d = write_dir("llava-tiny-original-mlp3", cfg_c)
    torch.manual_seed(2)
    proj3 = build_projector("mlp3x_gelu", 32, 64).eval()
    st.save_file({**llm_sd, **projector_state(proj3, "mlp3x_gelu")}, d / "model.safetensors", metadata={"format": "pt"})
    # llava-tiny's pictures: 50x37 and 80x64 (wide), 33x71 (tall), 64x64 (square).
    pics = [("../llava-tiny/" + p, im) for p, im in zip(expected["images"], images)]
    model = Llava(tower, proj3, llm, tok, processor, cfg_c)
    cases, tensors = [], {}
    for i, (rel, image) in enumerate(pics):
        tensors[f"pixel_values_{i}"] = model.pixel_values(image)[0].contiguous()
        for j, q in enumerate(expected["questions"]):
            prompt = QUESTION_TEMPLATE.format(q)
            ids, _, greedy = model.generate(image, prompt, 1)
            _, _, beam3 = model.generate(image, prompt, 3)
            cases.append({"image": i, "question": j, "prompt_text": prompt, "prompt_ids": ids,
                          "greedy_ids": greedy, "beam3_ids": beam3})
    exp_c = {
        "provenance": provenance(),
        "images": [r for r, _ in pics],
        "image_sizes": [list(im.size) for _, im in pics],
        "background": [int(x * 255) for x in processor.image_mean],
        "questions": expected["questions"],
        "generation": {"max_new_tokens": MAX_NEW, "eos_token_id": 2},
        "cases": cases,
    }
    (d / "expected.json").write_text(json.dumps(exp_c, indent=1) + "\n")
    st.save_file(tensors, d / "expected.safetensors")
    # The padding shows: the unpadded processor gives other pixels.
    plain = processor.preprocess(images[0], return_tensors="pt")["pixel_values"][0]
    assert (plain - tensors["pixel_values_0"]).abs().max() > 0.1
    print("llava-tiny-original-mlp3:", [(c["greedy_ids"], c["beam3_ids"]) for c in cases])


def provenance():
    import PIL
    import transformers
    return {"script": "tools/llava_original_fixtures.py", "torch": torch.__version__,
            "transformers": transformers.__version__, "pillow": PIL.__version__}


if __name__ == "__main__":
    main()
