import type { BakkerEvent, Progress } from '../engine/events.js';
import { display } from '../util/bpath.js';
import { bytes, count } from './format.js';

/**
 * Renders engine events: JSON lines on stdout with --json, else text (results on stdout,
 * warnings on stderr), plus a live progress line on a terminal that the run never waits for.
 */
/**
 * A syslog priority prefix ("<4>") when the output goes to the journal (systemd sets
 * JOURNAL_STREAM for a service's stdout/stderr): journald files the line at that level.
 */
export function journal(level: 3 | 4 | 6): string {
  return process.env.JOURNAL_STREAM ? `<${level}>` : '';
}

export class Output {
  private timer: NodeJS.Timeout | undefined;
  private lineShown = false;
  warnings = 0;

  constructor(
    readonly json: boolean,
    private readonly out: NodeJS.WritableStream = process.stdout,
    private readonly err: NodeJS.WritableStream & { isTTY?: boolean; columns?: number } = process.stderr,
  ) {}

  emit = (ev: BakkerEvent): void => {
    if (ev.event === 'warning') this.warnings++;
    if (this.json) {
      this.out.write(JSON.stringify(ev) + '\n');
      return;
    }
    switch (ev.event) {
      case 'warning':
        this.errLine(`${journal(4)}warning: ${ev.path ? `${ev.path}: ` : ''}${ev.message}`);
        break;
      case 'info':
        this.errLine(ev.message);
        break;
      case 'error':
        this.errLine(`${journal(3)}bakker: target ${ev.target}: ${ev.message}`);
        break;
      case 'problem':
        this.line(`problem: ${ev.snapshot}${ev.path ? ` ${ev.path}` : ''}: ${ev.message}`);
        break;
      case 'archive':
        this.line(ev.message);
        break;
      case 'entry':
        this.line(`${ev.change} ${ev.path}`);
        break;
      default:
        break;
    }
  };

  /** Text output line (suppressed with --json, where the summary object carries it). */
  line(s: string): void {
    if (this.json) return;
    this.clearProgress();
    this.out.write(s + '\n');
  }

  private errLine(s: string): void {
    this.clearProgress();
    this.err.write(s + '\n');
  }

  summary(obj: Record<string, unknown>): void {
    if (this.json) this.out.write(JSON.stringify({ event: 'summary', ...obj }) + '\n');
  }

  startProgress(p: Progress, what: string): void {
    if (this.json || !this.err.isTTY) return;
    const t0 = Date.now();
    this.timer = setInterval(() => {
      const secs = (Date.now() - t0) / 1000;
      const rate = secs > 0 ? p.bytesCopied / secs : 0;
      const cur = p.current ? display(p.current) : '';
      let s = `${what} ${p.phase}: ${count(p.entries)} entries, ${count(p.linked)} linked, ${count(p.copied)} copied, ${bytes(p.bytesCopied)} (${bytes(rate)}/s) ${cur}`;
      const cols = (this.err.columns ?? 100) - 1;
      if (s.length > cols) s = s.slice(0, cols);
      this.err.write(`\r\x1b[K${s}`);
      this.lineShown = true;
    }, 250);
    this.timer.unref();
  }

  stopProgress(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.clearProgress();
  }

  private clearProgress(): void {
    if (this.lineShown) {
      this.err.write('\r\x1b[K');
      this.lineShown = false;
    }
  }
}
