#!/usr/bin/env bash
# Benchmark: bakker against rsync --link-dest, rsnapshot's method (cp -al + rsync --delete) and
# restic, in the same run on the same generated tree: one full backup each, then RUNS rounds of
# "mutate ~1% of the tree, incremental backup with each tool". Prints wall time, CPU and peak
# RSS per tool and bakker's ratios (medians for incrementals). Not a test: run it by hand.
#
#   bash bench/run.sh                 100k entries, the generator's full size mix (~2.1 GiB)
#   COUNT=20000 BIG=0 bash bench/run.sh   a quick small run
# Env: COUNT (100000), RUNS (3), BIG (1), BENCH_DIR (bench/work), KEEP=1 keeps the trees.
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${COUNT:-100000}
RUNS=${RUNS:-3}
export BIG=${BIG:-1}
W=$(realpath -m "${BENCH_DIR:-bench/work}")
RESULTS="$W/results.jsonl"
for t in rsync restic cp /usr/bin/time; do command -v "$t" >/dev/null || { echo "bench needs $t: run scripts/install-test-deps.sh" >&2; exit 1; }; done
[ -f dist/src/cli/main.js ] || npm run build >/dev/null

mkdir -p "$W"
rm -rf "$W/bk" "$W/rl" "$W/rs" "$W/restic" "$RESULTS"
if [ ! -f "$W/src.ok" ] || [ "$(cat "$W/src.ok")" != "$COUNT:$BIG" ]; then
  rm -rf "$W/src"
  echo "generating $COUNT entries (BIG=$BIG) in $W/src ..." >&2
  bash bench/make-tree.sh "$W/src" "$COUNT" 1 >&2
  echo "$COUNT:$BIG" > "$W/src.ok"
else
  echo "reusing the tree in $W/src (regenerated when COUNT or BIG change)" >&2
  # undo earlier mutations: regenerate is slow, so the tree is re-made only when missing
fi
export RESTIC_PASSWORD=bench RESTIC_REPOSITORY="$W/restic" RESTIC_CACHE_DIR="$W/restic-cache"
restic init -q >/dev/null
mkdir -p "$W/rl" "$W/rs"

# measure TOOL PHASE ROUND CMD...: runs CMD under GNU time, then `sync` (timed separately, so
# "durable" numbers include writing back what the tool left in the page cache).
measure() {
  local tool=$1 phase=$2 round=$3; shift 3
  sync
  local tf; tf=$(mktemp)
  /usr/bin/time -o "$tf" -f '%e %U %S %M' "$@" >/dev/null 2>"$W/last-stderr" || { cat "$W/last-stderr" >&2; echo "$tool $phase failed" >&2; exit 1; }
  local s0 s1; s0=$(date +%s.%N); sync; s1=$(date +%s.%N)
  read -r wall user sys rss < "$tf"; rm -f "$tf"
  printf '{"tool":"%s","phase":"%s","round":%s,"wall":%s,"user":%s,"sys":%s,"rssKB":%s,"syncAfter":%s}\n' \
    "$tool" "$phase" "$round" "$wall" "$user" "$sys" "$rss" "$(awk "BEGIN{printf \"%.3f\", $s1 - $s0}")" | tee -a "$RESULTS" >&2
}

BAKKER=(bin/bakker.js backup "$W/src" --store "$W/bk")
run_round() {
  local phase=$1 n=$2 prev=$(( $2 - 1 ))
  measure bakker "$phase" "$n" "${BAKKER[@]}"
  if [ "$n" -eq 0 ]; then
    measure rsync-link-dest "$phase" "$n" rsync -aH "$W/src/" "$W/rl/0/"
    measure rsnapshot-method "$phase" "$n" rsync -aH "$W/src/" "$W/rs/0/"
  else
    measure rsync-link-dest "$phase" "$n" rsync -aH --link-dest="$W/rl/$prev" "$W/src/" "$W/rl/$n/"
    measure rsnapshot-method "$phase" "$n" sh -c "cp -al '$W/rs/$prev' '$W/rs/$n' && rsync -aH --delete '$W/src/' '$W/rs/$n/'"
  fi
  measure restic "$phase" "$n" restic backup -q "$W/src"
}

run_round full 0
for n in $(seq 1 "$RUNS"); do
  bash bench/make-tree.sh --mutate "$W/src" "$n" >&2
  run_round incremental "$n"
done
du -sh "$W/bk" "$W/rl" "$W/rs" "$W/restic" >&2 || true
node bench/report.mjs "$RESULTS" "$COUNT"
if [ "${KEEP:-0}" != 1 ]; then rm -rf "$W/bk" "$W/rl" "$W/rs" "$W/restic" "$W/restic-cache" "$W/src" "$W/src.ok"; fi
