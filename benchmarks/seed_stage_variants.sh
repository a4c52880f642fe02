#!/usr/bin/env bash
# How well does the seed stage (behaviour cloning) teach copying, per variant of the quickstart?
#
#   bash benchmarks/seed_stage_variants.sh OUT_DIR NAME "OVERRIDES" [NAME "OVERRIDES" ...]
#   e.g. bash benchmarks/seed_stage_variants.sh /tmp/variants base "" heads8 "model.tiny.num_heads=8"
#
# Runs `clarify train configs/quickstart.yaml run_dir=OUT_DIR/NAME OVERRIDES` until the first grow
# has been filtered (iter-1/kept.jsonl written), stops it there, and counts the copy errors of
# the grow's MULTI lists (its first moves are forced, so each list shows the seed policy's
# copying at the grow temperature): benchmarks/copy_errors.py on every NAME's iter-1/grow.jsonl,
# written to benchmarks/results/seed_stage_variants.json (or $VARIANTS_OUT). Also prints each
# variant's wall time to that point and its seed stage's training seconds.
set -euo pipefail
out=$1
mkdir -p "$out"
shift
runs=()
while [ $# -ge 2 ]; do
  name=$1 overrides=$2
  shift 2
  run="$out/$name"
  start=$(date +%s)
  # shellcheck disable=SC2086
  clarify train configs/quickstart.yaml "run_dir=$run" $overrides > "$out/$name.log" 2>&1 &
  pid=$!
  while kill -0 "$pid" 2> /dev/null && [ ! -s "$run/iter-1/kept.jsonl" ]; do sleep 5; done
  sleep 3
  kill "$pid" 2> /dev/null || true
  wait "$pid" || true
  [ -s "$run/iter-1/grow.jsonl" ] || { echo "$name: no grow episodes (see $out/$name.log)" >&2; exit 1; }
  bc=$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['seconds'])" "$run/seed/policy/sft_metrics.json")
  echo "$name: $(($(date +%s) - start)) s to the end of the first grow (seed stage training $bc s)"
  runs+=("$run/iter-1/grow.jsonl")
done
python "$(dirname "$0")/copy_errors.py" "${runs[@]}" --out "${VARIANTS_OUT:-seed_stage_variants.json}"
