#!/bin/bash
# Accuracy cost of the sparse backward (sparse_grad B): 4-bit MNIST and Fashion-MNIST, seed 0, the exact
# surrogate against B = 0.1 and 0.2, one Numba thread each, all six in parallel, in the background, at
# the lowest CPU priority (nice 19), so that they take only what other work leaves.
#
#   benchmarks/sparse_accuracy.sh OUT_DIR DATA_DIR [train flags...]
#   benchmarks/sparse_accuracy.sh ~/runs-sparse ../shared/data --epochs 3
#
# DATA_DIR holds mnist/ and fashion-mnist/. Each run trains into OUT_DIR/<data>-4bit-sparse<B>-seed0
# (B = exact for the exact path) and logs to the same name + .log; the final test accuracy is the last
# line of each log. Run it from the repository root (it trains this tree's code).
set -e
out=${1:?usage: benchmarks/sparse_accuracy.sh OUT_DIR DATA_DIR [train flags...]}
data=${2:?usage: benchmarks/sparse_accuracy.sh OUT_DIR DATA_DIR [train flags...]}
shift 2
mkdir -p "$out"
for ds in mnist fmnist; do
  dir=$data/$([ $ds = mnist ] && echo mnist || echo fashion-mnist)
  for B in exact 0.1 0.2; do
    run=$out/$ds-4bit-sparse$B-seed0
    flag=$([ $B = exact ] && echo "" || echo "--sparse-grad $B")
    NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 PYTHONPATH=$PWD nohup nice -n 19 python -m mininsnn.cli train \
      --config $ds-4bit $flag --seed 0 --data-dir "$dir" --out "$run" "$@" > "$run.log" 2>&1 &
    echo "$! $run"
  done
done
