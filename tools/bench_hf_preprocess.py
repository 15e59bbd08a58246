"""Time HF BlipImageProcessor (PIL path) on the same 640x480 JPEG as
datasets/benches/preprocess.rs: open + decode + convert RGB + resize + rescale + normalise."""
import os
import time

from PIL import Image
from transformers import BlipImageProcessor

path = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "preprocess", "photo640x480.jpg")
for size in (224, 364):
    proc = BlipImageProcessor(size={"height": size, "width": size})
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 3.0:
        img = Image.open(path)
        proc(img, return_tensors="np")
        n += 1
    dt = time.perf_counter() - t0
    print(f"hf BlipImageProcessor {size}: {n / dt:.1f} images/s ({1000 * dt / n:.2f} ms/image)")
