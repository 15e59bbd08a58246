"""Extra preprocessing fixtures: HF BlipImageProcessor (PIL bicubic) on images of several sizes
and modes. Writes tests/fixtures/preprocess/{*.png,*.jpg,expected.safetensors,expected.json}.

Run: python tools/preprocess_fixtures.py  (needs pillow, numpy, transformers==4.57.6, safetensors)
For each case it stores `<name>.resized_u8` [H,W,3] = the uint8 image right after HF's resize
(PIL bicubic), and for small outputs also `<name>.pixel_values` [3,H,W] float32 = HF's output.
"""
import json
import os

import numpy as np
import PIL
import transformers
from PIL import Image
from safetensors.numpy import save_file
from transformers import BlipImageProcessor
from transformers.image_utils import ChannelDimension

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "preprocess")
rng = np.random.default_rng(0)


def smooth_rgb(w, h):
    """Smooth gradients + blocks + a little noise: compresses well but exercises the filter."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 127 + 120 * np.sin(x / 17.0) * np.cos(y / 23.0)
    g = 255 * x / max(w - 1, 1)
    b = 255 * ((x // 40 + y // 40) % 2)
    img = np.stack([r, g, b], -1) + rng.normal(0, 6, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def make_images():
    os.makedirs(OUT, exist_ok=True)
    Image.fromarray(smooth_rgb(640, 480)).save(os.path.join(OUT, "photo640x480.jpg"), quality=90)
    Image.fromarray(smooth_rgb(100, 60)).save(os.path.join(OUT, "small100x60.png"))
    Image.fromarray(smooth_rgb(37, 29)[..., 0]).save(os.path.join(OUT, "gray37x29.png"))
    rgba = np.concatenate([smooth_rgb(45, 30), rng.integers(0, 256, (30, 45, 1), dtype=np.uint8)], -1)
    Image.fromarray(rgba, "RGBA").save(os.path.join(OUT, "rgba45x30.png"))
    Image.fromarray(smooth_rgb(50, 50)).convert("P", palette=Image.ADAPTIVE, colors=16).save(
        os.path.join(OUT, "palette50x50.png"))


CASES = [  # (name, file, output size, store float pixel_values)
    ("down224", "photo640x480.jpg", 224, False),
    ("up364", "small100x60.png", 364, False),
    ("down48", "small100x60.png", 48, True),
    ("gray40", "gray37x29.png", 40, True),
    ("rgba32", "rgba45x30.png", 32, True),
    ("palette24", "palette50x50.png", 24, True),
]


def main():
    make_images()
    tensors, meta = {}, {"pillow": PIL.__version__, "transformers": transformers.__version__, "cases": []}
    for name, file, size, store_float in CASES:
        proc = BlipImageProcessor(size={"height": size, "width": size})
        img = Image.open(os.path.join(OUT, file))
        mode = img.mode
        pv = proc(img, return_tensors="np")["pixel_values"][0]
        rgb = np.array(img.convert("RGB"))
        resized = proc.resize(rgb, size={"height": size, "width": size},
                              input_data_format=ChannelDimension.LAST)
        assert resized.dtype == np.uint8, resized.dtype
        # HF's output must be exactly its rescale+normalise of that uint8 image.
        again = proc.normalize(proc.rescale(resized, 1 / 255, input_data_format=ChannelDimension.LAST),
                               proc.image_mean, proc.image_std, input_data_format=ChannelDimension.LAST)
        assert np.array_equal(again.transpose(2, 0, 1), pv), name
        tensors[f"{name}.resized_u8"] = np.ascontiguousarray(resized)
        if store_float:
            tensors[f"{name}.pixel_values"] = np.ascontiguousarray(pv.astype(np.float32))
        meta["cases"].append({"name": name, "file": file, "mode": mode, "size": size,
                              "input": list(img.size), "pixel_values": store_float})
    save_file(tensors, os.path.join(OUT, "expected.safetensors"))
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(meta, f, indent=1)


if __name__ == "__main__":
    main()
