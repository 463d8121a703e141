import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { BakkerError } from '../../errors.js';
import type { ViewConfig } from '../../config/job-config.js';
import type { Emit } from '../events.js';

/**
 * A consistent view of the sources (docs/VIEWS.md): a snapshot of the volume they live on,
 * taken while the services are quiet, read at leisure, then removed. Every step is a plain
 * command (lvcreate/mount/umount/lvremove, btrfs subvolume snapshot/delete), and release() undoes
 * whatever part exists, so it serves for cleanup after a failure and after a crash alike.
 */
export interface View {
  readonly kind: 'lvm' | 'btrfs';
  /** Where the sources' volume is normally seen: a source under it is read from the view. */
  readonly origin: string;
  /** What the impl header and the summary say about it. */
  readonly info: Record<string, string>;
  /** Takes the snapshot (the services may be in maintenance meanwhile: quick). */
  snapshot(): Promise<void>;
  /** Makes the snapshot readable (mounted read-only); returns where the origin's content is in it. */
  open(): Promise<string>;
  /** Unmounts and removes whatever of the snapshot exists; returns what could not be undone, or null. */
  release(emit: Emit): string | null;
  /** Whether anything of a snapshot (a mount, the snapshot itself) exists now. */
  leftOver(): boolean;
  /** Folders under the origin to leave out (the view's own, when it lives there). */
  readonly skip: string[];
}

function run(cmd: string, args: string[]): { ok: boolean; out: string; err: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.error) return { ok: false, out: '', err: `cannot run ${cmd}: ${(r.error as NodeJS.ErrnoException).code ?? r.error.message}` };
  return { ok: r.status === 0, out: r.stdout, err: (r.stderr || r.stdout || '').trim().split('\n').filter(Boolean).pop() ?? `exit code ${r.status}` };
}

function must(cmd: string, args: string[], what: string): string {
  const r = run(cmd, args);
  if (!r.ok) throw new BakkerError('VIEW', `${what}: ${cmd} ${args.join(' ')} failed: ${r.err}`);
  return r.out;
}

const isMountPoint = (dir: string) => spawnSync('mountpoint', ['-q', dir]).status === 0;

/** Snapshot names: one per job, so a crashed run's is found again. */
export function snapshotName(job: string): string {
  return `bakker-${job.replace(/[^A-Za-z0-9+_.-]/g, '_')}-view`;
}

class LvmView implements View {
  readonly kind = 'lvm';
  readonly skip: string[] = [];
  private readonly vg: string;
  private readonly lv: string;
  constructor(
    private readonly cfg: Extract<ViewConfig, { type: 'lvm' }>,
    private readonly name: string,
  ) {
    [this.vg, this.lv] = cfg.volume.split('/') as [string, string];
  }

  get origin(): string {
    return this.cfg.origin;
  }

  get info(): Record<string, string> {
    return { type: 'lvm', volume: this.cfg.volume, snapshot: `${this.vg}/${this.name}`, mount: this.cfg.mount };
  }

  private exists(): boolean {
    return run('lvs', ['--noheadings', '-o', 'lv_name', `${this.vg}/${this.name}`]).ok;
  }

  async snapshot(): Promise<void> {
    const sizeArgs = this.cfg.size.includes('%') ? ['-l', this.cfg.size] : ['-L', this.cfg.size];
    must('lvcreate', ['-y', '-s', '-n', this.name, ...sizeArgs, `${this.vg}/${this.lv}`], 'taking the LVM snapshot');
  }

  async open(): Promise<string> {
    const device = must('lvs', ['--noheadings', '-o', 'lv_path', `${this.vg}/${this.name}`], 'finding the snapshot').trim();
    const fstype = run('blkid', ['-o', 'value', '-s', 'TYPE', device]).out.trim();
    // XFS refuses a second mount of the same UUID (the origin is mounted): nouuid.
    const options = ['ro', ...(fstype === 'xfs' ? ['nouuid'] : []), ...this.cfg.mountOptions.filter((o) => o !== 'ro' && !(fstype === 'xfs' && o === 'nouuid'))];
    fs.mkdirSync(this.cfg.mount, { recursive: true, mode: 0o700 });
    must('mount', ['-o', options.join(','), device, this.cfg.mount], 'mounting the snapshot read-only');
    return this.cfg.mount;
  }

  leftOver(): boolean {
    return isMountPoint(this.cfg.mount) || this.exists();
  }

  release(emit: Emit): string | null {
    const problems: string[] = [];
    if (isMountPoint(this.cfg.mount)) {
      const u = run('umount', [this.cfg.mount]);
      if (!u.ok) problems.push(`umount ${this.cfg.mount}: ${u.err}`);
    }
    if (problems.length === 0 && this.exists()) {
      const r = run('lvremove', ['-y', `${this.vg}/${this.name}`]);
      if (!r.ok) problems.push(`lvremove ${this.vg}/${this.name}: ${r.err}`);
      else emit({ event: 'info', message: `removed the snapshot ${this.vg}/${this.name}` });
    }
    if (problems.length === 0) {
      try {
        fs.rmdirSync(this.cfg.mount);
      } catch {
        // not there, or not empty (then it is not ours to remove)
      }
    }
    return problems.length ? problems.join('; ') : null;
  }
}

class BtrfsView implements View {
  readonly kind = 'btrfs';
  private readonly at: string;
  constructor(
    private readonly cfg: Extract<ViewConfig, { type: 'btrfs' }>,
    name: string,
  ) {
    this.at = path.join(cfg.snapshotDir, name);
  }

  get origin(): string {
    return this.cfg.subvolume;
  }

  get info(): Record<string, string> {
    return { type: 'btrfs', subvolume: this.cfg.subvolume, snapshot: this.at };
  }

  get skip(): string[] {
    const d = this.cfg.snapshotDir;
    return d === this.cfg.subvolume || d.startsWith(`${this.cfg.subvolume}/`) ? [d] : [];
  }

  async snapshot(): Promise<void> {
    fs.mkdirSync(this.cfg.snapshotDir, { recursive: true, mode: 0o700 });
    must('btrfs', ['subvolume', 'snapshot', '-r', this.cfg.subvolume, this.at], 'taking the btrfs snapshot');
  }

  async open(): Promise<string> {
    return this.at; // a read-only snapshot is readable where it is
  }

  leftOver(): boolean {
    return fs.existsSync(this.at);
  }

  release(emit: Emit): string | null {
    if (!fs.existsSync(this.at)) return null;
    const r = run('btrfs', ['subvolume', 'delete', this.at]);
    if (!r.ok) return `btrfs subvolume delete ${this.at}: ${r.err}`;
    emit({ event: 'info', message: `removed the snapshot ${this.at}` });
    return null;
  }
}

export function makeView(cfg: ViewConfig, job: string): View {
  const name = snapshotName(job);
  return cfg.type === 'lvm' ? new LvmView(cfg, name) : new BtrfsView(cfg, name);
}
