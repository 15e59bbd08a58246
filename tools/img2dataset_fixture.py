"""Outputs of img2dataset itself, for the `table` and `webdataset` sources.

Run: python tools/img2dataset_fixture.py   (img2dataset, pillow; never in CI)
Serves six small pictures from `python -m http.server`-style local server on 127.0.0.1, asks
img2dataset for them plus one URL that answers 404, in both its `files` layout (`00000.parquet`
beside `00000/{key}.jpg`) and its `webdataset` layout (`00000.tar`), and writes
tests/fixtures/img2dataset/{files,webdataset}/ and expected.json: the caption of every key that
downloaded, and the number of failed rows.
"""
import functools
import http.server
import json
import os
import shutil
import socketserver
import tempfile
import threading

from PIL import Image

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "img2dataset")


def main():
    from img2dataset import download

    src = tempfile.mkdtemp()
    for i in range(6):
        Image.new("RGB", (48 + 8 * i, 40), ((40 * i) % 256, 90, 200 - 20 * i)).save(os.path.join(src, f"p{i}.png"))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=src)
    httpd = socketserver.TCPServer(("127.0.0.1", 0), handler)
    port = httpd.server_address[1]
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    rows = [(f"http://127.0.0.1:{port}/p{i}.png", f"picture {i}, a flat colour") for i in range(6)]
    rows.insert(3, (f"http://127.0.0.1:{port}/missing.png", "this one answers 404"))
    urls = os.path.join(src, "urls.csv")
    with open(urls, "w") as f:
        f.write("url,caption\n")
        for u, c in rows:
            f.write(f'{u},"{c}"\n')
    shutil.rmtree(OUT, ignore_errors=True)
    for fmt in ["files", "webdataset"]:
        download(url_list=urls, input_format="csv", url_col="url", caption_col="caption",
                 output_folder=os.path.join(OUT, fmt), output_format=fmt, processes_count=1,
                 thread_count=2, image_size=32, resize_mode="center_crop", encode_format="jpg",
                 number_sample_per_shard=100, distributor="multiprocessing", disable_all_reencoding=False)
    httpd.shutdown()
    # Only what the readers read; img2dataset's logs and stats stay out.
    for root, _, files in os.walk(OUT):
        for f in files:
            if f.endswith("_stats.json") or f.endswith(".log"):
                os.remove(os.path.join(root, f))
    import pyarrow.parquet as pq
    table = pq.read_table(os.path.join(OUT, "files", "00000.parquet")).to_pydict()
    ok = [(k, c) for k, c, s in zip(table["key"], table["caption"], table["status"]) if s == "success"]
    expected = {"success": [{"key": k, "caption": c} for k, c in ok],
                "failed": sum(1 for s in table["status"] if s != "success")}
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
    print(expected)


if __name__ == "__main__":
    main()
