/**
 * Errors as both forms (schedule, backfill) show them: a message and, apart, what to do about
 * it. The server's messages already end with their fix (core/errors.py formats
 * `"{field}={value!r}: {problem}. {fix}"`) and also send the fix on its own, so the fix is cut
 * from the message once, here, and each form shows it once.
 */
import { ApiError, errorMessage } from './api';

/**
 * A value a form could not turn into a request. `field` is the server's name for the field
 * (`variables`, `settings.timeout`, `start_datetime` ...), as in an ApiError, so the same code
 * places both under the input they name.
 */
export class FieldError extends Error {
  readonly field: string;
  readonly fix: string;

  constructor(field: string, message: string, fix: string) {
    super(message);
    this.name = 'FieldError';
    this.field = field;
    this.fix = fix;
  }
}

/** What a form shows for one error: the message, and the fix on its own (null: none). */
export interface IErrorTexts {
  message: string;
  fix: string | null;
}

/**
 * The message without the fix when it carries it (the server's end with it): `"sla=-1: must
 * be >= 0. Use 3600."` with fix `"Use 3600."` → `"sla=-1: must be >= 0."`. A message that is
 * nothing but the fix is kept whole, so there is always something to read.
 */
export function stripFix(message: string, fix: string | null | undefined): string {
  const text = message.trim();
  const cut = fix?.trim();
  if (!cut || !text.includes(cut)) {
    return text;
  }
  const rest = (text.endsWith(cut) ? text.slice(0, -cut.length) : text.replace(cut, ' '))
    .replace(/\s{2,}/g, ' ')
    .trim();
  return rest || text;
}

/**
 * What to show for any thrown value: an ApiError's server message (not the one-line
 * `formatError` form, which names the field and the fix again) without its fix, and the fix;
 * a FieldError's message and fix; anything else's message and no fix.
 */
export function errorTexts(err: unknown): IErrorTexts {
  if (err instanceof ApiError) {
    const fix = err.fix || null;
    return { message: stripFix(err.serverMessage || err.message, fix), fix };
  }
  if (err instanceof FieldError) {
    return { message: stripFix(err.message, err.fix), fix: err.fix || null };
  }
  return { message: errorMessage(err), fix: null };
}
