"""Shards written by the real `webdataset` library, for tests/integration of the datasets crate.

Run: python tools/webdataset_fixture.py   (webdataset==1.0.2, pillow)
Writes tests/fixtures/webdataset/{00000.tar, 00001.tar, expected.json}:

- 00000.tar (wds.TarWriter): 6 samples as img2dataset lays them out (`jpg` + `json` with `caption` +
  `txt`), then one whose `jpg` is not a JPEG (corrupt), one with no caption member, one with only a
  `txt` caption (no json), one whose json has no `caption` (falls back to `txt`).
- 00001.tar: a TarWriter shard of 3 samples cut in the middle of the second sample's image.

expected.json: per shard the keys and captions a reader must give, and the keys it must leave out.
"""
import io
import json
import os

import webdataset as wds
from PIL import Image

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "webdataset")


def jpeg(seed, size=(40, 30)):
    im = Image.new("RGB", size, ((seed * 53) % 256, (seed * 91) % 256, (seed * 17) % 256))
    for x in range(0, size[0], 4):
        im.putpixel((x, x % size[1]), (255, 255, 255))
    b = io.BytesIO()
    im.save(b, format="JPEG", quality=90)
    return b.getvalue()


def main():
    os.makedirs(OUT, exist_ok=True)
    expected = {"00000.tar": {"keys": [], "captions": [], "left_out": [], "undecodable": []},
                "00001.tar": {"keys": [], "captions": [], "left_out": []}}
    e = expected["00000.tar"]
    with wds.TarWriter(os.path.join(OUT, "00000.tar")) as w:
        for i in range(6):
            key = f"0000000{i:02d}"
            cap = f"a photo number {i}, with a caption"
            w.write({"__key__": key, "jpg": jpeg(i), "txt": cap,
                     "json": {"caption": cap, "key": key, "status": "success"}})
            e["keys"].append(key)
            e["captions"].append(cap)
        w.write({"__key__": "000000006", "jpg": b"\xff\xd8 not a jpeg", "txt": "corrupt image",
                 "json": {"caption": "corrupt image"}})
        e["keys"].append("000000006")
        e["captions"].append("corrupt image")
        e["undecodable"].append("000000006")
        w.write({"__key__": "000000007", "jpg": jpeg(7)})
        e["left_out"].append("000000007")
        w.write({"__key__": "000000008", "jpg": jpeg(8), "txt": "only a txt caption"})
        e["keys"].append("000000008")
        e["captions"].append("only a txt caption")
        w.write({"__key__": "000000009", "jpg": jpeg(9), "txt": "txt when json has none",
                 "json": {"status": "success"}})
        e["keys"].append("000000009")
        e["captions"].append("txt when json has none")
    full = os.path.join(OUT, "full-00001.tar")
    with wds.TarWriter(full) as w:
        for i in range(3):
            w.write({"__key__": f"00001000{i}", "jpg": jpeg(20 + i), "txt": f"second shard {i}"})
    data = open(full, "rb").read()
    os.remove(full)
    # The second image starts after: 3 members of sample 0 (header + padded body each), then the
    # header of sample 1's jpg; cut 100 bytes into that body.
    members = []
    pos = 0
    while pos + 512 <= len(data) and data[pos:pos + 512] != b"\0" * 512:
        size = int(data[pos + 124:pos + 136].split(b"\0")[0].strip() or b"0", 8)
        name = data[pos:pos + 100].split(b"\0")[0].decode()
        members.append((name, pos + 512, size))
        pos += 512 + (size + 511) // 512 * 512
    cut_at = next(start for name, start, size in members if name == "000010001.jpg") + 100
    with open(os.path.join(OUT, "00001.tar"), "wb") as f:
        f.write(data[:cut_at])
    expected["00001.tar"]["keys"] = ["000010000"]
    expected["00001.tar"]["captions"] = ["second shard 0"]
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)


if __name__ == "__main__":
    main()
