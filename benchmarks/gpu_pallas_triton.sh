#!/usr/bin/env bash
# The JAX Pallas kernels and the PyTorch Triton kernels on one CUDA GPU, side by side:
#   1. the conformance suite of both on CUDA (jax-pallas: float32 + bfloat16, every case;
#      torch-triton: float32 + bfloat16), reports under <out>/conformance/
#   2. `liquidssm bench` rows of the four scan ops (diag_scan, liquid_scan, selective_scan,
#      liquid_selective_scan) for torch (eager, triton) and jax (auto = pallas on a GPU, the XLA
#      strategies, pallas): the same shapes and the same rows format (with the bandwidth
#      fraction column), into <out>/rows.csv, rows.json, tables.md and plots.
# <out> = benchmarks/results/cuda-<gpu name>/. Every step has its own time limit so that the
# whole script ends within 10 minutes; a step that runs out leaves what it wrote so far.
# Needs: pip install -e '.[test,torch,triton,jax,bench]' with a CUDA jaxlib (jax[cuda12]).
# Run from the repository root: bash benchmarks/gpu_pallas_triton.sh
set -uo pipefail

gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr 'A-Z ' 'a-z-' | tr -cd 'a-z0-9-')
out="benchmarks/results/cuda-${gpu:-unknown}"
mkdir -p "$out/conformance"
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # jax and torch share the GPU in the bench step
unset LIQUIDSSM_PALLAS_INTERPRET TRITON_INTERPRET
status=0

run() {  # run <seconds> <log> <command...>
    local limit=$1 log=$2
    shift 2
    echo "== $* (limit ${limit}s)" | tee "$log"
    timeout "$limit" "$@" 2>&1 | tee -a "$log"
    local rc=${PIPESTATUS[0]}
    echo "== exit $rc" | tee -a "$log"
    [ "$rc" = 0 ] || status=1
}

liquidssm info | tee "$out/info.txt"
for backend in jax-pallas torch-triton; do
    run 150 "$out/conformance/$backend.txt" python -m pytest -q -p no:cacheprovider \
        --pyargs liquidssm.conformance --backend "$backend" --device cuda \
        --report-dir "$out/conformance"
done
run 240 "$out/bench.txt" liquidssm bench --device cuda --backend torch --backend jax \
    --variant diag_scan --variant liquid_scan --variant selective_scan \
    --variant liquid_selective_scan --no-progress --out "$out"
exit $status
