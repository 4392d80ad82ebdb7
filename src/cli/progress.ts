/**
 * A one-line progress bar on stderr. Drawn only when stderr is a terminal and there is more than
 * one item, so piped output and logs stay clean; stdout is never touched.
 */
import type { OutStream } from './io.ts';

export class Progress {
  private done = 0;
  private failed = 0;
  private lastDraw = 0;
  private readonly start = Date.now();
  readonly enabled: boolean;

  constructor(
    private readonly total: number,
    private readonly stream: OutStream,
    private readonly label = '',
    enabled?: boolean,
  ) {
    this.enabled = enabled ?? (stream.isTTY === true && total > 1);
  }

  tick(n = 1, failed = 0): void {
    this.done += n;
    this.failed += failed;
    const now = Date.now();
    if (this.enabled && (now - this.lastDraw > 100 || this.done >= this.total)) {
      this.lastDraw = now;
      this.stream.write(`\r${this.line(now)}`);
    }
  }

  line(now = Date.now()): string {
    const width = Math.max(10, Math.min(30, (this.stream.columns ?? 80) - 60));
    const frac = this.total === 0 ? 1 : this.done / this.total;
    const fill = Math.round(frac * width);
    const secs = (now - this.start) / 1000;
    const rate = secs > 0 ? this.done / secs : 0;
    const eta = rate > 0 ? Math.ceil((this.total - this.done) / rate) : 0;
    const failed = this.failed > 0 ? `, ${this.failed} failed` : '';
    return `${this.label}[${'#'.repeat(fill)}${'-'.repeat(width - fill)}] ${this.done}/${this.total} ${rate.toFixed(1)} img/s eta ${eta}s${failed}  `;
  }

  /** Erases the bar so later stderr lines start clean. */
  finish(): void {
    if (this.enabled) this.stream.write(`\r${' '.repeat(this.line().length)}\r`);
  }
}
