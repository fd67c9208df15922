import { describe, expect, it } from 'vitest';
import {
  addDays,
  formatOffset,
  formatShortDate,
  formatWall,
  instantOfWall,
  isKnownTimeZone,
  localDateTimeText,
  offsetAt,
  pad,
  parseWall,
  safeTimeZone,
  wallInZone,
  wallToIso,
  wallToMs
} from '../src/time';

const utc = (text: string): number => Date.parse(text);
const wall = (text: string) => {
  const w = parseWall(text);
  if (!w) {
    throw new Error(`not a wall time: ${text}`);
  }
  return w;
};

describe('wall times as text', () => {
  it('reads datetime-local text, with or without seconds, and refuses impossible dates', () => {
    expect(parseWall('2024-01-15T09:05')).toEqual({
      year: 2024,
      month: 1,
      day: 15,
      hour: 9,
      minute: 5,
      second: 0
    });
    expect(parseWall(' 2024-01-15 09:05:07 ')).toMatchObject({ hour: 9, minute: 5, second: 7 });
    expect(parseWall('2024-02-29T00:00')).not.toBeNull();
    for (const bad of [
      '2023-02-29T00:00',
      '2024-02-30T10:00',
      '2024-13-01T00:00',
      '2024-01-01T24:00',
      '2024-01-01',
      'tomorrow',
      ''
    ]) {
      expect(parseWall(bad), bad).toBeNull();
    }
  });

  it('writes it back, seconds only when not zero, years below 100 in four digits', () => {
    expect(formatWall(wall('2024-01-15T09:05'))).toBe('2024-01-15T09:05');
    expect(formatWall(wall('2024-01-15T09:05:07'))).toBe('2024-01-15T09:05:07');
    expect(formatWall(wall('0042-03-04T05:06'))).toBe('0042-03-04T05:06');
    expect(pad(7)).toBe('07');
    expect(pad(7, 4)).toBe('0007');
    expect(pad(123)).toBe('123');
  });

  it('adds calendar days across month, year and leap-day ends', () => {
    expect(formatWall(addDays(wall('2024-02-28T10:00'), 1))).toBe('2024-02-29T10:00');
    expect(formatWall(addDays(wall('2024-12-31T23:30'), 1))).toBe('2025-01-01T23:30');
    expect(formatWall(addDays(wall('2026-03-01T00:00'), -3))).toBe('2026-02-26T00:00');
  });
});

describe('zones', () => {
  it('knows IANA zones and falls back to UTC for others', () => {
    expect(isKnownTimeZone('Europe/Berlin')).toBe(true);
    expect(isKnownTimeZone('Mars/Olympus')).toBe(false);
    expect(isKnownTimeZone('')).toBe(false);
    expect(safeTimeZone('Mars/Olympus')).toBe('UTC');
    expect(safeTimeZone('America/New_York')).toBe('America/New_York');
    expect(() => instantOfWall(wall('2024-01-01T00:00'), 'Mars/Olympus')).toThrow(RangeError);
  });

  it('reads the wall time and offset of an instant', () => {
    expect(formatWall(wallInZone(utc('2024-07-10T13:00:30Z'), 'America/New_York'))).toBe(
      '2024-07-10T09:00:30'
    );
    expect(formatWall(wallInZone(utc('2024-01-10T00:00:00Z'), 'Asia/Kolkata'))).toBe(
      '2024-01-10T05:30'
    );
    expect(offsetAt(utc('2024-01-10T00:00:00Z'), 'Europe/Berlin')).toBe(3600000);
    expect(offsetAt(utc('2024-07-10T00:00:00Z'), 'Europe/Berlin')).toBe(7200000);
    expect(offsetAt(utc('2024-07-10T00:00:00Z'), 'America/New_York')).toBe(-4 * 3600000);
    // Midnight is hour 0, never 24.
    expect(wallInZone(utc('2024-01-10T00:00:00Z'), 'UTC').hour).toBe(0);
    expect(formatOffset(-240)).toBe('-04:00');
    expect(formatOffset(330)).toBe('+05:30');
    expect(formatOffset(0)).toBe('+00:00');
  });

  it('shows an instant as datetime-local text in a zone', () => {
    expect(localDateTimeText('2024-07-10T13:00:30Z', 'America/New_York')).toBe(
      '2024-07-10T09:00:30'
    );
    expect(localDateTimeText('2024-01-10T00:00:00+00:00', 'Asia/Kolkata')).toBe('2024-01-10T05:30');
    expect(localDateTimeText('2024-01-10T00:00:00+00:00', 'Mars/Olympus')).toBe('2024-01-10T00:00');
    expect(localDateTimeText(null, 'UTC')).toBe('');
    expect(localDateTimeText('garbage', 'UTC')).toBe('');
    expect(formatShortDate(utc('2026-01-02T10:00:00Z'), 'Europe/Paris')).toBe('2026-01-02 11:00');
    expect(formatShortDate(NaN)).toBe('no date');
  });
});

describe('wall time → instant, across DST', () => {
  it('uses the offset of that date (winter and summer)', () => {
    expect(wallToIso('2024-01-01T00:00', 'Europe/Paris')).toBe('2024-01-01T00:00:00+01:00');
    expect(wallToIso('2024-07-01T06:30', 'Europe/Paris')).toBe('2024-07-01T06:30:00+02:00');
    expect(wallToIso('2024-03-10T12:00', 'America/New_York')).toBe('2024-03-10T12:00:00-04:00');
    expect(wallToIso('2024-01-10T09:00', 'America/New_York')).toBe('2024-01-10T09:00:00-05:00');
    expect(wallToIso('2024-01-10T09:00', 'UTC')).toBe('2024-01-10T09:00:00+00:00');
    expect(wallToMs('2024-01-01T00:00', 'Europe/Paris')).toBe(Date.UTC(2023, 11, 31, 23, 0));
    expect(wallToIso('not a time', 'UTC')).toBeNull();
    expect(wallToMs('not a time', 'UTC')).toBeNaN();
    // A zone this browser does not know is read as UTC.
    expect(wallToIso('2024-01-01T00:00', 'Mars/Olympus')).toBe('2024-01-01T00:00:00+00:00');
  });

  // Europe/Berlin: 2024-03-31 02:00 → 03:00 (gap, at 01:00Z); 2024-10-27 03:00 → 02:00 (overlap, at 01:00Z).
  // America/New_York: 2024-03-10 02:00 → 03:00 (gap, at 07:00Z); 2024-11-03 02:00 → 01:00 (overlap, at 06:00Z).
  it.each([
    ['Europe/Berlin', '2024-03-31T02:30', '2024-03-31T01:30:00.000Z', '2024-03-31T03:30:00+02:00'],
    ['Europe/Berlin', '2024-03-31T02:00', '2024-03-31T01:00:00.000Z', '2024-03-31T03:00:00+02:00'],
    [
      'America/New_York',
      '2024-03-10T02:30',
      '2024-03-10T07:30:00.000Z',
      '2024-03-10T03:30:00-04:00'
    ],
    [
      'America/New_York',
      '2024-03-10T02:00',
      '2024-03-10T07:00:00.000Z',
      '2024-03-10T03:00:00-04:00'
    ]
  ])('a time skipped in %s (%s) moves forward by the gap', (zone, text, instant, iso) => {
    expect(new Date(instantOfWall(wall(text), zone)).toISOString()).toBe(instant);
    expect(wallToIso(text, zone)).toBe(iso);
  });

  it.each([
    ['Europe/Berlin', '2024-10-27T02:30', '2024-10-27T00:30:00.000Z', '2024-10-27T02:30:00+02:00'],
    ['Europe/Berlin', '2024-10-27T02:00', '2024-10-27T00:00:00.000Z', '2024-10-27T02:00:00+02:00'],
    [
      'America/New_York',
      '2024-11-03T01:30',
      '2024-11-03T05:30:00.000Z',
      '2024-11-03T01:30:00-04:00'
    ],
    [
      'America/New_York',
      '2024-11-03T01:00',
      '2024-11-03T05:00:00.000Z',
      '2024-11-03T01:00:00-04:00'
    ]
  ])('a time that happens twice in %s (%s) is the earlier one', (zone, text, instant, iso) => {
    expect(new Date(instantOfWall(wall(text), zone)).toISOString()).toBe(instant);
    expect(wallToIso(text, zone)).toBe(iso);
    // It is that wall time, and so is the instant an hour later: the overlap is real.
    const ms = Date.parse(instant);
    expect(formatWall(wallInZone(ms, zone))).toBe(text);
    expect(formatWall(wallInZone(ms + 3600000, zone))).toBe(text);
  });

  it.each([
    ['Europe/Berlin', '2024-03-31T01:30', '2024-03-31T00:30:00.000Z'],
    ['Europe/Berlin', '2024-03-31T03:00', '2024-03-31T01:00:00.000Z'],
    ['Europe/Berlin', '2024-10-27T03:00', '2024-10-27T02:00:00.000Z'],
    ['Europe/Berlin', '2024-10-27T01:59', '2024-10-26T23:59:00.000Z'],
    ['America/New_York', '2024-03-10T03:30', '2024-03-10T07:30:00.000Z'],
    ['America/New_York', '2024-03-10T01:59', '2024-03-10T06:59:00.000Z'],
    ['America/New_York', '2024-11-03T02:00', '2024-11-03T07:00:00.000Z'],
    ['America/New_York', '2024-11-03T00:59', '2024-11-03T04:59:00.000Z']
  ])('a time next to a change in %s (%s) is its one instant, both ways', (zone, text, instant) => {
    const ms = instantOfWall(wall(text), zone);
    expect(new Date(ms).toISOString()).toBe(instant);
    expect(formatWall(wallInZone(ms, zone))).toBe(text);
  });
});
