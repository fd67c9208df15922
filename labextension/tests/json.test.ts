import { describe, expect, it } from 'vitest';
import { FieldError } from '../src/errors';
import { parseJsonObject, parseVariablesText } from '../src/json';

function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  throw new Error('nothing thrown');
}

describe('parseJsonObject', () => {
  it('is null for an empty or blank box, else the object', () => {
    expect(parseJsonObject('', 'variables')).toBeNull();
    expect(parseJsonObject('  \n ', 'variables')).toBeNull();
    expect(parseJsonObject(' {"env": "prod", "n": [1, 2]} ', 'variables')).toEqual({
      env: 'prod',
      n: [1, 2]
    });
    expect(parseJsonObject('{}', 'variables')).toEqual({});
  });

  it.each([
    ['not JSON', '{env: prod}', 'not valid JSON'],
    ['cut short', '{"a": ', 'not valid JSON'],
    ['a list', '[1, 2]', 'must be a JSON object'],
    ['a string', '"x"', 'must be a JSON object'],
    ['null', 'null', 'must be a JSON object'],
    ['a number', '3', 'must be a JSON object']
  ])('refuses %s with a FieldError naming the field, with a fix', (_name, text, message) => {
    const err = thrown(() => parseJsonObject(text, 'backfill.variables'));
    expect(err).toBeInstanceOf(FieldError);
    const fieldError = err as FieldError;
    expect(fieldError.field).toBe('backfill.variables');
    expect(fieldError.message).toContain(message);
    expect(fieldError.fix).toMatch(/JSON object/);
  });

  it('takes a fix of the caller', () => {
    expect((thrown(() => parseJsonObject('[]', 'x', 'Do this.')) as FieldError).fix).toBe(
      'Do this.'
    );
  });
});

describe('parseVariablesText (the run-now box)', () => {
  it('is null when empty, else the object', () => {
    expect(parseVariablesText('')).toBeNull();
    expect(parseVariablesText(' {"date": "2024-01-15"} ')).toEqual({ date: '2024-01-15' });
  });

  it('says what a JSON object is, in exactly the words the panel shows', () => {
    for (const text of ['[1]', '"x"', 'null', '42']) {
      const err = thrown(() => parseVariablesText(text)) as Error;
      expect(err).toBeInstanceOf(Error);
      expect(err).not.toBeInstanceOf(FieldError);
      expect(err.message).toBe('Variables must be a JSON object, like {"date": "2024-01-15"}');
    }
  });

  it('gives the parse error for text that is not JSON', () => {
    let reason = '';
    try {
      JSON.parse('{oops');
    } catch (err) {
      reason = (err as Error).message;
    }
    expect(reason).not.toBe('');
    const err = thrown(() => parseVariablesText('  {oops ')) as Error;
    expect(err.message).toBe(`Variables must be a JSON object: ${reason}`);
  });
});
