#!/usr/bin/env bash
# Reproduces the shipped CIFAR-10 CNN and its numbers.
#
#   models/cifar10-cnn/reproduce.sh [--eval-only] [--ship] [--check]
#
# Imports CIFAR-10N (50,000 train images, 3 human labels each) and CIFAR-10H
# (10,000 test images, ~51 human labels each, split half calibration / half test)
# from ../shared/data/cifar10, trains the CNN on CIFAR-10N (about 90 min on one
# CPU core), calibrates its risk-controlled policy on the CIFAR-10H calibration
# half and evaluates it on the CIFAR-10H test half.
#   --eval-only  skip training: evaluate the shipped models/cifar10-cnn/1 bundle
#   --ship       copy the trained bundle and its policy into models/cifar10-cnn/1/
#   --check      exit 1 unless test accuracy >= 0.80 and, at 20% reviewed, the
#                combined score's total error beats random review
# Env: TRIAGED_BIN (default ./target/release/triaged), SHARED (default ../shared),
#      WORK (default a temporary folder), THREADS (default 1).
set -euo pipefail
BIN=${TRIAGED_BIN:-./target/release/triaged}
SHARED=${SHARED:-../shared}
WORK=${WORK:-$(mktemp -d)}
THREADS=${THREADS:-1}
eval_only=0; ship=0; check=0
for a in "$@"; do
  case "$a" in
    --eval-only) eval_only=1 ;;
    --ship) ship=1 ;;
    --check) check=1 ;;
    *) echo "unknown argument $a" >&2; exit 2 ;;
  esac
done
[ -x "$BIN" ] || { echo "no binary at $BIN: cargo build --release first" >&2; exit 2; }

C=airplane,automobile,bird,cat,deer,dog,frog,horse,ship,truck
mkdir -p "$WORK/images"
tar -xzf "$SHARED/data/cifar10/test-images.tar.gz" -C "$WORK/images"
"$BIN" data import-images --images "$WORK/images" --csv "$SHARED/data/cifar10/cifar10h-test.csv" \
  --out "$WORK/c10h.safetensors" --counts "n_${C//,/,n_}" --reference reference --split split --classes "$C" >&2

if [ "$eval_only" = 1 ]; then
  bundle=models/cifar10-cnn/1
else
  tar -xzf "$SHARED/data/cifar10/train-images.tar.gz" -C "$WORK/images"
  "$BIN" data import-images --images "$WORK/images" --csv "$SHARED/data/cifar10/cifar10n-train.csv" \
    --out "$WORK/c10n.safetensors" --annotators annotator1,annotator2,annotator3 --reference reference --classes "$C" >&2
  bundle="$WORK/models/cifar10-cnn/1"
  "$BIN" --threads "$THREADS" train --data "$WORK/c10n.safetensors" --calibration-data "$WORK/c10h.safetensors" \
    --out "$bundle" --stages 32,64,128 --hidden 256 --ensemble 1 --epochs 20 --batch-size 128 \
    --learning-rate 2e-3 --weight-decay 0.05 --dropout 0.2 --seed 0 >&2
  rm -f "$bundle/checkpoint.safetensors"
  "$BIN" calibrate --model "$bundle" --data "$WORK/c10h.safetensors" >&2
fi

"$BIN" eval --model "$bundle" --data "$WORK/c10h.safetensors" --split test --policy --out "$WORK/eval-test" >&2
python3 - "$WORK/eval-test/report.json" "$check" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
c, d, t, p = r["classification"], r["disagreement"], r["triage_curve"], r["policy"]
print(f"CIFAR-10H test half ({r['n']} images, ~51 labels each)")
print(f"accuracy vs reference {c['accuracy_reference']:.4f}, vs majority {c['accuracy_majority']:.4f}, "
      f"NLL {c['nll']:.4f}, ECE {c['ece']:.4f}, temperature {c['temperature']:.3f}")
print(f"disagreement D > 0 in {d['positive_rate']:.1%} of images; ROC-AUC D > 0: DUP {d['dup']['auc_any']:.4f}, "
      f"UVC {d['uvc']['auc_any']:.4f}; D > median: DUP {d['dup']['auc_median']:.4f}, UVC {d['uvc']['auc_median']:.4f}; "
      f"Spearman: DUP {d['dup']['spearman']:.4f}, UVC {d['uvc']['spearman']:.4f}")
print("triage curve (total error when the top fraction goes to one human):")
print("fraction  dup     uvc     combined random  oracle")
for i, f in enumerate(t["fractions"]):
    if abs(f * 10 - round(f * 10)) < 1e-9:
        print(f"{f:8.2f}  {t['dup'][i]:.4f}  {t['uvc'][i]:.4f}  {t['combined'][i]:.4f}   {t['random'][i]:.4f}  {t['oracle'][i]:.4f}")
print(f"policy {p['name']} {p['version']}: automates {p['automation_rate']:.1%}, selective error "
      f"{p['selective_error'] if p['selective_error'] is None else round(p['selective_error'], 4)} "
      f"[{p['selective_error_lower']:.4f}, {p['selective_error_upper']:.4f}], total error {p['total_error']:.4f}")
if sys.argv[2] == "1":
    fr = t["fractions"]; i = min(range(len(fr)), key=lambda j: abs(fr[j] - 0.2))
    ok = c["accuracy_reference"] >= 0.80 and t["combined"][i] < t["random"][i]
    print(("PASS" if ok else "FAIL") + ": accuracy >= 0.80 and combined beats random at 20% reviewed")
    sys.exit(0 if ok else 1)
PY

if [ "$ship" = 1 ] && [ "$eval_only" = 0 ]; then
  dest=models/cifar10-cnn/1
  mkdir -p "$dest"
  cp "$bundle/model.json" "$bundle/model.safetensors" "$bundle/policy.json" "$dest/"
  echo "shipped $dest" >&2
fi
