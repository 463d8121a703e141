import { spawnSync } from 'node:child_process';
import fs from 'node:fs';

/** After this many ids or names no NSS source knew, stop asking (a tree of container uid ranges). */
const MAX_MISSES = 32;

/**
 * User and group names: /etc/passwd and /etc/group (read once), then, for an id or name not
 * there, the other sources /etc/nsswitch.conf lists for it (LDAP, SSSD, systemd's dynamic users,
 * extrausers...) through `getent`, once per id or name (cached, misses too; at most 32 misses).
 * A name no source knows is not recorded; the numeric id always is.
 */
export class IdNames {
  private users?: Map<number, string>;
  private groups?: Map<number, string>;
  private userIds?: Map<string, number>;
  private groupIds?: Map<string, number>;
  private readonly asked = new Set<string>();
  private misses = 0;
  private nss?: { passwd: boolean; group: boolean };

  constructor(
    private readonly etc = '/etc',
    private readonly getent = 'getent',
  ) {}

  /** Whether nsswitch.conf lists a source other than files for the database. */
  private other(db: 'passwd' | 'group'): boolean {
    if (!this.nss) {
      let text = '';
      try {
        text = fs.readFileSync(`${this.etc}/nsswitch.conf`, 'utf8');
      } catch {
        text = '';
      }
      const sources = (name: string) => (new RegExp(`^${name}:\\s*(.*)$`, 'm').exec(text)?.[1] ?? '').replace(/\[[^\]]*\]/g, ' ').split(/\s+/).filter((x) => x && x !== 'files' && x !== 'compat');
      this.nss = { passwd: sources('passwd').length > 0, group: sources('group').length > 0 };
    }
    return this.nss[db];
  }

  /** `getent db key` through the NSS sources: [name, id], or null. */
  private ask(db: 'passwd' | 'group', key: string): [string, number] | null {
    const k = `${db}:${key}`;
    if (this.asked.has(k) || this.misses >= MAX_MISSES || !this.other(db)) return null;
    this.asked.add(k);
    const r = spawnSync(this.getent, [db, key], { encoding: 'utf8', timeout: 5000 });
    const f = r.status === 0 ? r.stdout.split('\n')[0]!.split(':') : [];
    const id = Number(f[2]);
    if (f.length < 3 || !f[0] || !Number.isInteger(id)) {
      this.misses++;
      return null;
    }
    return [f[0], id];
  }

  private learn(db: 'passwd' | 'group', hit: [string, number] | null): void {
    if (!hit) return;
    const [byId, byName] = db === 'passwd' ? [this.users!, this.userIds!] : [this.groups!, this.groupIds!];
    if (!byId.has(hit[1])) byId.set(hit[1], hit[0]);
    if (!byName.has(hit[0])) byName.set(hit[0], hit[1]);
  }

  private load(file: string): [Map<number, string>, Map<string, number>] {
    const byId = new Map<number, string>();
    const byName = new Map<string, number>();
    let text = '';
    try {
      text = fs.readFileSync(`${this.etc}/${file}`, 'utf8');
    } catch {
      return [byId, byName];
    }
    for (const line of text.split('\n')) {
      const f = line.split(':');
      if (f.length < 3 || !f[0] || line.startsWith('#')) continue;
      const id = Number(f[2]);
      if (!Number.isInteger(id)) continue;
      if (!byId.has(id)) byId.set(id, f[0]);
      if (!byName.has(f[0])) byName.set(f[0], id);
    }
    return [byId, byName];
  }

  user(uid: number): string | undefined {
    if (!this.users) [this.users, this.userIds] = this.load('passwd');
    if (!this.users.has(uid)) this.learn('passwd', this.ask('passwd', String(uid)));
    return this.users.get(uid);
  }

  group(gid: number): string | undefined {
    if (!this.groups) [this.groups, this.groupIds] = this.load('group');
    if (!this.groups.has(gid)) this.learn('group', this.ask('group', String(gid)));
    return this.groups.get(gid);
  }

  uidOf(name: string): number | undefined {
    if (!this.userIds) [this.users, this.userIds] = this.load('passwd');
    if (!this.userIds.has(name)) this.learn('passwd', this.ask('passwd', name));
    return this.userIds.get(name);
  }

  gidOf(name: string): number | undefined {
    if (!this.groupIds) [this.groups, this.groupIds] = this.load('group');
    if (!this.groupIds.has(name)) this.learn('group', this.ask('group', name));
    return this.groupIds.get(name);
  }
}
