/**
 * JSON typed into a text box: "variables" (a JSON object or nothing) is asked for in the
 * schedule form, the backfill form and the run-now field; the rules and the wording are here,
 * once.
 */
import { errorMessage } from './api';
import { FieldError } from './errors';

/** The fix shown under a variables box that does not hold a JSON object. */
export const OBJECT_FIX = 'Use a JSON object, e.g. {"env": "production"}, or leave it empty.';

function parseObject(
  text: string,
  notJson: (reason: string) => Error,
  notObject: () => Error
): Record<string, unknown> | null {
  const trimmed = text.trim();
  if (!trimmed) {
    return null;
  }
  let value: unknown;
  try {
    value = JSON.parse(trimmed);
  } catch (err) {
    throw notJson(errorMessage(err));
  }
  if (!value || typeof value !== 'object' || Array.isArray(value)) {
    throw notObject();
  }
  return value as Record<string, unknown>;
}

/**
 * A form's JSON-object box: null when empty (or blank), else the object. Throws a FieldError
 * naming `field` (the server's name, e.g. `variables`) with a fix, when the text is not JSON
 * or not an object (a list, a string, `null`).
 */
export function parseJsonObject(
  text: string,
  field: string,
  fix: string = OBJECT_FIX
): Record<string, unknown> | null {
  return parseObject(
    text,
    reason => new FieldError(field, `not valid JSON: ${reason}`, fix),
    () => new FieldError(field, 'must be a JSON object', fix)
  );
}

/**
 * The run-now variables box: null when empty, else the object. Throws a plain Error:
 * `Variables must be a JSON object, like {"date": "2024-01-15"}` for JSON that is not an
 * object, `Variables must be a JSON object: <the parse error>` for text that is not JSON.
 */
export function parseVariablesText(text: string): Record<string, unknown> | null {
  return parseObject(
    text,
    reason => new Error(`Variables must be a JSON object: ${reason}`),
    () => new Error('Variables must be a JSON object, like {"date": "2024-01-15"}')
  );
}
