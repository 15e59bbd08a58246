#!/usr/bin/env bash
# Builds `--features cuda` on a machine with no CUDA toolkit and no GPU (developer tool, not CI):
# nvcc, the CUDA headers and the libraries that cudarc links come from NVIDIA's PyPI wheels, and
# libcuda.so (the driver, which no wheel carries) from a stub that only has to satisfy the linker;
# the real driver is found at run time on the GPU machine. Then it packs the `blip2` binary and
# the qformer and train integration-test binaries (xz, stripped) into .cuda-bin/ for
# tools/cuda_check.sh to run there.
#
#   tools/cuda_build_from_wheels.sh [WORK_DIR]     (default /tmp/cuda; ~1 GB of wheels)
#
# CUDA 13.0 wheels, PTX and kernels for compute capability 9.0 (H100/H200): set CUDA_COMPUTE_CAP
# for another card.
set -euo pipefail
work=${1:-/tmp/cuda}
repo=$(cd "$(dirname "$0")/.." && pwd)
root=$work/root/nvidia/cu13
mkdir -p "$work"

if [ ! -x "$root/bin/nvcc" ]; then
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$work" \
    "nvidia-cuda-nvcc==13.0.*" "nvidia-cuda-runtime==13.0.*" "nvidia-cuda-crt==13.0.*" \
    "nvidia-nvvm==13.0.*" "nvidia-cuda-cccl==13.0.*" "nvidia-cublas==13.0.*" \
    "nvidia-cuda-nvrtc==13.0.*" "nvidia-curand"
  for w in "$work"/*.whl; do unzip -qo "$w" -d "$work/root"; done
fi

# The linker wants unversioned names; the binary records the versioned sonames.
(cd "$root/lib" && for l in libcublas libcublasLt libcudart libnvrtc; do ln -sf $l.so.13 $l.so; done \
  && ln -sf libcurand.so.10 libcurand.so)
# libcuda stub: every driver entry point cudarc declares, soname libcuda.so.1 like the driver's.
mkdir -p "$root/lib/stubs"
cudarc=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.* | tail -1)
grep -ohE "^\s+fn (cu[A-Za-z0-9_]+)\(" "$cudarc/src/driver/sys/mod.rs" \
  | sed -E 's/^\s+fn (\w+)\(/void \1(void) {}/' | sort -u > "$work/libcuda_stub.c"
gcc -shared -fPIC -Wl,-soname,libcuda.so.1 "$work/libcuda_stub.c" -o "$root/lib/stubs/libcuda.so"

export CUDA_HOME=$root PATH=$root/bin:$PATH CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/tmp/tgt-cuda}
cd "$repo"
cargo build --release --features cuda
# Each test binary carries all of candle's kernels (about 6 MB packed): qformer's holds the forward
# parity, stage-one loss and LLM-bridge suites, train's the LAVIS training trajectory.
mkdir -p .cuda-bin
grep -q '^/.cuda-bin/' .git/info/exclude 2>/dev/null || echo /.cuda-bin/ >> .git/info/exclude
rm -f .cuda-bin/*
strip -o .cuda-bin/blip2 "$CARGO_TARGET_DIR/release/blip2"
for crate in qformer train; do
  cargo test --release --features cuda -p $crate --no-run --test integration 2>&1 | tee "$work/tests-$crate.log"
  exe=$(grep -oE "tests/integration/main.rs \(([^)]*)\)" "$work/tests-$crate.log" | sed -E 's/.*\((.*)\)/\1/' | tail -1)
  strip -o ".cuda-bin/${crate}_integration" "$exe"
done
xz -T2 -6 .cuda-bin/*
ls -la .cuda-bin
