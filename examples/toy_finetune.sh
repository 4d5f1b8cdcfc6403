#!/usr/bin/env bash
# Example fine-tune with --E0s=linear_system, on CPU, with nothing downloaded (about 10 minutes on 2 cores).
#   1. make toy data at two levels of theory (level B shifts every element's E0),
#   2. train a small foundation model on level A with plain mace_run_train,
#   3. fine-tune it to level B with --E0s=linear_system,
#   4. compare the re-estimated E0 corrections with the true shifts.
set -euo pipefail
out=${1:-toy_run}
here=$(cd "$(dirname "$0")" && pwd)
python "$here/make_toy_data.py" "$out"
cd "$out"

common=(--device=cpu --default_dtype=float64 --seed=1 --energy_key=REF_energy --forces_key=REF_forces)

echo "== training the toy foundation model on level A"
mace_run_train "${common[@]}" --name=foundation --train_file=level_a_train.xyz --valid_fraction=0.1 \
    --model=MACE --num_channels=16 --max_L=1 --r_max=4.5 --num_interactions=2 --correlation=2 \
    --max_num_epochs=30 --batch_size=16 --lr=0.01 --E0s=average > foundation.log 2>&1

echo "== fine-tuning it to level B with --E0s=linear_system"
mace_run_train "${common[@]}" --name=finetuned --foundation_model=foundation.model \
    --train_file=level_b_train.xyz --valid_fraction=0.1 --test_file=level_b_test.xyz \
    --E0s=linear_system --max_num_epochs=10 --batch_size=8 --lr=0.001 > finetune.log 2>&1

echo "== the E0 report in mace's log"
sed -n '/E0 re-estimation for head/,/RMSE of E per atom/p' finetune.log | sed 's/^[0-9-]* [0-9:.]* INFO: //'
echo "== corrections against the true level-B shifts (eV)"
python - <<'PY'
import json
content = json.load(open("results/finetuned_E0s_linear_system.json"))
report = content["heads"]["Default"]
truth = json.load(open("true_shifts.json"))
estimated = report.get("estimated_E0s", report["E0s"])  # before training; E0s: of the saved model
print(f"{'Z':>3} {'true shift':>11} {'estimated':>11} {'std. err.':>10}")
for z, shift in truth.items():
    correction = estimated[z] - report["starting_E0s"][z]
    print(f"{z:>3} {shift:>11.4f} {correction:>11.4f} {report['standard_errors'][z]:>10.4f}")
print(f"RMSE per atom {report['rmse_per_atom_before_meV']:.1f} meV with the foundation's E0s, "
      f"{report['rmse_per_atom_after_meV']:.1f} meV after re-estimation, before any training")
for refit in content.get("refits", []):  # --E0s_refit (default final): the saved model's own optimum
    print(f"refit ({refit['kind']}, epoch {refit['epoch']}): training RMSE per atom "
          f"{refit['rmse_per_atom_before_meV']:.2f} -> {refit['rmse_per_atom_after_meV']:.2f} meV, "
          f"largest |dE0| {refit['max_abs_change_eV']:.4f} eV")
PY
echo "== the fine-tuned model's E0s (mace-e0 show finetuned.model)"
mace-e0 show finetuned.model
