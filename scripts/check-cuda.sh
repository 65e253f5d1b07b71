#!/usr/bin/env bash
# `make check-cuda`: the CUDA binary (target/cuda/release/crossfeed, from scripts/cuda-build.sh) against the
# plain release build, on a machine with or without a GPU:
#   1. no CUDA library is a load-time dependency (readelf -d: NEEDED);
#   2. `score` and `train` with --device cpu print/write exactly what the plain build does;
#   3. without CUDA libraries, --device cuda fails with a clear message and no panic; the plain build's
#      --device cuda error says how to get a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PLAIN=${PLAIN:-target/release/crossfeed}
CUDA=${CUDA:-target/cuda/release/crossfeed}
for b in "$PLAIN" "$CUDA"; do [ -x "$b" ] || { echo "check-cuda: $b missing (make build cuda)" >&2; exit 1; }; done
fail() { echo "check-cuda: FAIL: $*" >&2; exit 1; }

# Read first, then grep: a missing or failing readelf must fail the check, not pass it as "no match".
command -v readelf >/dev/null || fail "readelf not found (Debian/Ubuntu: apt-get install binutils)"
dynamic=$(readelf -d "$CUDA") || fail "readelf -d $CUDA failed"
grep -q 'NEEDED' <<<"$dynamic" || fail "readelf -d $CUDA lists no NEEDED library at all; cannot judge"
if grep -E 'NEEDED.*lib(cuda|cudart|cublas|cublasLt|curand|nvrtc)\.so' <<<"$dynamic"; then
  fail "$CUDA links CUDA libraries at load time"
fi
echo "ok: no CUDA library is NEEDED by $CUDA"

tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
model=tests/fixtures/models/llama32
cat > "$tmp/texts.jsonl" <<'JSONL'
{"text": "The river town sold apples in May and pears in June."}
{"text": "Natalia sold clips to 48 of her friends in April, and then half as many in May."}
{"text": "A small model learns a small world, one generation after another."}
{"text": "Which gas do plants take in from the air? Carbon dioxide."}
JSONL

for b in plain cuda; do
  bin=$PLAIN; [ $b = cuda ] && bin=$CUDA
  "$bin" score --model "$model" --data "$tmp/texts.jsonl" --device cpu > "$tmp/score.$b" 2> "$tmp/score.$b.err"
  "$bin" train --model "$model" --data "$tmp/texts.jsonl" --out "$tmp/train.$b" --device cpu --steps 3 \
    --lr 1e-3 --batch-size 2 --grad-accum 2 2> "$tmp/train.$b.err"
  # tokens_per_s is a timing: drop it, compare the rest of the log exactly.
  sed -E 's/,?"tokens_per_s":[^,}]*//' "$tmp/train.$b/train_log.jsonl" > "$tmp/log.$b"
done
cmp "$tmp/score.plain" "$tmp/score.cuda" || fail "score --device cpu differs between the plain and the CUDA build"
cmp "$tmp/log.plain" "$tmp/log.cuda" || fail "train log differs between the plain and the CUDA build"
# Tensor bytes after the JSON header (u64 length + header); the header's metadata is a hash map, so
# its key order may change from one run to the next even with the same binary.
data_of() { local n; n=$(od -An -t u8 -N 8 "$1" | tr -d ' '); tail -c +$((9 + n)) "$1"; }
for f in "$tmp"/train.plain/*.safetensors; do
  g="$tmp/train.cuda/$(basename "$f")"
  [ "$(stat -c %s "$f")" = "$(stat -c %s "$g")" ] && cmp <(data_of "$f") <(data_of "$g") \
    || fail "train: $(basename "$f") differs between the builds"
done
echo "ok: score and train with --device cpu are identical in both builds"

"$PLAIN" score --model "$model" --data "$tmp/texts.jsonl" --device cuda > /dev/null 2> "$tmp/plain.err" && fail "plain build accepted --device cuda"
grep -q 'make cuda' "$tmp/plain.err" || fail "plain build's --device cuda error does not mention make cuda: $(cat "$tmp/plain.err")"
echo "ok: plain build: $(head -1 "$tmp/plain.err")"

if "$CUDA" score --model "$model" --data "$tmp/texts.jsonl" --device cuda > "$tmp/cuda.out" 2> "$tmp/cuda.err"; then
  echo "ok: a CUDA device is present here; --device cuda ran (compare with: scripts/gpu-check.sh)"
else
  grep -q 'no CUDA device could be opened' "$tmp/cuda.err" || fail "unclear --device cuda error: $(cat "$tmp/cuda.err")"
  ! grep -q 'panicked' "$tmp/cuda.err" || fail "--device cuda printed a panic: $(cat "$tmp/cuda.err")"
  echo "ok: CUDA build without a device: $(head -1 "$tmp/cuda.err")"
fi
echo "check-cuda: all checks passed"
