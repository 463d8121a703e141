# A stand-in for LVM's lvcreate/lvextend/lvremove/lvs/vgs, for tests on machines without
# device-mapper: a volume group is a folder under $FAKE_LVM_DIR with a size; a logical volume is
# an image file there attached to a loop device, whose path lvs reports as lv_path. Arguments,
# size units (LVM's: default MiB, 4 MiB extents, rounded up), output and exit codes follow LVM's
# for the forms bakker uses.
set -euo pipefail
: "${FAKE_LVM_DIR:?FAKE_LVM_DIR is not set}"
EXTENT=$((4 * 1024 * 1024))

die() { echo "  $1" >&2; exit "${2:-5}"; }

# bytes of an LVM size argument (100M, 2g, 1048576b, 10 = MiB)
to_bytes() {
  local v=$1 n u
  [[ $v =~ ^([0-9]+)([bBsSkKmMgGtT]?)$ ]] || die "Invalid argument for --size: $v" 3
  n=${BASH_REMATCH[1]}; u=${BASH_REMATCH[2]}
  case $u in
    b|B) echo "$n" ;;
    s|S) echo $((n * 512)) ;;
    k|K) echo $((n * 1024)) ;;
    ''|m|M) echo $((n * 1024 * 1024)) ;;
    g|G) echo $((n * 1024 * 1024 * 1024)) ;;
    t|T) echo $((n * 1024 * 1024 * 1024 * 1024)) ;;
  esac
}

round_extents() { echo $(( ($1 + EXTENT - 1) / EXTENT * EXTENT )); }

vg_dir() { echo "$FAKE_LVM_DIR/$1"; }

# A snapshot is a full copy here (NAME.img) but takes only its copy-on-write size from the VG
# (NAME.snap holds it), as with LVM.
vg_free() {
  local d; d=$(vg_dir "$1")
  local total used=0 f
  total=$(cat "$d/.size")
  for f in "$d"/*.img; do
    [ -e "$f" ] || continue
    if [ -e "${f%.img}.snap" ]; then used=$((used + $(cat "${f%.img}.snap")))
    else used=$((used + $(stat -c %s "$f"))); fi
  done
  echo $((total - used))
}

vg_total() { cat "$(vg_dir "$1")/.size"; }

# /dev/VG/LV -> the loop device, as udev makes it for LVM
dev_link() { echo "/dev/$1/$2"; }
make_link() { mkdir -p "/dev/$1"; ln -sfn "$3" "/dev/$1/$2"; }
drop_link() { rm -f "/dev/$1/$2"; rmdir "/dev/$1" 2>/dev/null || true; }

# "VG/LV" or "/dev/VG/LV" -> sets VG and LV
split_lv() {
  local x=${1#/dev/}
  [[ $x == */* ]] || die "\"$1\": Invalid path for Logical Volume." 3
  VG=${x%%/*}; LV=${x#*/}
  [ -d "$(vg_dir "$VG")" ] || die "Volume group \"$VG\" not found"
  [ -e "$(vg_dir "$VG")/$LV.img" ] || die "Failed to find logical volume \"$VG/$LV\""
}

loop_of() { losetup -j "$1" -O NAME -n | head -1; }
