/**
 * Wall-clock times in IANA time zones, without a library: `Intl.DateTimeFormat` knows every
 * zone's offsets, and the rest is arithmetic. The one implementation the schedule form, the
 * backfill form and the run timeline share.
 *
 * A wall time is what a clock in the zone shows (`2024-03-31T02:30`); an instant is a point on
 * the UTC time line (milliseconds since the epoch). Going from wall time to instant is not
 * always one-to-one, and every caller resolves it the same way, the way Python's `zoneinfo`
 * does with `fold=0` (and Temporal's `"compatible"`), so the browser and the server agree:
 *
 * - a wall time skipped by a spring-forward change (a DST gap) moves forward by the gap
 *   (02:30 on the night Berlin jumps from 02:00 to 03:00 is 03:30 summer time);
 * - a wall time that happens twice (a DST overlap, when clocks go back) is the earlier one
 *   (02:30 on the night Berlin goes from 03:00 back to 02:00 is 02:30 summer time, +02:00).
 */

/** A wall-clock time: the fields a clock in some zone shows. */
export interface IWall {
  year: number;
  /** 1..12 */
  month: number;
  day: number;
  hour: number;
  minute: number;
  second: number;
}

const DAY_MS = 86400000;

/** `n` as text, zero-padded to `width` digits (`pad(7)` → `07`). */
export function pad(n: number, width = 2): string {
  return String(n).padStart(width, '0');
}

/** The wall time's fields read as UTC, in milliseconds since the epoch. */
export function wallMs(wall: IWall): number {
  const d = new Date(0);
  // setUTCFullYear, unlike Date.UTC, does not map years 0..99 onto 1900..1999.
  d.setUTCFullYear(wall.year, wall.month - 1, wall.day);
  d.setUTCHours(wall.hour, wall.minute, wall.second, 0);
  return d.getTime();
}

/** The UTC wall time of an instant (the inverse of `wallMs`). */
export function wallOfUtc(ms: number): IWall {
  const d = new Date(ms);
  return {
    year: d.getUTCFullYear(),
    month: d.getUTCMonth() + 1,
    day: d.getUTCDate(),
    hour: d.getUTCHours(),
    minute: d.getUTCMinutes(),
    second: d.getUTCSeconds()
  };
}

/** The same wall time `days` calendar days later (earlier when negative). */
export function addDays(wall: IWall, days: number): IWall {
  return wallOfUtc(wallMs(wall) + days * DAY_MS);
}

const WALL_RE = /^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?$/;

/**
 * `YYYY-MM-DDTHH:MM[:SS]` (what a datetime-local input holds; a space for the `T` is fine too)
 * as its parts, or null when it is not that or not a real date (2024-02-30, 25:00).
 */
export function parseWall(text: string): IWall | null {
  const m = WALL_RE.exec(text.trim());
  if (!m) {
    return null;
  }
  const wall: IWall = {
    year: Number(m[1]),
    month: Number(m[2]),
    day: Number(m[3]),
    hour: Number(m[4]),
    minute: Number(m[5]),
    second: m[6] ? Number(m[6]) : 0
  };
  // A date that does not round-trip (2024-02-30 rolls into March) is not real.
  const d = wallOfUtc(wallMs(wall));
  if (
    d.year !== wall.year ||
    d.month !== wall.month ||
    d.day !== wall.day ||
    wall.hour > 23 ||
    wall.minute > 59 ||
    wall.second > 59
  ) {
    return null;
  }
  return wall;
}

/** A wall time as datetime-local text, `YYYY-MM-DDTHH:MM` (`:SS` only when not 0). */
export function formatWall(wall: IWall): string {
  const base =
    `${pad(wall.year, 4)}-${pad(wall.month)}-${pad(wall.day)}` +
    `T${pad(wall.hour)}:${pad(wall.minute)}`;
  return wall.second ? `${base}:${pad(wall.second)}` : base;
}

const formatters = new Map<string, Intl.DateTimeFormat>();

/** The (cached) formatter of a zone; throws RangeError for a zone the browser does not know. */
function zoneFormatter(timeZone: string): Intl.DateTimeFormat {
  let f = formatters.get(timeZone);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', {
      timeZone,
      hourCycle: 'h23',
      year: 'numeric',
      month: '2-digit',
      day: '2-digit',
      hour: '2-digit',
      minute: '2-digit',
      second: '2-digit'
    });
    formatters.set(timeZone, f);
  }
  return f;
}

/** True when this browser knows the zone (an IANA name such as `Europe/Berlin`, or `UTC`). */
export function isKnownTimeZone(timeZone: string): boolean {
  if (!timeZone) {
    return false;
  }
  try {
    zoneFormatter(timeZone);
    return true;
  } catch {
    return false;
  }
}

/** The zone when this browser knows it, else UTC (a schedule may name one the browser lacks). */
export function safeTimeZone(timeZone: string): string {
  return isKnownTimeZone(timeZone) ? timeZone : 'UTC';
}

/** The browser's IANA time zone, or 'UTC' when it cannot tell. */
export function browserTimezone(): string {
  try {
    const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    return zone || 'UTC';
  } catch {
    return 'UTC';
  }
}

/** The zone names the browser knows (for suggestions), or [] on older browsers. */
export function knownTimezones(): string[] {
  const intl = Intl as unknown as { supportedValuesOf?: (key: string) => string[] };
  try {
    return intl.supportedValuesOf ? intl.supportedValuesOf('timeZone') : [];
  } catch {
    return [];
  }
}

/** The wall-clock time in `timeZone` at the instant `ms` (UTC for a zone the browser lacks). */
export function wallInZone(ms: number, timeZone: string): IWall {
  const parts: Record<string, number> = {};
  for (const part of zoneFormatter(safeTimeZone(timeZone)).formatToParts(new Date(ms))) {
    if (part.type !== 'literal') {
      parts[part.type] = Number(part.value);
    }
  }
  return {
    year: parts.year,
    month: parts.month,
    day: parts.day,
    // Some engines still write midnight as 24, whatever the hour cycle.
    hour: parts.hour % 24,
    minute: parts.minute,
    second: parts.second
  };
}

/** Milliseconds `timeZone` is ahead of UTC at the instant `ms` (UTC for an unknown zone). */
export function offsetAt(ms: number, timeZone: string): number {
  // The formatter shows whole seconds: compare with the instant cut to whole seconds.
  const whole = Math.floor(ms / 1000) * 1000;
  return wallMs(wallInZone(whole, timeZone)) - whole;
}

function sameWall(a: IWall, b: IWall): boolean {
  return (
    a.year === b.year &&
    a.month === b.month &&
    a.day === b.day &&
    a.hour === b.hour &&
    a.minute === b.minute &&
    a.second === b.second
  );
}

/**
 * The instant of a wall time in a zone: a time in a DST gap moves forward by the gap, a time
 * in an overlap is the earlier instant (see the module's comment). Throws RangeError for a
 * zone this browser does not know (callers that would rather fall back pass `safeTimeZone`).
 */
export function instantOfWall(wall: IWall, timeZone: string): number {
  zoneFormatter(timeZone);
  const local = wallMs(wall);
  // The offsets a day either side: a zone changes its offset at most once in two days, so the
  // wall time is `local - before`, `local - after`, both (an overlap) or neither (a gap).
  const before = offsetAt(local - DAY_MS, timeZone);
  const after = offsetAt(local + DAY_MS, timeZone);
  const candidates = [local - before, local - after]
    .filter(ms => sameWall(wallInZone(ms, timeZone), wall))
    .sort((a, b) => a - b);
  if (candidates.length) {
    return candidates[0];
  }
  // A gap: read with the offset in force before it, which lands after it by the gap's length.
  return local - before;
}

/** `+01:00`, `-04:00`, `+05:30`: an offset of whole minutes as ISO-8601 writes it. */
export function formatOffset(minutes: number): string {
  const sign = minutes < 0 ? '-' : '+';
  const abs = Math.abs(minutes);
  return `${sign}${pad(Math.floor(abs / 60))}:${pad(abs % 60)}`;
}

/**
 * Datetime-local text, read as wall time in `timeZone`, as ISO-8601 with the zone's offset
 * at that instant (`2024-01-01T00:00:00+01:00`); null when the text is not a date and time.
 * A zone the browser does not know is read as UTC.
 */
export function wallToIso(text: string, timeZone: string): string | null {
  const wall = parseWall(text);
  if (!wall) {
    return null;
  }
  const zone = safeTimeZone(timeZone);
  const instant = instantOfWall(wall, zone);
  const offset = offsetAt(instant, zone);
  if (offset % 60000 !== 0) {
    // A historical offset of odd seconds (local mean time) has no ISO form: say it in UTC.
    return isoUtc(instant);
  }
  const shown = wallInZone(instant, zone);
  return `${formatWall({ ...shown, second: 0 })}:${pad(shown.second)}${formatOffset(offset / 60000)}`;
}

/** Milliseconds since the epoch of datetime-local text in `timeZone`, or NaN. */
export function wallToMs(text: string, timeZone: string): number {
  const iso = wallToIso(text, timeZone);
  return iso === null ? NaN : Date.parse(iso);
}

/** An instant as the server's UTC form, `2024-01-01T08:00:00+00:00` (whole seconds). */
export function isoUtc(ms: number): string {
  return new Date(ms).toISOString().slice(0, 19) + '+00:00';
}

/**
 * An instant (ISO text) as datetime-local text in `timeZone` (`2024-01-01T09:00`, seconds
 * only when not zero); '' for none or unreadable; UTC when the zone is unknown.
 */
export function localDateTimeText(iso: string | null | undefined, timeZone: string): string {
  if (!iso) {
    return '';
  }
  const ms = new Date(iso).getTime();
  if (isNaN(ms)) {
    return '';
  }
  return formatWall(wallInZone(ms, timeZone));
}

/** `2026-01-02 10:00`: an instant as a short date and time in the zone (UTC by default). */
export function formatShortDate(ms: number, timeZone = 'UTC'): string {
  if (!isFinite(ms)) {
    return 'no date';
  }
  const w = wallInZone(ms, timeZone);
  return `${pad(w.year, 4)}-${pad(w.month)}-${pad(w.day)} ${pad(w.hour)}:${pad(w.minute)}`;
}
