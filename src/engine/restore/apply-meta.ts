import fs from 'node:fs';
import { errMessage } from '../../errors.js';
import type { Entry } from '../../manifest/entry.js';
import { splitNs } from '../../manifest/time.js';
import { native } from '../../native.js';
import { ACL_ACCESS, ACL_DEFAULT, mapAclIds, textToAcl } from '../../scan/acl.js';
import type { IdNames } from '../../scan/ids.js';

export interface MetaContext {
  ids: IdNames;
  numericIds: boolean;
  canChown: boolean;
  warn: (path: Buffer, message: string) => void;
}

export function ownerOf(e: Entry, ctx: MetaContext): [number, number] {
  if (ctx.numericIds) return [e.uid, e.gid];
  const uid = e.user !== undefined ? ctx.ids.uidOf(e.user) : undefined;
  const gid = e.group !== undefined ? ctx.ids.gidOf(e.group) : undefined;
  return [uid ?? e.uid, gid ?? e.gid];
}

/**
 * Puts an entry's metadata back on `p` (which restore created itself) in the order that keeps
 * each step: owner (clears setuid and capabilities), mode, ACLs (they rewrite the group bits as
 * the mask, which the mode already matches), other xattrs, then times. Synchronous: each is one
 * quick system call, cheaper on this thread than a hop to the thread pool and back.
 */
export function applyMeta(p: Buffer, e: Entry, ctx: MetaContext): void {
  const isLink = e.type === 'symlink';
  if (ctx.canChown) {
    const [uid, gid] = ownerOf(e, ctx);
    fs.lchownSync(p, uid, gid);
  }
  if (!isLink) fs.chmodSync(p, e.mode);
  // ACL entries naming users or groups follow their names, as the owner does (unless --numeric-ids).
  const acl = (t: string) => textToAcl(e.aclNames !== undefined && !ctx.numericIds ? mapAclIds(t, e.aclNames, ctx.ids) : t);
  if (e.acl !== undefined) setX(p, ACL_ACCESS, acl(e.acl), e, ctx);
  if (e.dacl !== undefined) setX(p, ACL_DEFAULT, acl(e.dacl), e, ctx);
  if (e.xattrs) for (const [k, v] of e.xattrs) setX(p, k, v, e, ctx);
  const [s, ns] = splitNs(e.mtime);
  native.utimens(p, s, ns, s, ns);
}

function setX(p: Buffer, name: string, value: Buffer, e: Entry, ctx: MetaContext): void {
  try {
    native.setXattr(p, name, value);
  } catch (err) {
    ctx.warn(e.path, `cannot restore ${name}: ${errMessage(err)}`);
  }
}
