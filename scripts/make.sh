#!/usr/bin/env bash
# Regenerate every figure and table of README.md and docs/*.md on this machine, from nothing, for one data set:
# the recipe's choices made on a validation split, three seeds trained, pruned by every method, retrained, the
# papers' LeNet-300-100 beside them, small dense nets and nets trained to be sparse, timed in separate processes,
# and the pages' tables rewritten from what they wrote into docs/ (scripts/fill_readme.py).
#
#     DATA_DIR=~/data bash scripts/make.sh                    # MNIST, every section, in order
#     DATASET=fashion-mnist bash scripts/make.sh train sweeps # Fashion-MNIST, some sections (each needs what
#                                                             # the sections before it trained)
#
# Sections: choices train sweeps retrain lenet speed rewind small-dense benchmarks sparse sparse-speed tests readme. Needs the data
# set's four IDX files in DATA_DIR (default data/; as train.py --data-dir finds them: README.md, "Offline").
# What depends on the data set goes to docs/<data set>/ and checkpoints/<data set>/; the timings of the speed
# and benchmarks sections, which are the machine's, to docs/. Each command's wall time goes to
# docs/<data set>/times/<section>.csv; docs/results.md quotes their medians.
#
# Training runs that do not wait on each other go JOBS at a time (default 2), each on its share of the cores:
# on 2 cores, two runs of one thread each trained 1.2-1.5x more nets an hour than one run on two threads, as a
# step's small matrix products and elementwise passes gain little from a second thread. JOBS=1 runs them one
# by one. A run's thread count changes the order of its float sums, so its last digits, not its statistics.
set -euo pipefail
cd "$(dirname "$0")/.."
DATASET=${DATASET:-mnist}
DATA_DIR=${DATA_DIR:-data}
if [[ ! $DATASET =~ ^(mnist|fashion-mnist)$ ]]; then
    echo "error: DATASET=$DATASET: give mnist or fashion-mnist" >&2
    exit 2
fi
DATA=(--dataset "$DATASET" --data-dir "$DATA_DIR" --no-download)
DOCS=docs/$DATASET  # what depends on the data set; the machine's own benchmarks stay in docs/
CKPT=checkpoints/$DATASET
SEEDS=($CKPT/seed0.pt $CKPT/seed1.pt $CKPT/seed2.pt)
SPARSE_KS=90,95,98,99,99.5,99.8
SECTIONS=(choices train sweeps retrain lenet speed rewind small-dense benchmarks sparse sparse-speed tests readme)
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
    append_time "$DOCS/times/$SECTION.csv" "$name" "$start" "$MACHINE"
}
append_time() {  # append to the CSV $1 a row: the name $2, the seconds since $3, the machine $4
    python -c "import csv, sys; csv.writer(sys.stdout, lineterminator='\n').writerow([sys.argv[1], f'{float(sys.argv[3]) - float(sys.argv[2]):.1f}', sys.argv[4]])" \
        "$2" "$3" "$(now)" "$4" >> "$1"
}

forget_times() {  # a section run again replaces its times from this machine, and keeps those from others
    forget_rows "$DOCS/times/$SECTION.csv" "" "$MACHINE" "$JOB_MACHINE"
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

choices() {  # the recipe's choices, made on a validation split (the longest first)
    mkdir -p $DOCS/choices
    for choice in vd-strength l1 l0-gate-rate gmp-schedule finetune; do
        queued timed "python benchmarks/choices.py $choice" \
            python benchmarks/choices.py $choice "${DATA[@]:0:4}" --out $DOCS/choices/$choice.md
    done
    finish
}

train() {
    for seed in 0 1 2; do
        queued timed "python train.py" \
            python train.py "${DATA[@]}" --seed $seed --out $CKPT/seed$seed.pt --logdir runs/$DATASET
    done
    finish
}

SWEEP=(--checkpoint "${SEEDS[@]}" --name dense --results-dir $DOCS/results --logdir runs/$DATASET --plot $DOCS/plot.png)
sweeps() {
    rm -rf $DOCS/results
    for run in 1 2 3; do
        timed "python eval.py --sparsity all --no-timing (3 checkpoints)" python eval.py --sparsity all --no-timing "${SWEEP[@]}"
    done
}

retrain() {  # fine-tuning, at each k, of every method
    timed "python eval.py --sparsity all --retrain finetune --ks 50,80,90,95,97,99 (3 checkpoints)" \
        python eval.py --sparsity all --retrain finetune --ks 50,80,90,95,97,99 "${SWEEP[@]}"
}

rewind() {  # rewinding and training from scratch: each costs a training run per k and checkpoint
    for retrain in rewind scratch; do
        queued timed "python eval.py --sparsity weight --retrain $retrain --ks 90,97,99 (3 checkpoints)" \
            python eval.py --sparsity weight --retrain $retrain --ks 90,97,99 "${SWEEP[@]}"
        queued timed "python eval.py --sparsity unit --retrain $retrain --ks 50,80,90 (3 checkpoints)" \
            python eval.py --sparsity unit --retrain $retrain --ks 50,80,90 "${SWEEP[@]}"
    done
    finish
    # the plot again, with every curve: one drawn beside another run may miss that run's
    python plot.py --results-dir $DOCS/results --plot $DOCS/plot.png
}

LENET_KS=92,95,98.2,98.5,99  # the papers' sparsities: 8, 5, 1.8, 1.5 and 1 % of the weights kept
lenet() {  # the papers' LeNet-300-100, trained dense and pruned, and trained to be sparse, at their sparsities
    local net=(--hidden 300,100 "${DATA[@]}" --logdir runs/$DATASET-lenet) name
    local out=(--no-timing --results-dir $DOCS/lenet --logdir runs/$DATASET-lenet --plot $DOCS/lenet.png)
    rm -rf $DOCS/lenet
    for seed in 0 1 2; do
        for method in vd l0; do  # the longest first
            queued timed "python train.py --hidden 300,100 --sparse $method" python train.py "${net[@]}" \
                --sparse $method --seed $seed --out $CKPT/lenet-$method-seed$seed.pt
        done
        queued timed "python train.py --hidden 300,100" python train.py "${net[@]}" --seed $seed \
            --out $CKPT/lenet-seed$seed.pt
        for target in ${LENET_KS//,/ }; do
            queued timed "python train.py --hidden 300,100 --sparse gmp --target $target" python train.py "${net[@]}" \
                --sparse gmp --target $target --seed $seed --out $CKPT/lenet-gmp$target-seed$seed.pt
        done
    done
    finish
    for retrain in "" "--retrain finetune"; do
        timed "python eval.py --sparsity weight,global${retrain:+ $retrain} (3 LeNet-300-100 checkpoints)" python eval.py \
            --sparsity weight,global $retrain --ks 0,$LENET_KS --checkpoint $CKPT/lenet-seed{0,1,2}.pt --name dense "${out[@]}"
    done
    for name in vd l0; do
        python eval.py --sparsity learned --ks $LENET_KS --checkpoint $CKPT/lenet-$name-seed{0,1,2}.pt --name $name "${out[@]}"
    done
    for target in ${LENET_KS//,/ }; do  # each gmp net at its own target, where pruning it changes nothing
        python eval.py --sparsity weight --ks $target --checkpoint $CKPT/lenet-gmp$target-seed{0,1,2}.pt \
            --name gmp$target "${out[@]}"
    done
    python benchmarks/papers.py --results $DOCS/lenet --out $DOCS/lenet.md
}

small-dense() {
    # without the variables that slow a current numpy's OpenBLAS (set on some machines for old builds)
    timed "python benchmarks/small_dense.py --checkpoint (3 checkpoints)" env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \
        python benchmarks/small_dense.py --checkpoint "${SEEDS[@]}" --out $DOCS/small_dense.md
}

speed() {
    python benchmarks/timing.py --checkpoint $CKPT/seed0.pt --runs 5 --out docs/speed
    python benchmarks/timing.py --checkpoint $CKPT/seed0.pt --sparsity weight,unit --ks 90,95,99 \
        --timing-batch 100,1,1000 --runs 5 --out "docs/speed/batches/$CPU_FOLDER"
    python benchmarks/saved.py --checkpoint $CKPT/seed0.pt --runs 5 --out docs/saved.md
    python eval.py --sparsity weight --ks 95 --no-timing --checkpoint $CKPT/seed0.pt --save checkpoints/nets \
        --results-dir checkpoints/nets/results --logdir checkpoints/nets/runs --plot checkpoints/nets/plot.png
    python benchmarks/load_time.py --net checkpoints/nets/weight-95.pt --runs 7 --out docs/speed/load_time.md
    python benchmarks/one_image_threads.py --checkpoint $CKPT/seed0.pt --ks 90,95,97 \
        --out docs/speed/one_image_threads.md
    python benchmarks/batch_costs.py --checkpoint $CKPT/seed0.pt --out docs/speed/batch_costs.md
}

written_to() {  # run a command with its stdout into $1, which it replaces only if the command succeeds
    local out=$1
    shift
    "$@" > "$out.tmp" || { rm -f "$out.tmp"; return 1; }
    mv "$out.tmp" "$out"
}

benchmarks() {
    written_to $DOCS/iterative.md python benchmarks/iterative.py "${DATA[@]:0:4}" --checkpoint $CKPT/seed0.pt
    written_to docs/train_epoch.txt python benchmarks/train_epoch.py "${DATA[@]:0:4}"
    python benchmarks/masked_layer.py --out docs/masked_layer.md
}

sparse_net() {  # train.py --sparse "$@" to $CKPT/$1.pt, timed under $2, and its record for the tables
    local out=$CKPT/$1.pt name=$2
    shift 2
    timed "$name" python train.py "${DATA[@]}" --sparse "$@" --out $out --logdir runs/$DATASET
    python benchmarks/sparse.py --record $out --docs $DOCS
}

sparse() {  # trained to be sparse, from a dense net and from the first step, against pruning the dense seeds
    rm -rf $DOCS/sparse  # the records of the nets ($DOCS/sparse/runs/) too: every table is made again
    local seed target method
    for seed in 0 1 2; do
        for target in ${SPARSE_KS//,/ }; do
            for method in gmp static snip synflow set rigl; do
                queued sparse_net $method$target-seed$seed "python train.py --sparse $method --target $target" \
                    $method --target $target --seed $seed
            done
        done
        for target in 99 99.8; do  # the layers' shares set by the net (gmp-global) or by ERK, where uniform falls behind
            queued sparse_net gmp-global$target-seed$seed "python train.py --sparse gmp-global --target $target" \
                gmp-global --target $target --seed $seed
            queued sparse_net rigl-erk$target-seed$seed \
                "python train.py --sparse rigl --target $target --distribution erk" rigl --target $target \
                --distribution erk --seed $seed
        done
    done
    for seed in 0 1 2; do  # the longest, dense for all or most of their steps
        for method in vd l0 l0-unit; do
            queued sparse_net $method-seed$seed "python train.py --sparse $method" $method --seed $seed
        done
        queued timed "python benchmarks/peer_rigl.py --target 99" python benchmarks/peer_rigl.py "${DATA[@]}" \
            --target 99 --seed $seed --out $DOCS/sparse/rigl-torch/seed$seed.json
        queued timed "python benchmarks/peer_rigl.py --init sparse-fan-in --target 99" python benchmarks/peer_rigl.py \
            "${DATA[@]}" --init sparse-fan-in --target 99 --seed $seed --out $DOCS/sparse/rigl-torch-fan-in/seed$seed.json
    done
    # RigL at 99 % for as many epochs as fit in the dense recipe's wall time (docs/<data set>/times/train.csv)
    local epochs
    epochs=$(python benchmarks/sparse.py --docs $DOCS --equal-time-epochs)
    for seed in 0 1 2; do
        queued sparse_net rigl-equal-time99-seed$seed "python train.py --sparse rigl --target 99 --epochs $epochs" \
            rigl --target 99 --epochs $epochs --seed $seed
    done
    finish
    python benchmarks/sparse.py --record "${SEEDS[@]}" --docs $DOCS  # the dense recipe's accuracy, for the tables
    local out=(--ks $SPARSE_KS --no-timing --logdir runs/$DATASET-sparse)
    timed "python eval.py --sparsity weight,global (3 dense checkpoints)" python eval.py --sparsity weight,global \
        --checkpoint "${SEEDS[@]}" --name dense --results-dir $DOCS/sparse --plot $DOCS/sparse/dense.png "${out[@]}"
    timed "python eval.py --sparsity weight,global,unit --retrain finetune (3 dense checkpoints)" python eval.py \
        --sparsity weight,global,unit --retrain finetune --checkpoint "${SEEDS[@]}" --name dense --results-dir $DOCS/sparse \
        --plot $DOCS/sparse/dense.png "${out[@]}"
    for method in vd l0 l0-unit; do
        python eval.py --sparsity learned,weight --checkpoint $CKPT/$method-seed{0,1,2}.pt \
            --name $method --results-dir $DOCS/sparse --plot $DOCS/sparse/$method.png "${out[@]}"
    done
    python benchmarks/sparse.py --ks $SPARSE_KS --docs $DOCS --out $DOCS/sparse.md --headline $DOCS/sparse_headline.md
}

sparse-speed() {  # the cost of a training step of each method, and of each layer's products against SparseProp's
    python benchmarks/train_speed.py --out docs/train_speed.md
    python benchmarks/peer_sparseprop.py --out docs/peer_sparseprop.md
}

tests() {
    for run in 1 2 3; do
        timed "python -m pytest" python -m pytest -q
    done
}

readme() {
    python scripts/fill_readme.py
}

# Each section's own wall time goes to $DOCS/times/sections.csv (its queued commands overlap, so their times do not
# add up to it): a whole run's time on a machine is the sum of its sections'. A section run again replaces its row.
for SECTION in "${@:-${SECTIONS[@]}}"; do
    if [[ ! " ${SECTIONS[*]} " == *" $SECTION "* ]]; then
        echo "error: no section $SECTION; the sections are: ${SECTIONS[*]}" >&2
        exit 2
    fi
    mkdir -p $CKPT $DOCS/times
    forget_times
    forget_rows $DOCS/times/sections.csv "$SECTION" "$SECTION_MACHINE"
    echo "== $SECTION"
    section_start=$(now)
    "$SECTION"
    append_time $DOCS/times/sections.csv "$SECTION" "$section_start" "$SECTION_MACHINE"
done
