#!/usr/bin/env bash
# Runs the CUDA build on a GPU machine (developer tool, not CI), from the repo root, with the
# binaries that tools/cuda_build_from_wheels.sh packed into .cuda-bin/:
#   1. the qformer parity suites with BLIP2_TEST_DEVICE=cuda: HF / LAVIS forward parity, stage-one
#      losses, ten AdamW steps against the LAVIS trajectory, OPT / T5 logits, losses, generation;
#   2. the CLI on `--device cuda`: `score` against the same call on the CPU, a 6-step `pretrain`
#      (its losses against the CPU run's), and the CI-scale `quickstart`.
# Logs go to $OUT (default /tmp/cuda-check). Exit status: the number of failed steps.
set -u
out=${OUT:-/tmp/cuda-check}
mkdir -p "$out"
bin=$PWD/.cuda-bin
fails=0
step() { # name, command...
  local name=$1; shift
  local t0=$SECONDS
  if "$@" >"$out/$name.log" 2>&1; then r=ok; else r=FAILED; fails=$((fails + 1)); fi
  echo "$name: $r ($((SECONDS - t0)) s)"
  [ $r = ok ] || tail -n 25 "$out/$name.log"
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
for f in "$bin"/*.xz; do [ -e "$f" ] && xz -df "$f"; done
chmod +x "$bin"/*
# The test binaries read fixtures through the path they were built at.
built_at=$(strings "$bin/qformer_integration" 2>/dev/null | grep -oE '/[^ ]*/qformer/\.\./tests/fixtures/hf-tiny' | head -1)
if [ -n "$built_at" ] && [ ! -e "${built_at%/qformer/../tests/fixtures/hf-tiny}" ]; then
  mkdir -p "$(dirname "${built_at%/qformer/../tests/fixtures/hf-tiny}")"
  ln -s "$PWD" "${built_at%/qformer/../tests/fixtures/hf-tiny}"
fi
# cuBLAS, cuRAND, NVRTC and the runtime come from the machine's CUDA 13 install.
libdirs=
for lib in libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13 libcudart.so.13; do
  f=$(find /usr/local /opt /usr/lib -name "$lib" 2>/dev/null | head -1)
  [ -n "$f" ] && libdirs=$libdirs:$(dirname "$f")
done
export LD_LIBRARY_PATH=${libdirs#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
step info "$bin/blip2" info
cat "$out/info.log"

export BLIP2_TEST_DEVICE=cuda
# SUITES="" runs the CLI checks alone.
# Each suite is a module of its crate's one integration-test binary, run alone by its path prefix.
for s in ${SUITES-parity_hf parity_lavis parity_objectives train_trajectory llm_opt llm_t5 llm_grad}; do
  case $s in train_*) exe=$bin/train_integration ;; *) exe=$bin/qformer_integration ;; esac
  step "$s" "$exe" "$s::" --test-threads 1 --nocapture
done
unset BLIP2_TEST_DEVICE

itm=tests/fixtures/hf-tiny/itm
score() {
  "$bin/blip2" score --model $itm --image tests/fixtures/hf-tiny/images/img0.png tests/fixtures/hf-tiny/images/img1.png \
    --text "a red square" "two blue circles" --json --device "$1"
}
score_both() {
  score cpu >"$out/score_cpu.json" && score cuda:0 >"$out/score_cuda.json" &&
    python3 - "$out/score_cpu.json" "$out/score_cuda.json" <<'EOF'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
d = max(abs(x - y) for k in ("itc", "itm") for ra, rb in zip(a[k], b[k]) for x, y in zip(ra, rb))
print("score cpu vs cuda: max abs diff", d)
assert d < 1e-4, d
EOF
}
step score score_both

pretrain() { # device
  rm -rf "/tmp/pretrain-$1"
  "$bin/blip2" pretrain --config tiny --out "/tmp/pretrain-$1" --set "model.config=$PWD/$itm/config.json" \
    --set steps.max_steps=6 --set data.synthetic=48 --set "device=$1"
}
pretrain_both() {
  pretrain cpu && pretrain cuda && cp /tmp/pretrain-cuda/metrics.jsonl "$out/pretrain_cuda_metrics.jsonl" &&
    python3 - /tmp/pretrain-cpu/metrics.jsonl /tmp/pretrain-cuda/metrics.jsonl <<'EOF'
import json, sys
rows = [[json.loads(l) for l in open(p)] for p in sys.argv[1:]]
assert len(rows[0]) == len(rows[1]) == 6, [len(r) for r in rows]
for a, b in zip(*rows):
    for k, v in a["losses"].items():
        print(f"step {a['step']} {k}: cpu {v:.6f} cuda {b['losses'][k]:.6f}")
        assert abs(v - b["losses"][k]) < 1e-2 * max(1.0, abs(v)), (k, v, b["losses"][k])
EOF
}
step pretrain pretrain_both

step quickstart "$bin/blip2" quickstart --scale ci --device cuda --out /tmp/quickstart-cuda
cp /tmp/quickstart-cuda/results.md "$out/quickstart_results.md" 2>/dev/null
echo "failed steps: $fails"
exit $fails
