/** Times in the impl are "seconds.nanoseconds" strings: exact, and readable with jq. */
export function formatNs(ns: bigint): string {
  const neg = ns < 0n;
  const abs = neg ? -ns : ns;
  const s = abs / 1_000_000_000n;
  const f = abs % 1_000_000_000n;
  return `${neg ? '-' : ''}${s}.${f.toString().padStart(9, '0')}`;
}

export function parseNs(s: string): bigint | null {
  const m = /^(-?)(\d{1,15})\.(\d{9})$/.exec(s);
  if (!m) return null;
  const v = BigInt(m[2]!) * 1_000_000_000n + BigInt(m[3]!);
  return m[1] ? -v : v;
}

/** [seconds, nanoseconds] for utimensat. */
export function splitNs(ns: bigint): [number, number] {
  let s = ns / 1_000_000_000n;
  let f = ns % 1_000_000_000n;
  if (f < 0n) {
    f += 1_000_000_000n;
    s -= 1n;
  }
  return [Number(s), Number(f)];
}
