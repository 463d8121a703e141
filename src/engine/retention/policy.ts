/**
 * Which snapshots a retention policy keeps (docs/RETENTION.md). The rules follow restic's
 * `forget` where it has the same option: snapshots are taken newest first; a count rule keeps
 * the newest snapshot of each of its last N calendar buckets (hour, day, ISO week, month, year,
 * in local time) that have one; `keep_within` keeps everything within a duration of the newest
 * snapshot (not of now: a client that stopped backing up keeps its history); the
 * `keep_within_*` rules keep the newest of each bucket within their duration. On top of restic:
 * `min_keep` keeps the newest removed ones until at least that many remain, the newest snapshot
 * is always kept, and an empty policy keeps everything.
 */

export interface Policy {
  keepLast?: number;
  keepHourly?: number;
  keepDaily?: number;
  keepWeekly?: number;
  keepMonthly?: number;
  keepYearly?: number;
  keepWithin?: Duration;
  keepWithinHourly?: Duration;
  keepWithinDaily?: Duration;
  keepWithinWeekly?: Duration;
  keepWithinMonthly?: Duration;
  keepWithinYearly?: Duration;
  minKeep?: number;
}

/** restic's duration: years, months, days, hours ("1y6m", "14d", "36h"). */
export interface Duration {
  text: string;
  y: number;
  m: number;
  d: number;
  h: number;
}

export interface Snap {
  name: string;
  /** When the run started. */
  time: Date;
}

export interface Decision {
  name: string;
  time: Date;
  keep: boolean;
  /** Why it is kept ("daily snapshot", "within 14d", ...), or why it goes. */
  reasons: string[];
}

const DURATION_RE = /^(?:(\d+)y)?(?:(\d+)m)?(?:(\d+)d)?(?:(\d+)h)?$/;

/** Parses "14d", "1y6m", "36h"; null when it is not one. */
export function parseDuration(text: string): Duration | null {
  const m = DURATION_RE.exec(text.trim());
  if (!m || text.trim() === '') return null;
  return { text: text.trim(), y: Number(m[1] ?? 0), m: Number(m[2] ?? 0), d: Number(m[3] ?? 0), h: Number(m[4] ?? 0) };
}

/** `t` minus the duration, by the calendar (local time), as restic does. */
function subtract(t: Date, d: Duration): Date {
  const r = new Date(t.getTime());
  r.setFullYear(r.getFullYear() - d.y, r.getMonth() - d.m, r.getDate() - d.d);
  r.setHours(r.getHours() - d.h);
  return r;
}

const pad = (n: number) => String(n).padStart(2, '0');

/** ISO 8601 week: "2024-W01" (the week with the year's first Thursday). */
function isoWeek(t: Date): string {
  const d = new Date(t.getFullYear(), t.getMonth(), t.getDate());
  const day = (d.getDay() + 6) % 7; // Monday 0
  d.setDate(d.getDate() - day + 3); // the Thursday of this week
  const year = d.getFullYear();
  const jan4 = new Date(year, 0, 4);
  const week = 1 + Math.round(((d.getTime() - jan4.getTime()) / 86_400_000 - 3 + ((jan4.getDay() + 6) % 7)) / 7);
  return `${year}-W${pad(week)}`;
}

type Bucket = (t: Date) => string;
const BUCKETS: Record<'hourly' | 'daily' | 'weekly' | 'monthly' | 'yearly', Bucket> = {
  hourly: (t) => `${t.getFullYear()}-${pad(t.getMonth() + 1)}-${pad(t.getDate())} ${pad(t.getHours())}`,
  daily: (t) => `${t.getFullYear()}-${pad(t.getMonth() + 1)}-${pad(t.getDate())}`,
  weekly: isoWeek,
  monthly: (t) => `${t.getFullYear()}-${pad(t.getMonth() + 1)}`,
  yearly: (t) => String(t.getFullYear()),
};

/** The calendar bucket (local time) of `t`: "2026-11" for monthly, "2026-W48" for weekly, "2026-11-30" for daily. */
export function bucketOf(kind: keyof typeof BUCKETS, t: Date): string {
  return BUCKETS[kind](t);
}

export function isEmpty(p: Policy): boolean {
  return Object.entries(p).every(([k, v]) => k === 'minKeep' || v === undefined || v === 0);
}

/**
 * Decides every snapshot (any order in, newest first out). Counts of -1 mean "all".
 */
export function applyPolicy(snaps: Snap[], p: Policy): Decision[] {
  const list = [...snaps].sort((a, b) => b.time.getTime() - a.time.getTime() || (a.name < b.name ? 1 : -1));
  const out: Decision[] = list.map((s) => ({ name: s.name, time: s.time, keep: false, reasons: [] }));
  if (out.length === 0) return out;
  if (isEmpty(p)) {
    for (const d of out) {
      d.keep = true;
      d.reasons.push('no policy: everything is kept');
    }
    return out;
  }
  const keep = (i: number, why: string) => {
    out[i]!.keep = true;
    out[i]!.reasons.push(why);
  };
  if (p.keepLast !== undefined) {
    for (let i = 0; i < out.length && (p.keepLast < 0 || i < p.keepLast); i++) keep(i, 'last snapshot');
  }
  const counted: [number | undefined, keyof typeof BUCKETS][] = [
    [p.keepHourly, 'hourly'],
    [p.keepDaily, 'daily'],
    [p.keepWeekly, 'weekly'],
    [p.keepMonthly, 'monthly'],
    [p.keepYearly, 'yearly'],
  ];
  for (const [n, kind] of counted) {
    if (!n) continue;
    let left = n;
    let last: string | null = null;
    for (let i = 0; i < out.length && (left !== 0); i++) {
      const b = BUCKETS[kind](out[i]!.time);
      if (b === last) continue;
      last = b;
      keep(i, `${kind} snapshot`);
      if (left > 0) left--;
    }
  }
  const newest = out[0]!.time;
  if (p.keepWithin) {
    const from = subtract(newest, p.keepWithin);
    for (let i = 0; i < out.length; i++) if (out[i]!.time.getTime() > from.getTime()) keep(i, `within ${p.keepWithin.text}`); // strictly after, as restic
  }
  const within: [Duration | undefined, keyof typeof BUCKETS][] = [
    [p.keepWithinHourly, 'hourly'],
    [p.keepWithinDaily, 'daily'],
    [p.keepWithinWeekly, 'weekly'],
    [p.keepWithinMonthly, 'monthly'],
    [p.keepWithinYearly, 'yearly'],
  ];
  for (const [d, kind] of within) {
    if (!d) continue;
    const from = subtract(newest, d).getTime();
    let last: string | null = null;
    for (let i = 0; i < out.length; i++) {
      if (out[i]!.time.getTime() <= from) break;
      const b = BUCKETS[kind](out[i]!.time);
      if (b === last) continue;
      last = b;
      keep(i, `${kind} within ${d.text}`);
    }
  }
  if (!out[0]!.keep) keep(0, 'the newest snapshot');
  if (p.minKeep) {
    let kept = out.filter((d) => d.keep).length;
    for (let i = 0; i < out.length && kept < p.minKeep; i++) {
      if (out[i]!.keep) continue;
      keep(i, `min_keep ${p.minKeep}`);
      kept++;
    }
  }
  for (const d of out) if (!d.keep) d.reasons.push('no rule keeps it');
  return out;
}
