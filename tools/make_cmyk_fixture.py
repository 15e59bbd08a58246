"""Writes tests/fixtures/robust/cmyk16x16.jpg (an Adobe CMYK JPEG, as Photoshop saves them) and
cmyk16x16.pil.json: the 8-bit RGB that PIL.Image.open(..).convert("RGB") gives for it."""
import json
from pathlib import Path

from PIL import Image

out = Path(__file__).resolve().parent.parent / "tests/fixtures/robust"
out.mkdir(parents=True, exist_ok=True)
img = Image.new("CMYK", (16, 16))
px = img.load()
for y in range(16):
    for x in range(16):
        # Flat 8x8 quadrants (JPEG blocks) of pure process colours, plus K in one quadrant.
        px[x, y] = [(0, 255, 255, 0), (255, 0, 255, 0), (255, 255, 0, 0), (0, 0, 0, 128)][
            (y // 8) * 2 + x // 8
        ]
path = out / "cmyk16x16.jpg"
img.save(path, quality=95, subsampling=0)
back = Image.open(path)
assert back.mode == "CMYK"
rgb = back.convert("RGB")
json.dump(
    {"width": 16, "height": 16, "mode": back.mode, "rgb": list(rgb.tobytes())},
    open(out / "cmyk16x16.pil.json", "w"),
)
print(path, path.stat().st_size, "bytes")
