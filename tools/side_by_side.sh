#!/usr/bin/env bash
# Developer tool (not CI): time each of the five side-by-side workloads (`docs/performance.md`) in
# Rust (`blip2 bench`) and in PyTorch (the reference timer torch_anchor.py, which is not part of
# this repository: point TORCH_ANCHOR at your copy), interleaved on the same machine, and print
# the ratios.
#
#   tools/side_by_side.sh [WORKLOAD ...]        # default: all five, then matmul (the GEMM ceiling)
#
# Environment:
#   BLIP2         the blip2 binary (default target/release/blip2; build it with
#                 `cargo build --release --bin blip2`)
#   TORCH_ANCHOR  path to the PyTorch reference timer torch_anchor.py (needs torch 2.9, HF
#                 transformers 4.57 and LAVIS_SRC); not shipped here, so set it to your copy (the
#                 fallback in the code below is the path on the machine this was written on)
#   LAVIS_SRC     the lavis/ folder of an unpacked salesforce-lavis 1.0.2 wheel (torch_anchor.py
#                 needs it for the stage1 item; required by its CLI for every item)
#   SCRATCH       scratch dir for torch_anchor.py (default: a temp dir, removed at the end)
#   THREADS       threads for both sides (default 2, as in the anchors)
#   ROUNDS        rounds per workload; the order alternates each round (default 1)
#   ITERS         timed calls per Rust run (default 5; stage1-step and vit-forward use 3)
#   WAIT_QUIET    seconds torch_anchor.py waits for an idle machine before each item (default 120)
#
# Both sides are noisy on a shared machine: compare only runs whose load (printed) was ~0.
# Ratio = PyTorch time / Rust time (for rates: Rust rate / PyTorch rate); > 1 means Rust is faster.
set -euo pipefail

cd "$(dirname "$0")/.."
BLIP2=${BLIP2:-target/release/blip2}
TORCH_ANCHOR=${TORCH_ANCHOR:-/work/shared/tools/torch_anchor.py}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-1}
WAIT_QUIET=${WAIT_QUIET:-120}
: "${LAVIS_SRC:?set LAVIS_SRC to the lavis/ folder of an unpacked salesforce-lavis 1.0.2 wheel}"
[[ -x "$BLIP2" ]] || { echo "no $BLIP2: cargo build --release --bin blip2" >&2; exit 1; }
[[ -f "$TORCH_ANCHOR" ]] || { echo "no $TORCH_ANCHOR" >&2; exit 1; }
if [[ -z "${SCRATCH:-}" ]]; then
    SCRATCH=$(mktemp -d)
    trap 'rm -rf "$SCRATCH"' EXIT
fi

workloads=("$@")
[[ ${#workloads[@]} -gt 0 ]] || workloads=(qformer-forward stage1-step itm vit-forward opt-generate matmul)

# workload -> torch_anchor item, the key in its JSON, and whether it is a rate or a time.
torch_item() {
    case $1 in
        qformer-forward) echo "qformer qformer_forward_ms ms" ;;
        stage1-step) echo "stage1 stage1_step_ms ms" ;;
        itm) echo "itm itm_pairs_per_s pairs_per_s" ;;
        vit-forward) echo "vit vision_vit_g_forward_ms ms" ;;
        opt-generate) echo "opt opt_generate_tokens_per_s tokens_per_s" ;;
        matmul) echo "matmul matmul.matmul_1024x1024x1024.median_ms ms" ;;
        *) echo "unknown workload $1" >&2; exit 1 ;;
    esac
}

run_rust() { # workload -> JSON line
    local iters=${ITERS:-5}
    case $1 in stage1-step | vit-forward) iters=${ITERS:-3} ;; esac
    "$BLIP2" bench "$1" --json --threads "$THREADS" --iters "$iters"
}

run_torch() { # item -> JSON document
    python3 "$TORCH_ANCHOR" --lavis-src "$LAVIS_SRC" --scratch "$SCRATCH" --threads "$THREADS" \
        --only "$1" --wait-quiet "$WAIT_QUIET" --retries 1 2>/dev/null
}

results=()
for w in "${workloads[@]}"; do
    read -r item key metric < <(torch_item "$w")
    for ((r = 1; r <= ROUNDS; r++)); do
        echo "== $w round $r (load: $(cut -d' ' -f1-3 /proc/loadavg))" >&2
        if ((r % 2 == 1)); then
            torch_json=$(run_torch "$item")
            rust_json=$(run_rust "$w")
        else
            rust_json=$(run_rust "$w")
            torch_json=$(run_torch "$item")
        fi
        results+=("$(python3 - "$w" "$item" "$key" "$metric" "$rust_json" "$torch_json" <<'PY'
import json, sys
w, item, key, metric, rust, torch = sys.argv[1:]
rust, torch = json.loads(rust), json.loads(torch)
t = torch["items"][item]
if "error" in t:
    sys.exit(f"torch item {item} failed: {t['error']}")
tv = t
for k in key.split("."):  # matmul's figure is nested one level down
    tv = tv[k]
rv = rust[metric]
ratio = tv / rv if metric == "ms" else rv / tv
unit = "ms" if metric == "ms" else metric.replace("_per_s", "/s")
model_rss = t["peak_rss_mb"] - t["baseline_rss_mb"]
print(f"{w:16s} rust {rv:10.1f} {unit:9s} torch {tv:10.1f} {unit:9s} ratio {ratio:5.2f}x   "
      f"peak RSS rust {rust['peak_rss_mb']:6.0f} MB, torch {t['peak_rss_mb']:6.0f} MB "
      f"(model share {model_rss:.0f})   torch other cores {t['contention']['other_cores_during']:.2f}"
      + (f"   rust {rust['gflop_per_s']:.0f} GFLOP/s" if "gflop_per_s" in rust else ""))
PY
)")
        echo "${results[-1]}" >&2
    done
done
echo
echo "ratio = how many times faster Rust is (threads: $THREADS)"
printf '%s\n' "${results[@]}"
