#!/usr/bin/env bash
# Example fine-tune with --E0s=linear_system, on CPU, with nothing downloaded.
# Time: about 70 s on a quiet 2-core machine (measured: 69 s, never 5 s without a line; it is mostly mace's training).
#   1. make toy data at two levels of theory (level B shifts every element's E0),
#   2. train a small foundation model on level A with plain mace_run_train,
#   3. fine-tune it to level B with --E0s=linear_system (default --E0s_refit=final),
#   4. compare the saved model's E0 corrections, and the first estimate's, with the true shifts.
# The terminal gets one line per epoch; mace's full output goes to the log files named on the way.
set -euo pipefail
out=${1:-toy_run}
here=$(cd "$(dirname "$0")" && pwd)
export PYTHONUNBUFFERED=1  # mace's lines reach the terminal as they are written
python "$here/make_toy_data.py" "$out"
cd "$out"

# run_mace LOG ARGS...: mace_run_train ARGS, its whole output to LOG, one line per epoch here
run_mace() {
    local log=$1
    shift
    echo "   mace's full output: $out/$log"
    if ! mace_run_train "$@" 2>&1 | python -u "$here/follow_mace.py" "$log"; then
        echo "mace_run_train failed; the end of $out/$log:" >&2
        tail -n 20 "$log" >&2
        exit 1
    fi
}

common=(--device=cpu --default_dtype=float64 --seed=1 --energy_key=REF_energy --forces_key=REF_forces)

echo "== training the toy foundation model on level A (30 epochs)"
run_mace foundation.log "${common[@]}" --name=foundation --train_file=level_a_train.xyz --valid_fraction=0.1 \
    --model=MACE --num_channels=16 --max_L=1 --r_max=4.5 --num_interactions=2 --correlation=2 \
    --max_num_epochs=30 --batch_size=16 --lr=0.01 --E0s=average

echo "== fine-tuning it to level B with --E0s=linear_system (10 epochs)"
run_mace finetune.log "${common[@]}" --name=finetuned --foundation_model=foundation.model \
    --train_file=level_b_train.xyz --valid_fraction=0.1 --test_file=level_b_test.xyz \
    --E0s=linear_system --max_num_epochs=10 --batch_size=8 --lr=0.001

echo "== the first E0 estimate, before epoch 1 (from mace's log)"
sed -n '/E0 re-estimation for head/,/RMSE of E per atom/p' finetune.log | sed 's/^[0-9-]* [0-9:.]* INFO: //'
echo "== E0 corrections against the true level-B shifts (eV)"
python "$here/compare_e0s.py" foundation.model finetuned.model results/finetuned_E0s_linear_system.json true_shifts.json
echo "== the fine-tuned model's E0s (mace-e0 show finetuned.model)"
python -m mace_e0_plugin show finetuned.model  # = mace-e0, from the package mace_run_train used
