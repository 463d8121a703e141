/**
 * Times are kept as "<seconds>.<nanoseconds>" strings, the two fields of a timespec with the
 * nanoseconds always 9 digits ("1714000000.123456789"; "-1.500000000" is half a second before
 * the epoch). Exact, readable with jq, compared with ===, and cheap: no BigInt per entry.
 */
export type NsTime = string;

const RE = /^-?\d{1,15}\.\d{9}$/;

export function nsTime(sec: number, nsec: number): NsTime {
  const n = String(nsec);
  return `${sec}.${n.length === 9 ? n : '000000000'.slice(n.length) + n}`;
}

export function fromBigNs(ns: bigint): NsTime {
  let s = ns / 1_000_000_000n;
  let f = ns % 1_000_000_000n;
  if (f < 0n) {
    f += 1_000_000_000n;
    s -= 1n;
  }
  return nsTime(Number(s), Number(f));
}

export function isNsTime(s: unknown): s is NsTime {
  return typeof s === 'string' && RE.test(s);
}

/**
 * Whether `t` is (sec, nsec), and its two fields, read without allocating (these run once per
 * copied file). A malformed `t` equals nothing.
 */
export function nsTimeIs(t: NsTime, sec: number, nsec: number): boolean {
  return nsSec(t) === sec && nsNsec(t) === nsec;
}

export function nsSec(t: NsTime): number {
  const neg = t.charCodeAt(0) === 45;
  let v = 0;
  for (let i = neg ? 1 : 0; ; i++) {
    const c = t.charCodeAt(i);
    if (c === 46) return neg ? -v : v;
    if (!(c >= 48 && c <= 57)) return NaN;
    v = v * 10 + (c - 48);
  }
}

export function nsNsec(t: NsTime): number {
  const dot = t.indexOf('.');
  if (dot < 0 || t.length - dot !== 10) return NaN;
  let v = 0;
  for (let i = dot + 1; i < t.length; i++) {
    const c = t.charCodeAt(i);
    if (!(c >= 48 && c <= 57)) return NaN;
    v = v * 10 + (c - 48);
  }
  return v;
}

/** [seconds, nanoseconds] for utimensat. */
export function splitNs(t: NsTime): [number, number] {
  return [nsSec(t), nsNsec(t)];
}

/** Whole seconds (what SFTP v3 keeps), same format. */
export function truncateToSeconds(t: NsTime): NsTime {
  return `${t.slice(0, t.indexOf('.'))}.000000000`;
}
