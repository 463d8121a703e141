/** Snapshot names: YYYY_MM_DD_NN, the run's local date and its run number that day from 01. */
export const SNAPSHOT_RE = /^(\d{4})_(\d{2})_(\d{2})_(\d{2,4})$/;

export function isSnapshotName(s: string): boolean {
  return SNAPSHOT_RE.test(s);
}

export function datePrefix(now: Date): string {
  const p = (n: number) => String(n).padStart(2, '0');
  return `${now.getFullYear()}_${p(now.getMonth() + 1)}_${p(now.getDate())}`;
}

/** The next free name for `now`, given every name already used on the store (complete or not). */
export function nextSnapshotName(used: Iterable<string>, now: Date): string {
  const prefix = datePrefix(now);
  let max = 0;
  for (const u of used) {
    const m = SNAPSHOT_RE.exec(u);
    if (m && `${m[1]}_${m[2]}_${m[3]}` === prefix) max = Math.max(max, Number(m[4]));
  }
  return `${prefix}_${String(max + 1).padStart(2, '0')}`;
}

/** Sort order of snapshot names: by date, then run number as a number (…_99 before …_100). */
export function compareSnapshotNames(a: string, b: string): number {
  const ma = SNAPSHOT_RE.exec(a);
  const mb = SNAPSHOT_RE.exec(b);
  if (!ma || !mb) return a < b ? -1 : a > b ? 1 : 0;
  const da = `${ma[1]}${ma[2]}${ma[3]}`;
  const db = `${mb[1]}${mb[2]}${mb[3]}`;
  if (da !== db) return da < db ? -1 : 1;
  return Number(ma[4]) - Number(mb[4]);
}
