#!/usr/bin/env bash
# Reproduces the shipped LIDC malignancy model and its numbers.
#
#   models/lidc-malignancy/reproduce.sh [--ship] [--check] [SEED ...]
#
# Imports the LIDC-IDRI nodules with >= 3 readers from ../shared/data, trains one
# bundle per seed (default seeds 0-4), evaluates each on the calibration and test
# splits, and prints, per seed, the ROC-AUC of DUP and UVC for detecting a
# benign/malignant split among readers (some reader rates 1-3, another 4-5).
# "chosen" is the better of DUP and UVC on the calibration split, reported on test.
#   --ship   also copy the first seed's bundle to models/lidc-malignancy/1/ and
#            calibrate its risk-controlled policy (alpha 0.05, delta 0.1) into it
#   --check  exit 1 unless every seed has test DUP >= 0.65 and chosen >= 0.70
# Env: TRIAGED_BIN (default ./target/release/triaged), SHARED (default ../shared),
#      WORK (default a temporary folder).
set -euo pipefail
BIN=${TRIAGED_BIN:-./target/release/triaged}
SHARED=${SHARED:-../shared}
WORK=${WORK:-$(mktemp -d)}
ship=0; check=0; seeds=()
for a in "$@"; do
  case "$a" in
    --ship) ship=1 ;;
    --check) check=1 ;;
    *) seeds+=("$a") ;;
  esac
done
[ ${#seeds[@]} -gt 0 ] || seeds=(0 1 2 3 4)
[ -x "$BIN" ] || { echo "no binary at $BIN: cargo build --release first" >&2; exit 2; }

FEATURES=mean_volume_mm3,mean_max_diameter_mm,mean_n_slices,centroid_x_mm,centroid_y_mm,slice_thickness_mm,pixel_spacing_mm,contrast_used
CLASSES=highly_unlikely,moderately_unlikely,indeterminate,moderately_suspicious,highly_suspicious
data="$WORK/lidc-3readers.safetensors"
# n_readers is not a feature: a reader who did not mark a nodule disagreed about it.
"$BIN" data import-csv --csv "$SHARED/data/lidc/nodules.csv" --out "$data" \
  --counts n_mal1,n_mal2,n_mal3,n_mal4,n_mal5 --classes "$CLASSES" \
  --features "$FEATURES" --split split --min-labels 3 >&2

summary="$WORK/seeds.tsv"; : >"$summary"
for seed in "${seeds[@]}"; do
  bundle="$WORK/models/lidc-malignancy/seed$seed"
  "$BIN" train --data "$data" --out "$bundle" --seed "$seed" >&2
  for split in calibration test; do
    "$BIN" eval --model "$bundle" --data "$data" --split "$split" \
      --class-groups 0,1,2/3,4 --out "$WORK/eval-$seed-$split" >/dev/null
  done
  python3 - "$seed" "$WORK/eval-$seed-calibration/report.json" "$WORK/eval-$seed-test/report.json" >>"$summary" <<'PY'
import json, sys
seed, cal, test = sys.argv[1], json.load(open(sys.argv[2])), json.load(open(sys.argv[3]))
g = lambda r, s: r["disagreement"][s]["auc_groups"]
best = "dup" if g(cal, "dup") >= g(cal, "uvc") else "uvc"
c = test["classification"]
print(f"{seed}\t{g(test,'dup'):.3f}\t{g(test,'uvc'):.3f}\t{best}\t{g(test,best):.3f}\t"
      f"{test['disagreement']['dup']['auc_any']:.3f}\t{test['disagreement']['uvc']['auc_any']:.3f}\t"
      f"{c['accuracy_majority']:.3f}\t{c['nll']:.3f}\t{c['ece']:.3f}")
PY
done

python3 - "$summary" "$check" <<'PY'
import statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().splitlines()]
print("LIDC test split (274 nodules, >= 3 readers): ROC-AUC for a benign/malignant split among readers")
print("seed  DUP    UVC    chosen(on cal)  | AUC D>0: DUP  UVC  | acc(maj) NLL   ECE")
for r in rows:
    print(f"{r[0]:>4}  {r[1]}  {r[2]}  {r[3]} {r[4]}       |  {r[5]}  {r[6]} | {r[7]}   {r[8]} {r[9]}")
def stat(i):
    v = [float(r[i]) for r in rows]
    return f"{statistics.mean(v):.3f} ({min(v):.3f}-{max(v):.3f})"
print(f"mean (range) over {len(rows)} seeds: DUP {stat(1)}, UVC {stat(2)}, chosen {stat(4)}")
if sys.argv[2] == "1":
    bad = [r for r in rows if float(r[1]) < 0.65 or float(r[4]) < 0.70]
    if bad:
        print("FAIL: below the bar (DUP >= 0.65, chosen >= 0.70) for seeds " + ", ".join(r[0] for r in bad))
        sys.exit(1)
    print("PASS: every seed has DUP >= 0.65 and chosen >= 0.70")
PY

if [ "$ship" = 1 ]; then
  dest=models/lidc-malignancy/1
  mkdir -p "$dest"
  cp "$WORK/models/lidc-malignancy/seed${seeds[0]}/model.json" "$WORK/models/lidc-malignancy/seed${seeds[0]}/model.safetensors" "$dest/"
  # The bundle's name and version come from its folder.
  python3 - "$dest/model.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1])); m["name"], m["version"] = "lidc-malignancy", "1"
m["training"]["data_file"] = "../shared/data/lidc/nodules.csv (>= 3 readers, via reproduce.sh)"
json.dump(m, open(sys.argv[1], "w"), indent=2)
PY
  "$BIN" calibrate --model "$dest" --data "$data" --policy risk --alpha 0.05 --delta 0.1
  echo "shipped seed ${seeds[0]} to $dest"
fi
