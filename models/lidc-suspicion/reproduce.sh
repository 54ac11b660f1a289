#!/usr/bin/env bash
# Reproduces the shipped LIDC benign-vs-suspicious model and its certified policy.
#
#   models/lidc-suspicion/reproduce.sh [--ship]
#
# The question a clinic asks of a nodule: benign (malignancy ratings 1-3) or
# suspicious (4-5)? Collapses each nodule's radiologist ratings to those two
# counts, imports them with the patient as the group (calibration's fitting and
# certification parts never divide a patient), trains the MLP (seed 0), calibrates
# the `system` policy at alpha 0.25, delta 0.1 — without a reference label the
# losses are leave-one-reader-out and one reviewer per case is offered — and
# evaluates on the test split.
#   --ship  copy the bundle and its policy into models/lidc-suspicion/1/
# Env: TRIAGED_BIN (default ./target/release/triaged), SHARED (default ../shared),
#      WORK (default a temporary folder).
set -euo pipefail
BIN=${TRIAGED_BIN:-./target/release/triaged}
SHARED=${SHARED:-../shared}
WORK=${WORK:-$(mktemp -d)}
mkdir -p "$WORK"
ship=0
for a in "$@"; do
  case "$a" in
    --ship) ship=1 ;;
    *) echo "unknown argument $a" >&2; exit 2 ;;
  esac
done
[ -x "$BIN" ] || { echo "no binary at $BIN: cargo build --release first" >&2; exit 2; }

python3 - "$SHARED/data/lidc/nodules.csv" "$WORK/suspicion.csv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
with open(sys.argv[2], "w", newline="") as f:
    out = csv.DictWriter(f, fieldnames=list(rows[0].keys()) + ["n_benign", "n_suspicious"])
    out.writeheader()
    for r in rows:
        r["n_benign"] = sum(int(r[f"n_mal{k}"]) for k in (1, 2, 3))
        r["n_suspicious"] = sum(int(r[f"n_mal{k}"]) for k in (4, 5))
        out.writerow(r)
PY
FEATURES=mean_volume_mm3,mean_max_diameter_mm,mean_n_slices,centroid_x_mm,centroid_y_mm,slice_thickness_mm,pixel_spacing_mm,contrast_used
data="$WORK/lidc-suspicion.safetensors"
"$BIN" data import-csv --csv "$WORK/suspicion.csv" --out "$data" \
  --counts n_benign,n_suspicious --classes benign,suspicious \
  --features "$FEATURES" --split split --group patient_id --min-labels 3 >&2
bundle="$WORK/models/lidc-suspicion/1"
"$BIN" train --data "$data" --out "$bundle" --seed 0 >&2
"$BIN" calibrate --model "$bundle" --data "$data" --policy system --alpha 0.25 --delta 0.1
"$BIN" eval --model "$bundle" --data "$data" --split test --policy --out "$WORK/eval-test" >&2
python3 - "$WORK/eval-test/report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); p = r["policy"]
print(f"LIDC suspicion, test split ({p['n']} nodules): automated {p['automation_rate']:.3f}, "
      f"total error {p['total_error']:.4f} (95% upper {p['total_error_upper']:.4f}), "
      f"labels/case {p['labels_per_case']:.3f}, reasons {p['reasons']}")
PY
if [ "$ship" = 1 ]; then
  mkdir -p models/lidc-suspicion/1
  cp "$bundle"/model.json "$bundle"/model.safetensors "$bundle"/policy.json models/lidc-suspicion/1/
  echo "shipped models/lidc-suspicion/1" >&2
fi
