#!/usr/bin/env bash
# Reproduces models/cifar10-cnn/2 from models/cifar10-cnn/1 (about 2 minutes on 2 cores).
#
#   models/cifar10-cnn/refit-v2.sh [--ship]
#
# Imports CIFAR-10H (10,000 test images, ~51 human labels each, half calibration /
# half test), refits the disagreement and human-error heads of version 1 with its
# body frozen on the fitting part of the calibration half (40% of its images, by a
# fixed hash; L2 chosen by 5-fold cross-validation there), refits the temperature
# and the calibrators of â, D̂, ĥ there, certifies the `system` policy at
# alpha 0.049 (one CIFAR-10H annotator's error), delta 0.1 on the rest of the
# calibration half, and evaluates on the test half, which nothing above has seen.
#   --ship  copy the bundle and its policy into models/cifar10-cnn/2/
# Env: TRIAGED_BIN (default ./target/release/triaged), SHARED (default ../shared),
#      WORK (default a temporary folder).
set -euo pipefail
BIN=${TRIAGED_BIN:-./target/release/triaged}
SHARED=${SHARED:-../shared}
WORK=${WORK:-$(mktemp -d)}
mkdir -p "$WORK/images"
ship=0
for a in "$@"; do
  case "$a" in
    --ship) ship=1 ;;
    *) echo "unknown argument $a" >&2; exit 2 ;;
  esac
done
[ -x "$BIN" ] || { echo "no binary at $BIN: cargo build --release first" >&2; exit 2; }
C=airplane,automobile,bird,cat,deer,dog,frog,horse,ship,truck
tar -xzf "$SHARED/data/cifar10/test-images.tar.gz" -C "$WORK/images"
"$BIN" data import-images --images "$WORK/images" --csv "$SHARED/data/cifar10/cifar10h-test.csv" \
  --out "$WORK/c10h.safetensors" --counts "n_${C//,/,n_}" --reference reference --split split --classes "$C" >&2
bundle="$WORK/models/cifar10-cnn/2"
"$BIN" train --refit-heads models/cifar10-cnn/1 --data "$WORK/c10h.safetensors" --out "$bundle" >&2
"$BIN" calibrate --model "$bundle" --data "$WORK/c10h.safetensors" --policy system --alpha 0.049 --delta 0.1
"$BIN" eval --model "$bundle" --data "$WORK/c10h.safetensors" --split test --policy --out "$WORK/eval-test" >&2
python3 - "$WORK/eval-test/report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); p, d = r["policy"], r["disagreement"]
print(f"CIFAR-10H test half ({p['n']} images): total error {p['total_error']:.4f} "
      f"(95% upper {p['total_error_upper']:.4f}), labels/case {p['labels_per_case']:.3f}, "
      f"automated {p['automation_rate']:.3f}; ROC-AUC (D > 0): DUP {d['dup']['auc_any']:.4f}, UVC {d['uvc']['auc_any']:.4f}")
PY
if [ "$ship" = 1 ]; then
  mkdir -p models/cifar10-cnn/2
  cp "$bundle"/model.json "$bundle"/model.safetensors "$bundle"/policy.json models/cifar10-cnn/2/
  echo "shipped models/cifar10-cnn/2" >&2
fi
