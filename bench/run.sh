#!/usr/bin/env bash
# Benchmark: bakker against rsync --link-dest, rsnapshot's method (cp -al + rsync --delete) and
# restic, in the same run on the same generated tree: one full backup each, then RUNS rounds of
# "mutate ~1% of the tree, incremental backup with each tool". Prints wall time, CPU and peak
# RSS per tool and bakker's ratios (medians for incrementals). Not a test: run it by hand.
#
#   bash bench/run.sh                 100k entries, the generator's full size mix (~2.1 GiB)
#   COUNT=20000 BIG=0 bash bench/run.sh   a quick small run
# Env: COUNT (100000), RUNS (3 incremental rounds), FULLS (3 full rounds, each into fresh
# destinations), BIG (1), BENCH_DIR (bench/work), KEEP=1 keeps the trees. Tools run in a rotated
# order each round; the report takes medians.
# BENCH_FS (ext4): everything (tree and destinations) lives on a fresh ext4 made with mkfs's
# defaults, journal included, in a sparse image loop-mounted under BENCH_DIR (needs root), as a
# backup volume would be. BENCH_FS=none uses BENCH_DIR's own filesystem as it is. Why: on an
# ext4 without a journal (this lab's root filesystem) creating files right after many were
# deleted makes the kernel scan the recently freed inodes at every create (ext4
# find_inode_bit -> recently_deleted, up to 300 s after the deletion): every tool's full backup
# then took 3-8x longer depending on what the previous round had deleted (docs/PERFORMANCE.md).
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${COUNT:-100000}
RUNS=${RUNS:-3}
export BIG=${BIG:-1}
W=$(realpath -m "${BENCH_DIR:-bench/work}")
for t in rsync restic cp /usr/bin/time; do command -v "$t" >/dev/null || { echo "bench needs $t: run scripts/install-test-deps.sh" >&2; exit 1; }; done
[ -f dist/src/cli/main.js ] || npm run build >/dev/null

mkdir -p "$W"
OUT="$W"
if [ "${BENCH_FS:-ext4}" = ext4 ]; then
  [ "$(id -u)" = 0 ] || { echo "bench: BENCH_FS=ext4 needs root (a loop mount); run as root or with BENCH_FS=none" >&2; exit 1; }
  IMG="$W/fs.img"; MNT="$W/mnt"
  mountpoint -q "$MNT" && umount "$MNT"
  rm -f "$IMG"; mkdir -p "$MNT"
  # 5 copies of the tree at once (source + 4 tools' fulls) with room to spare; sparse.
  truncate -s "$(( (COUNT * 25 + 999999) / 1000000 * 8 + 8 ))G" "$IMG"
  mkfs.ext4 -q -F "$IMG"
  LOOP=$(losetup -f --show "$IMG")
  cleanup_fs() { cd /; umount "$MNT" 2>/dev/null || true; losetup -d "$LOOP" 2>/dev/null || true; rm -f "$IMG"; }
  trap cleanup_fs EXIT
  mount "$LOOP" "$MNT"
  echo "bench filesystem: ext4 (journal) on $LOOP, $(du -h --apparent-size "$IMG" | cut -f1) sparse image" >&2
  # the generated tree is kept beside the image and copied in (generation takes a while)
  GEN="$W/gen"
  if [ ! -f "$GEN/src.ok" ] || [ "$(cat "$GEN/src.ok")" != "$COUNT:$BIG" ]; then
    rm -rf "$GEN"; mkdir -p "$GEN"
    echo "generating $COUNT entries (BIG=$BIG) in $GEN/src ..." >&2
    bash bench/make-tree.sh "$GEN/src" "$COUNT" 1 >&2
    echo "$COUNT:$BIG" > "$GEN/src.ok"
  fi
  cp -a "$GEN/src" "$MNT/src"
  cp "$GEN/src.ok" "$MNT/src.ok"
  W="$MNT"
fi
RESULTS="$W/results.jsonl"
rm -rf "$W"/bk* "$W"/rl* "$W"/rs* "$W"/restic* "$RESULTS"
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

# One tool's run: full (N: into fresh destinations of round N) or incremental (round N).
run_tool() {
  local tool=$1 phase=$2 n=$3 prev=$(( $3 - 1 ))
  case "$tool:$phase" in
    bakker:full) measure bakker full "$n" bin/bakker.js backup "$W/src" --store "$W/bk-f$n" ;;
    rsync-link-dest:full) measure rsync-link-dest full "$n" rsync -aH "$W/src/" "$W/rl-f$n/" ;;
    rsnapshot-method:full) measure rsnapshot-method full "$n" rsync -aH "$W/src/" "$W/rs-f$n/" ;;
    restic:full) RESTIC_REPOSITORY="$W/restic-f$n" restic init -q >/dev/null; RESTIC_REPOSITORY="$W/restic-f$n" measure restic full "$n" restic backup -q "$W/src" ;;
    bakker:incremental) measure bakker incremental "$n" bin/bakker.js backup "$W/src" --store "$W/bk" ;;
    rsync-link-dest:incremental) measure rsync-link-dest incremental "$n" rsync -aH --link-dest="$W/rl/$prev" "$W/src/" "$W/rl/$n/" ;;
    rsnapshot-method:incremental) measure rsnapshot-method incremental "$n" sh -c "cp -al '$W/rs/$prev' '$W/rs/$n' && rsync -aH --delete '$W/src/' '$W/rs/$n/'" ;;
    restic:incremental) measure restic incremental "$n" restic backup -q "$W/src" ;;
  esac
}
TOOLS=(bakker rsync-link-dest rsnapshot-method restic)
# Each round starts with another tool, so no tool always runs first (this VM's disk and CPU
# drift within minutes; medians over rounds in rotated order are what the ratios use).
rotated() { local k=$(( $1 % ${#TOOLS[@]} )); echo "${TOOLS[@]:$k} ${TOOLS[@]:0:$k}"; }

FULLS=${FULLS:-3}
for n in $(seq 1 "$FULLS"); do
  for t in $(rotated "$n"); do run_tool "$t" full "$n"; done
  if [ "$n" -lt "$FULLS" ]; then rm -rf "$W/bk-f$n" "$W/rl-f$n" "$W/rs-f$n" "$W/restic-f$n"; fi
done
# The last full round's copies are what the incrementals build on.
mv "$W/bk-f$FULLS" "$W/bk"; mkdir -p "$W/rl" "$W/rs"; mv "$W/rl-f$FULLS" "$W/rl/0"; mv "$W/rs-f$FULLS" "$W/rs/0"; rm -rf "$W/restic"; mv "$W/restic-f$FULLS" "$W/restic"
for n in $(seq 1 "$RUNS"); do
  bash bench/make-tree.sh --mutate "$W/src" "$n" >&2
  for t in $(rotated "$n"); do run_tool "$t" incremental "$n"; done
done
du -sh "$W/bk" "$W/rl" "$W/rs" "$W/restic" >&2 || true
[ "$RESULTS" = "$OUT/results.jsonl" ] || cp "$RESULTS" "$OUT/results.jsonl"
node bench/report.mjs "$OUT/results.jsonl" "$COUNT" | tee "$OUT/last-report.md"
if [ "${KEEP:-0}" != 1 ] && [ "${BENCH_FS:-ext4}" != ext4 ]; then rm -rf "$W/bk" "$W/rl" "$W/rs" "$W/restic" "$W/restic-cache" "$W/src" "$W/src.ok"; fi
