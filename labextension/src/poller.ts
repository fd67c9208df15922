/**
 * Polling with backoff, with the clock injected so it is testable. The delay is short while a
 * run is in progress, grows while nothing changes, and grows faster after failures; a change
 * (or a user action calling `now()`) brings it back to the start.
 */

export interface IBackoffOptions {
  /** Delay while something is running (ms). */
  activeMs: number;
  /** First delay while idle (ms). */
  idleMs: number;
  /** Factor applied to the idle delay after each poll that found nothing new. */
  idleFactor: number;
  /** Factor applied per consecutive failure. */
  errorFactor: number;
  /** No delay is longer (ms). */
  maxMs: number;
  /** A poll not answered by then counts as failed, so a request that hangs never stops the
   * polling (ms). */
  timeoutMs?: number;
}

export const DEFAULT_BACKOFF: IBackoffOptions = {
  activeMs: 2000,
  idleMs: 5000,
  idleFactor: 1.5,
  errorFactor: 2,
  maxMs: 60000,
  timeoutMs: 30000
};

export interface IPollState {
  /** A run is initial or running: poll fast. */
  active: boolean;
  /** Polls in a row that saw no change. */
  unchanged: number;
  /** Polls in a row that failed. */
  failures: number;
}

/** The delay before the next poll, in ms (pure). */
export function nextDelay(state: IPollState, options: IBackoffOptions = DEFAULT_BACKOFF): number {
  let delay: number;
  if (state.failures > 0) {
    const base = state.active ? options.activeMs : options.idleMs;
    delay = base * Math.pow(options.errorFactor, state.failures);
  } else if (state.active) {
    delay = options.activeMs;
  } else {
    delay = options.idleMs * Math.pow(options.idleFactor, state.unchanged);
  }
  return Math.min(Math.round(delay), options.maxMs);
}

export interface ITimer {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

const globalTimer: ITimer = {
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: handle => clearTimeout(handle as ReturnType<typeof setTimeout>)
};

/** What one poll reports back. */
export interface IPollResult {
  active: boolean;
  changed: boolean;
}

export class Poller {
  private handle: unknown = null;
  private running = false;
  /** `now()` came while a poll was in flight: poll again as soon as it ends (its answer may
   * predate what the user just did). */
  private pending = false;
  private stopped = true;
  readonly state: IPollState = { active: false, unchanged: 0, failures: 0 };
  /** The delay chosen after the last poll (ms). */
  lastDelay = 0;

  constructor(
    private readonly poll: () => Promise<IPollResult>,
    private readonly options: IBackoffOptions = DEFAULT_BACKOFF,
    private readonly timer: ITimer = globalTimer
  ) {}

  get isStopped(): boolean {
    return this.stopped;
  }

  /** Start polling (the first poll after `initialMs`). */
  start(initialMs = 0): void {
    this.stopped = false;
    this.arm(initialMs);
  }

  stop(): void {
    this.stopped = true;
    this.clear();
  }

  /** Poll at once and reset the backoff (a user action happened). */
  now(): void {
    this.state.unchanged = 0;
    this.state.failures = 0;
    if (this.running) {
      this.pending = true;
    } else if (!this.stopped) {
      this.arm(0);
    }
  }

  private clear(): void {
    if (this.handle !== null) {
      this.timer.clearTimeout(this.handle);
      this.handle = null;
    }
  }

  private arm(ms: number): void {
    this.clear();
    this.handle = this.timer.setTimeout(() => {
      this.handle = null;
      void this.tick();
    }, ms);
  }

  /** One poll, then the next one armed. Exposed for tests. */
  async tick(): Promise<void> {
    if (this.running) {
      this.pending = true;
      return;
    }
    this.running = true;
    this.pending = false;
    let timer: unknown = null;
    try {
      const answer = this.poll();
      const limit = this.options.timeoutMs;
      const result = limit
        ? await Promise.race([
            answer,
            new Promise<never>((_, reject) => {
              timer = this.timer.setTimeout(
                () => reject(new Error(`no answer in ${Math.round(limit / 1000)} s`)),
                limit
              );
            })
          ])
        : await answer;
      this.state.failures = 0;
      this.state.active = result.active;
      this.state.unchanged = result.changed ? 0 : this.state.unchanged + 1;
    } catch {
      this.state.failures += 1;
    } finally {
      if (timer !== null) {
        this.timer.clearTimeout(timer);
      }
      this.running = false;
    }
    this.lastDelay = this.pending ? 0 : nextDelay(this.state, this.options);
    this.pending = false;
    if (!this.stopped) {
      this.arm(this.lastDelay);
    }
  }
}
