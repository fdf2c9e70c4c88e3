#!/usr/bin/env bash
# The prepared GPU check (bench/gpu_check.py says what it checks). One command on a lent GPU machine:
#   bash bench/gpu_check.sh            # carried wheels from .whl/ (make gpu-wheels) are installed first
#   bash bench/gpu_check.sh --cpu      # tiny models on the CPU: what CI runs so the script never rots
# Writes $OUT/gpu_check.json (the report), $OUT/gpu_check.log and $OUT/gpu-tests.xml.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu-check-out}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
if [ "${1:-}" != "--cpu" ] && compgen -G ".whl/*.whl" >/dev/null; then
  SITE="${HELIUM_CHECK_SITE:-/tmp/helium-check-site}"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
    || { echo "gpu_check: installing the carried wheels failed" >&2; exit 2; }
  export PYTHONPATH="$SITE:$PYTHONPATH"
fi
"$PY" -m bench.gpu_check --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_check.log"
exit "${PIPESTATUS[0]}"
