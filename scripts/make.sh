#!/usr/bin/env bash
# Regenerate every figure and table of README.md and docs/*.md on this machine, from nothing: three seeds
# trained on Fashion-MNIST, pruned by every method, retrained, compared with small dense nets and with nets
# trained to be sparse, timed in separate processes, and the pages' tables rewritten from what they wrote
# into docs/ (scripts/fill_readme.py).
#
#     bash scripts/make.sh                  # every section, in order
#     bash scripts/make.sh sparse readme    # some of them (each needs what the sections before it trained)
#
# Sections: train sweeps retrain small-dense speed benchmarks sparse tests readme. Needs the Fashion-MNIST
# IDX files in data/FashionMNIST/raw (README.md, "Offline"). Each command's wall time goes to
# docs/times/<section>.csv; docs/results.md quotes their medians.
#
# Training runs that do not wait on each other go JOBS at a time (default 2), each on its share of the cores:
# on 2 cores, two runs of one thread each trained 1.2-1.5x more nets an hour than one run on two threads, as a
# step's small matrix products and elementwise passes gain little from a second thread. JOBS=1 runs them one
# by one. A run's thread count changes the order of its float sums, so its last digits, not its statistics.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=(--dataset fashion-mnist --no-download)
SEEDS=(checkpoints/seed0.pt checkpoints/seed1.pt checkpoints/seed2.pt)
SPARSE_KS=90,95,98,99,99.5,99.8
SECTIONS=(train sweeps retrain small-dense speed benchmarks sparse tests readme)
JOBS=${JOBS:-2}
if [[ ! $JOBS =~ ^[1-9][0-9]*$ ]]; then
    echo "error: JOBS=$JOBS: give the number of training runs at a time, 1 or more" >&2
    exit 2
fi
THREADS=$(( $(nproc) / JOBS > 0 ? $(nproc) / JOBS : 1 ))

now() { python -c "import time; print(time.time())"; }
# The machine beside each time: this VM has come up on CPUs that train at different speeds.
CPU=$(python -c "from benchmarks.harness import machine; print(machine('cpu'))")
MACHINE="$CPU, $(python -c "import torch; print(torch.get_num_threads())") threads"
JOB_MACHINE=$MACHINE  # the same beside a run queued with others
if (( JOBS > 1 )); then
    JOB_MACHINE="$CPU, $JOBS runs at a time, $THREADS thread$( ((THREADS == 1)) || echo s) each"
fi
SECTION_MACHINE="$CPU, JOBS=$JOBS"  # beside a whole section's time: its queues depend on JOBS
# A folder name for it, where timings by batch are kept apart for each CPU: their speedups depend on it.
CPU_FOLDER=$(python -c "import re, sys; print(re.sub('[^a-z0-9]+', '-', sys.argv[1].lower()).strip('-'))" "$CPU")
timed() {  # run a command, and append its name, wall time and machine to the section's times
    local name=$1 start
    shift
    start=$(now)
    "$@"
    append_time "docs/times/$SECTION.csv" "$name" "$start" "$MACHINE"
}
append_time() {  # append to the CSV $1 a row: the name $2, the seconds since $3, the machine $4
    python -c "import csv, sys; csv.writer(sys.stdout, lineterminator='\n').writerow([sys.argv[1], f'{float(sys.argv[3]) - float(sys.argv[2]):.1f}', sys.argv[4]])" \
        "$2" "$3" "$(now)" "$4" >> "$1"
}

forget_times() {  # a section run again replaces its times from this machine, and keeps those from others
    forget_rows "docs/times/$SECTION.csv" "" "$MACHINE" "$JOB_MACHINE"
}
forget_rows() {  # drop from the CSV $1 the rows of the machines $3... (only those named $2, if given)
    python - "$@" <<'EOF'
import csv, os, sys
path, name, *machine = sys.argv[1:]
if not os.path.exists(path):  # nothing to forget (and no empty file for a section that times nothing)
    sys.exit()
rows = list(csv.reader(open(path, newline="")))
with open(path + ".tmp", "w", newline="") as f:
    csv.writer(f, lineterminator="\n").writerows(row for row in rows if row[2] not in machine or name and row[0] != name)
os.replace(path + ".tmp", path)
EOF
}

declare -a RUNNING=()  # the queued commands still running, by pid
queued() {  # run a command as one of up to JOBS at a time, on THREADS threads, timed as run beside others
    while (( ${#RUNNING[@]} >= JOBS )); do reap; done
    OMP_NUM_THREADS=$THREADS MACHINE=$JOB_MACHINE "$@" &
    RUNNING[$!]=1
}
reap() {  # wait for the next queued command to end; a failed one stops everything
    local pid status=0
    wait -n -p pid "${!RUNNING[@]}" || status=$?
    unset "RUNNING[$pid]"
    if (( status != 0 )); then
        echo "error: a queued command failed (exit $status)" >&2
        exit $status
    fi
}
finish() {  # wait for every queued command
    while (( ${#RUNNING[@]} )); do reap; done
}
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT  # on an error or Ctrl-C, no run is left behind

train() {
    for seed in 0 1 2; do
        queued timed "python train.py --dataset fashion-mnist" \
            python train.py "${DATA[@]}" --seed $seed --out checkpoints/seed$seed.pt --logdir runs/docs
    done
    finish
}

SWEEP=(--checkpoint "${SEEDS[@]}" --name dense --results-dir docs/results --logdir runs/docs --plot docs/plot.png)
sweeps() {
    rm -rf docs/results
    for run in 1 2 3; do
        timed "python eval.py --sparsity all --no-timing (3 checkpoints)" python eval.py --sparsity all --no-timing "${SWEEP[@]}"
    done
}

retrain() {
    for retrain in rewind scratch; do  # each costs a training run per k and checkpoint
        queued timed "python eval.py --sparsity weight --retrain $retrain --ks 90,97,99 (3 checkpoints)" \
            python eval.py --sparsity weight --retrain $retrain --ks 90,97,99 "${SWEEP[@]}"
        queued timed "python eval.py --sparsity unit --retrain $retrain --ks 50,80,90 (3 checkpoints)" \
            python eval.py --sparsity unit --retrain $retrain --ks 50,80,90 "${SWEEP[@]}"
    done
    finish
    # alone and last, so that the plot it draws has every curve: one drawn beside another run may miss that run's
    timed "python eval.py --sparsity all --retrain finetune --ks 50,80,90,95,97,99 (3 checkpoints)" \
        python eval.py --sparsity all --retrain finetune --ks 50,80,90,95,97,99 "${SWEEP[@]}"
}

small-dense() {
    timed "python benchmarks/small_dense.py --checkpoint (3 checkpoints)" \
        python benchmarks/small_dense.py --checkpoint "${SEEDS[@]}" --out docs/small_dense.md
}

speed() {
    python benchmarks/timing.py --checkpoint checkpoints/seed0.pt --runs 5 --out docs/speed
    python benchmarks/timing.py --checkpoint checkpoints/seed0.pt --sparsity weight,unit --ks 90,95,99 \
        --timing-batch 100,1,1000 --runs 5 --out "docs/speed/batches/$CPU_FOLDER"
    python benchmarks/saved.py --checkpoint checkpoints/seed0.pt --runs 5 --out docs/saved.md
    python eval.py --sparsity weight --ks 95 --no-timing --checkpoint checkpoints/seed0.pt --save checkpoints/nets \
        --results-dir checkpoints/nets/results --logdir checkpoints/nets/runs --plot checkpoints/nets/plot.png
    python benchmarks/load_time.py --net checkpoints/nets/weight-95.pt --runs 7 --out docs/speed/load_time.md
    python benchmarks/one_image_threads.py --checkpoint checkpoints/seed0.pt --ks 90,95,97 \
        --out docs/speed/one_image_threads.md
    python benchmarks/batch_costs.py --checkpoint checkpoints/seed0.pt --out docs/speed/batch_costs.md
}

written_to() {  # run a command with its stdout into $1, which it replaces only if the command succeeds
    local out=$1
    shift
    "$@" > "$out.tmp" || { rm -f "$out.tmp"; return 1; }
    mv "$out.tmp" "$out"
}

benchmarks() {
    written_to docs/iterative.md python benchmarks/iterative.py --dataset fashion-mnist --checkpoint checkpoints/seed0.pt
    written_to docs/recipes.md python benchmarks/recipes.py --dataset fashion-mnist
    written_to docs/train_epoch.txt python benchmarks/train_epoch.py --dataset fashion-mnist
    python benchmarks/masked_layer.py --out docs/masked_layer.md
}

sparse_net() {  # train.py --sparse "$@" to checkpoints/$1.pt, timed under $2, and its record for the tables
    local out=checkpoints/$1.pt name=$2
    shift 2
    timed "$name" python train.py "${DATA[@]}" --sparse "$@" --out $out --logdir runs/docs
    python benchmarks/sparse.py --record $out
}

sparse() {  # trained to be sparse, against pruning the dense seeds, at sparsities up to 99.8 %
    rm -rf docs/sparse  # the records of the nets (docs/sparse/runs/) too: every table is made again
    # The longest runs first (vd takes about 3.9 times a gmp run, l0 2.7 times: docs/sparse-training.md), so that
    # none is left to run alone at the end while the other core waits: queued so, two at a time, the runs' median
    # times in docs/times/sparse.csv (Zen 3) end within 2 % of half their sum.
    for seed in 0 1 2; do
        for method in vd l0; do
            queued sparse_net $method-seed$seed "python train.py --sparse $method" $method --seed $seed
        done
        # vd with the paper's ELBO, against the default's weaker KL
        queued sparse_net vd-strength1-seed$seed "python train.py --sparse vd --strength 1" vd --strength 1 --seed $seed
    done
    for seed in 0 1 2; do
        for target in ${SPARSE_KS//,/ }; do
            queued sparse_net gmp$target-seed$seed "python train.py --sparse gmp --target $target" gmp \
                --target $target --seed $seed
        done
        for target in 99 99.8; do  # the hidden layers ranked together, at the sparsities where per layer falls behind
            queued sparse_net gmp-global$target-seed$seed "python train.py --sparse gmp-global --target $target" \
                gmp-global --target $target --seed $seed
        done
        queued sparse_net l0-unit-seed$seed "python train.py --sparse l0-unit" l0-unit --seed $seed
    done
    finish
    python benchmarks/sparse.py --record "${SEEDS[@]}"  # the dense recipe's accuracy, for the tables
    local out=(--ks $SPARSE_KS --no-timing --logdir runs/sparse)
    timed "python eval.py --sparsity weight,global (3 dense checkpoints)" python eval.py --sparsity weight,global \
        --checkpoint "${SEEDS[@]}" --name dense --results-dir docs/sparse --plot docs/sparse/dense.png "${out[@]}"
    timed "python eval.py --sparsity weight,global,unit --retrain finetune (3 dense checkpoints)" python eval.py \
        --sparsity weight,global,unit --retrain finetune --checkpoint "${SEEDS[@]}" --name dense --results-dir docs/sparse \
        --plot docs/sparse/dense.png "${out[@]}"
    for method in vd vd-strength1 l0 l0-unit; do
        python eval.py --sparsity learned,weight --checkpoint checkpoints/$method-seed{0,1,2}.pt \
            --name $method --results-dir docs/sparse --plot docs/sparse/$method.png "${out[@]}"
    done
    python benchmarks/sparse.py --ks $SPARSE_KS --out docs/sparse.md --headline docs/sparse_headline.md
    python benchmarks/train_speed.py --out docs/train_speed.md
}

tests() {
    for run in 1 2 3; do
        timed "python -m pytest" python -m pytest -q
    done
}

readme() {
    python scripts/fill_readme.py
}

# Each section's own wall time goes to docs/times/sections.csv (its queued commands overlap, so their times do not
# add up to it): a whole run's time on a machine is the sum of its sections'. A section run again replaces its row.
for SECTION in "${@:-${SECTIONS[@]}}"; do
    if [[ ! " ${SECTIONS[*]} " == *" $SECTION "* ]]; then
        echo "error: no section $SECTION; the sections are: ${SECTIONS[*]}" >&2
        exit 2
    fi
    mkdir -p checkpoints docs/times
    forget_times
    forget_rows docs/times/sections.csv "$SECTION" "$SECTION_MACHINE"
    echo "== $SECTION"
    section_start=$(now)
    "$SECTION"
    append_time docs/times/sections.csv "$SECTION" "$section_start" "$SECTION_MACHINE"
done
