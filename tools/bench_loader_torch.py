"""The PyTorch side of `blip2 bench loader`: the same webdataset shards through the pipeline
LAVIS trains stage one with (webdataset + torchvision: RandomResizedCrop(224, scale 0.5-1.0,
bicubic), RandomHorizontalFlip, ToTensor, Normalize with the OpenAI CLIP mean/std; captions
tokenized by the same tokenizer.json), batches of 32 from a DataLoader with N workers.

Make the data (640x480 JPEGs, quality 90, webdataset shards as img2dataset writes them):
    python tools/bench_loader_torch.py make DIR [--images 1024]
Time PyTorch:
    python tools/bench_loader_torch.py time DIR --workers 2 [--tokenizer tests/fixtures/hf-tiny/itm/tokenizer.json]
Prints one JSON line: samples/s over one pass (after one warm-up batch).

torch==2.9.1, torchvision==0.24.1, webdataset==1.0.2, pillow.
"""
import argparse
import glob
import io
import json
import os
import random
import time

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


def make(out, images):
    import numpy as np
    import webdataset as wds
    from PIL import Image

    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(0)
    per_shard = 256
    for s in range(0, images, per_shard):
        with wds.TarWriter(os.path.join(out, f"{s // per_shard:05d}.tar")) as w:
            for i in range(s, min(s + per_shard, images)):
                # Smooth gradients plus noise: JPEG work like a photograph's, not a flat image's.
                y, x = np.mgrid[0:480, 0:640]
                base = np.stack([(x * (i % 7 + 1)) % 256, (y * (i % 5 + 1)) % 256, (x + y) % 256], -1)
                img = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
                b = io.BytesIO()
                Image.fromarray(img).save(b, format="JPEG", quality=90)
                cap = f"a synthetic photograph number {i} with smooth colours and some noise"
                w.write({"__key__": f"{i:09d}", "jpg": b.getvalue(), "txt": cap,
                         "json": {"caption": cap, "status": "success"}})


def time_torch(data, workers, tokenizer_path, batch):
    import torch
    import webdataset as wds
    from torchvision import transforms
    from transformers import PreTrainedTokenizerFast

    torch.set_num_threads(1)
    tok = PreTrainedTokenizerFast(tokenizer_file=tokenizer_path)
    tok.pad_token = tok.pad_token or "[PAD]"
    transform = transforms.Compose([
        transforms.RandomResizedCrop(224, scale=(0.5, 1.0), interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(MEAN, STD),
    ])
    urls = sorted(glob.glob(os.path.join(data, "*.tar")))

    def collate(samples):
        images = torch.stack([s[0] for s in samples])
        text = tok([s[1] for s in samples], padding="longest", truncation=True, max_length=32,
                   return_tensors="pt")
        return images, text["input_ids"]

    ds = (wds.WebDataset(urls, shardshuffle=False, empty_check=False)
          .decode("pilrgb").to_tuple("jpg", "txt").map_tuple(transform, lambda t: t))
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, num_workers=workers, collate_fn=collate)
    it = iter(loader)
    first = next(it)  # warm-up: workers start, first shard opens
    n, t = 0, time.perf_counter()
    for images, _ in it:
        n += images.shape[0]
    dt = time.perf_counter() - t
    print(json.dumps({"pipeline": "torch", "workers": workers, "samples": n, "seconds": dt,
                      "samples_per_sec": n / dt, "warmup_batch": int(first[0].shape[0])}))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("out")
    m.add_argument("--images", type=int, default=1024)
    t = sub.add_parser("time")
    t.add_argument("data")
    t.add_argument("--workers", type=int, default=2)
    t.add_argument("--batch", type=int, default=32)
    t.add_argument("--tokenizer", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures",
                                                        "hf-tiny", "itm", "tokenizer.json"))
    a = ap.parse_args()
    if a.cmd == "make":
        make(a.out, a.images)
    else:
        time_torch(a.data, a.workers, a.tokenizer, a.batch)


if __name__ == "__main__":
    random.seed(0)
    main()
