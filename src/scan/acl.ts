/**
 * POSIX ACLs as the kernel stores them in system.posix_acl_access / _default (version 2,
 * then 8-byte entries: u16 tag, u16 perm, u32 id), converted to and from the short text form
 * getfacl prints with numeric ids: "user::rw-,user:1000:r--,group::r-x,mask::r-x,other::---".
 */
const TAGS: [number, string][] = [
  [0x01, 'user'], // USER_OBJ
  [0x02, 'user'], // USER (with id)
  [0x04, 'group'], // GROUP_OBJ
  [0x08, 'group'], // GROUP (with id)
  [0x10, 'mask'],
  [0x20, 'other'],
];
const WITH_ID = new Set([0x02, 0x08]);
const VERSION = 2;

function perm(p: number): string {
  return (p & 4 ? 'r' : '-') + (p & 2 ? 'w' : '-') + (p & 1 ? 'x' : '-');
}

export function aclToText(b: Buffer): string | null {
  if (b.length < 4 || (b.length - 4) % 8 !== 0 || b.readUInt32LE(0) !== VERSION) return null;
  const parts: string[] = [];
  for (let off = 4; off < b.length; off += 8) {
    const tag = b.readUInt16LE(off);
    const p = b.readUInt16LE(off + 2);
    const id = b.readUInt32LE(off + 4);
    const name = TAGS.find(([t]) => t === tag)?.[1];
    if (!name) return null;
    parts.push(`${name}:${WITH_ID.has(tag) ? String(id) : ''}:${perm(p)}`);
  }
  return parts.join(',');
}

export function textToAcl(text: string): Buffer {
  const items = text.split(',');
  const out = Buffer.alloc(4 + 8 * items.length);
  out.writeUInt32LE(VERSION, 0);
  items.forEach((item, i) => {
    const m = /^(user|group|mask|other):(\d*):([r-])([w-])([x-])$/.exec(item);
    if (!m) throw new Error(`bad ACL entry "${item}"`);
    const [, kind, id, r, w, x] = m;
    const tag =
      kind === 'user' ? (id ? 0x02 : 0x01) : kind === 'group' ? (id ? 0x08 : 0x04) : kind === 'mask' ? 0x10 : 0x20;
    const p = (r === 'r' ? 4 : 0) | (w === 'w' ? 2 : 0) | (x === 'x' ? 1 : 0);
    const off = 4 + 8 * i;
    out.writeUInt16LE(tag, off);
    out.writeUInt16LE(p, off + 2);
    out.writeUInt32LE(id ? Number(id) : 0xffffffff, off + 4);
  });
  return out;
}

export const ACL_ACCESS = 'system.posix_acl_access';
export const ACL_DEFAULT = 'system.posix_acl_default';

/** The users and groups an ACL text names by id ("user:1000:r--"): [kind, id] pairs. */
function qualifiers(text: string): ['u' | 'g', number][] {
  const out: ['u' | 'g', number][] = [];
  for (const m of text.matchAll(/(?:^|,)(user|group):(\d+):/g)) out.push([m[1] === 'user' ? 'u' : 'g', Number(m[2])]);
  return out;
}

/** "u:1000=alice,g:1001=devs" for the ids of these ACLs that have names here; undefined when none. */
export function aclNamesOf(texts: (string | undefined)[], ids: { user(uid: number): string | undefined; group(gid: number): string | undefined }): string | undefined {
  const seen = new Map<string, string>();
  for (const t of texts) {
    if (t === undefined) continue;
    for (const [k, id] of qualifiers(t)) {
      const name = k === 'u' ? ids.user(id) : ids.group(id);
      if (name !== undefined && !/[,=]/.test(name)) seen.set(`${k}:${id}`, name);
    }
  }
  return seen.size ? [...seen].map(([k, n]) => `${k}=${n}`).join(',') : undefined;
}

/**
 * An ACL text with its ids mapped by name to this host's ids (restore without --numeric-ids):
 * an id whose recorded name is known here becomes that name's id; any other id stays.
 */
export function mapAclIds(text: string, names: string, ids: { uidOf(name: string): number | undefined; gidOf(name: string): number | undefined }): string {
  const byKey = new Map(names.split(',').map((p) => [p.slice(0, p.indexOf('=')), p.slice(p.indexOf('=') + 1)] as const));
  return text.replace(/(^|,)(user|group):(\d+):/g, (all, lead: string, kind: string, id: string) => {
    const name = byKey.get(`${kind === 'user' ? 'u' : 'g'}:${id}`);
    const local = name === undefined ? undefined : kind === 'user' ? ids.uidOf(name) : ids.gidOf(name);
    return local === undefined ? all : `${lead}${kind}:${local}:`;
  });
}
