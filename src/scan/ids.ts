import fs from 'node:fs';

/**
 * User and group names from /etc/passwd and /etc/group (read once). NSS sources such as LDAP
 * are not consulted: a missing name is simply not recorded, and the numeric id still is.
 */
export class IdNames {
  private users?: Map<number, string>;
  private groups?: Map<number, string>;
  private userIds?: Map<string, number>;
  private groupIds?: Map<string, number>;

  constructor(private readonly etc = '/etc') {}

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
    return this.users.get(uid);
  }

  group(gid: number): string | undefined {
    if (!this.groups) [this.groups, this.groupIds] = this.load('group');
    return this.groups.get(gid);
  }

  uidOf(name: string): number | undefined {
    if (!this.userIds) [this.users, this.userIds] = this.load('passwd');
    return this.userIds.get(name);
  }

  gidOf(name: string): number | undefined {
    if (!this.groupIds) [this.groups, this.groupIds] = this.load('group');
    return this.groupIds.get(name);
  }
}
