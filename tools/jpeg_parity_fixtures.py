"""JPEG decode parity cases: tests/fixtures/jpeg/{name}.jpg and, in expected.json, the RGB pixels
Pillow (libjpeg-turbo) decodes from each (`Image.open(f).convert("RGB")`): size, the SHA-256 of the
row-major RGB bytes, and every 97th value (to say where a difference is).

Run: python tools/jpeg_parity_fixtures.py   (pillow)
The cases re-encode tests/fixtures/preprocess/photo640x480.jpg (a real photograph) as 4:2:0,
4:4:4 and 4:2:2 baseline, progressive, optimized Huffman tables, grey, restart markers and an
odd size (cropped to 333x251, so the chroma planes do not divide evenly).
"""
import hashlib
import json
import os

from PIL import Image

ROOT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")
OUT = os.path.join(ROOT, "jpeg")

CASES = {
    "s420_q90": dict(quality=90, subsampling=2),
    "s444_q95": dict(quality=95, subsampling=0),
    "s422_q75": dict(quality=75, subsampling=1),
    "progressive_q85": dict(quality=85, subsampling=2, progressive=True),
    "optimized_q80": dict(quality=80, subsampling=2, optimize=True),
    "restart_q90": dict(quality=90, subsampling=2, restart_marker_blocks=4),
}


def main():
    os.makedirs(OUT, exist_ok=True)
    photo = Image.open(os.path.join(ROOT, "preprocess", "photo640x480.jpg")).convert("RGB")
    images = {name: (photo, kw) for name, kw in CASES.items()}
    images["odd333x251_q90"] = (photo.crop((17, 31, 350, 282)), dict(quality=90, subsampling=2))
    images["grey_q90"] = (photo.convert("L"), dict(quality=90))
    expected = {}
    for name, (im, kw) in sorted(images.items()):
        path = os.path.join(OUT, f"{name}.jpg")
        im.save(path, format="JPEG", **kw)
        rgb = Image.open(path).convert("RGB")
        raw = rgb.tobytes()
        expected[name] = {"width": rgb.width, "height": rgb.height,
                          "sha256": hashlib.sha256(raw).hexdigest(), "sample_every": 97,
                          "sample": list(raw[::97])}
        print(name, os.path.getsize(path))
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump({"pillow": Image.__version__, "cases": expected}, f)


if __name__ == "__main__":
    main()
