#!/usr/bin/env bash
# Regenerate every figure and table of README.md on this machine, from nothing: three seeds trained on
# Fashion-MNIST, pruned by every method, retrained, compared with small dense nets, timed in separate
# processes, and README.md's tables rewritten from what they wrote into docs/. About 75 minutes on
# 2 CPU cores.
#
#     bash docs/make.sh
#
# Needs the Fashion-MNIST IDX files in data/FashionMNIST/raw (README.md, "Offline"). Each command's
# wall time goes to docs/times.csv; the README quotes their medians.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=(--dataset fashion-mnist --no-download)
SEEDS=(checkpoints/seed0.pt checkpoints/seed1.pt checkpoints/seed2.pt)
rm -rf docs/results docs/times.csv
mkdir -p checkpoints docs/results

now() { python -c "import time; print(time.time())"; }
timed() {  # run a command, and append its name and wall time to docs/times.csv
    local name=$1 start
    shift
    start=$(now)
    "$@"
    python -c "import sys; print(f'\"{sys.argv[1]}\",{float(sys.argv[3]) - float(sys.argv[2]):.1f}')" \
        "$name" "$start" "$(now)" >> docs/times.csv
}

for seed in 0 1 2; do
    timed "python train.py --dataset fashion-mnist" \
        python train.py "${DATA[@]}" --seed $seed --out checkpoints/seed$seed.pt --logdir runs/docs
done

SWEEP=(--checkpoint "${SEEDS[@]}" --results-dir docs/results --logdir runs/docs --plot docs/plot.png)
for run in 1 2 3; do
    timed "python eval.py --sparsity all --no-timing (3 checkpoints)" python eval.py --sparsity all --no-timing "${SWEEP[@]}"
done
timed "python eval.py --sparsity all --retrain finetune --ks 50,80,90,95,97,99 (3 checkpoints)" \
    python eval.py --sparsity all --retrain finetune --ks 50,80,90,95,97,99 "${SWEEP[@]}"
for retrain in rewind scratch; do  # each costs a training run per k and checkpoint
    timed "python eval.py --sparsity weight --retrain $retrain --ks 90,97,99 (3 checkpoints)" \
        python eval.py --sparsity weight --retrain $retrain --ks 90,97,99 "${SWEEP[@]}"
    timed "python eval.py --sparsity unit --retrain $retrain --ks 50,80,90 (3 checkpoints)" \
        python eval.py --sparsity unit --retrain $retrain --ks 50,80,90 "${SWEEP[@]}"
done
timed "python benchmarks/small_dense.py --checkpoint (3 checkpoints)" \
    python benchmarks/small_dense.py --checkpoint "${SEEDS[@]}" --out docs/small_dense.md
python benchmarks/timing.py --checkpoint checkpoints/seed0.pt --runs 5 --out docs/speed
python benchmarks/saved.py --checkpoint checkpoints/seed0.pt --runs 5 --out docs/saved.md

python benchmarks/iterative.py --dataset fashion-mnist --checkpoint checkpoints/seed0.pt > docs/iterative.md
python benchmarks/recipes.py --dataset fashion-mnist > docs/recipes.md
python benchmarks/train_epoch.py --dataset fashion-mnist > docs/train_epoch.txt
for run in 1 2 3; do
    timed "python -m pytest" python -m pytest -q
done
python docs/fill_readme.py
