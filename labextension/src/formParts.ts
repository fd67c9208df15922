/**
 * What the schedule form and the backfill form share, so both look and behave alike: a field
 * row (label, control, hint), errors under a field or on top of the form, and Escape with the
 * inline "Discard changes?" row. The rules (`formChanged`, `escapeAction`) are pure and
 * unit-tested; the rest is thin DOM over `el`.
 */
import { el } from './dom';
import type { IErrorTexts } from './errors';

/** A form control. */
export type Control = HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement;

// ---------------------------------------------------------------------------------------------
// Rules (no DOM)

/** True when a form's values differ from the ones it opened with (key by key, as typed). */
export function formChanged<T extends object>(initial: T, current: T): boolean {
  const a = initial as Record<string, unknown>;
  const b = current as Record<string, unknown>;
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
  for (const key of keys) {
    if (a[key] !== b[key]) {
      return true;
    }
  }
  return false;
}

/**
 * What Escape does in a form:
 * - `none`: not Escape, or an input method is composing (Escape there ends the composition);
 * - `keep`: the "Discard changes?" row is open: Escape closes it and editing goes on;
 * - `ask`: there are unsaved changes: open that row rather than lose them (an Escape meant to
 *   close the time zone suggestions, say — the browser gives no sign those were open);
 * - `cancel`: nothing to lose: close the form at once.
 */
export type EscapeAction = 'none' | 'keep' | 'ask' | 'cancel';

export function escapeAction(
  ev: { key: string; isComposing?: boolean },
  changed: boolean,
  asking: boolean
): EscapeAction {
  if (ev.key !== 'Escape' || ev.isComposing) {
    return 'none';
  }
  if (asking) {
    return 'keep';
  }
  return changed ? 'ask' : 'cancel';
}

/**
 * A form's Escape key: keep editing, ask (the discard row), or close — per `escapeAction`.
 * No stopPropagation: JupyterLab's shortcuts listen in the capture phase and have seen the key
 * already, and the forms are not inside a schedule row, whose handlers they could reach.
 */
export function onEscape(
  ev: KeyboardEvent,
  changed: boolean,
  discard: DiscardConfirm,
  close: () => void
): void {
  const action = escapeAction(ev, changed, discard.isShown);
  if (action === 'none') {
    return;
  }
  ev.preventDefault();
  if (action === 'keep') {
    discard.hide();
  } else if (action === 'ask') {
    discard.show();
  } else {
    close();
  }
}

// ---------------------------------------------------------------------------------------------
// Field rows

export interface IFieldRowOptions {
  /** The control's id (the label's `for`). */
  id: string;
  label: string;
  control: Control;
  /** A line of help under the control (its `aria-describedby`). */
  hint?: string | null;
  /** Extra attributes of the row (`data-field-row`, `data-input` ...). */
  attrs?: Record<string, string>;
}

/**
 * `<div class="jp-MageNbSched-field">` with its `<label for>` and control (a checkbox after
 * its label's box, in a row), and the hint under it.
 */
export function fieldRow(opts: IFieldRowOptions): HTMLElement {
  const { id, label, control } = opts;
  control.id = id;
  if (!(control instanceof HTMLInputElement && control.type === 'checkbox')) {
    control.classList.add('jp-MageNbSched-input');
  }
  const labelNode = el('label', { for: id, class: 'jp-MageNbSched-label' }, label);
  const row = el('div', { class: 'jp-MageNbSched-field', ...(opts.attrs ?? {}) });
  if (control instanceof HTMLInputElement && control.type === 'checkbox') {
    row.classList.add('jp-MageNbSched-field-check');
    row.append(control, labelNode);
  } else {
    row.append(labelNode, control);
  }
  if (opts.hint) {
    const hintId = `${id}-hint`;
    row.append(el('div', { class: 'jp-MageNbSched-hint', id: hintId }, opts.hint));
    control.setAttribute('aria-describedby', hintId);
  }
  return row;
}

// ---------------------------------------------------------------------------------------------
// Errors

/** The message and, on its own line, the fix ("Fix: …" in CSS). */
export function errorParts(texts: IErrorTexts): HTMLElement[] {
  const parts = [el('span', { class: 'jp-MageNbSched-error-message' }, texts.message)];
  if (texts.fix) {
    parts.push(el('span', { class: 'jp-MageNbSched-error-fix' }, texts.fix));
  }
  return parts;
}

const ERROR_ID = '-error-';

/**
 * An error under a field: appended to `row` (`role="alert"`, `data-field` = the server's
 * field), and the control marked `aria-invalid` and described by it.
 */
export function showFieldError(
  row: HTMLElement,
  control: Control,
  field: string,
  texts: IErrorTexts
): HTMLElement {
  const id = `${control.id}${ERROR_ID}${row.querySelectorAll('.jp-MageNbSched-field-error').length}`;
  const node = el(
    'div',
    { class: 'jp-MageNbSched-field-error', role: 'alert', 'data-field': field, id },
    ...errorParts(texts)
  );
  row.append(node);
  control.setAttribute('aria-invalid', 'true');
  const described = control.getAttribute('aria-describedby');
  control.setAttribute('aria-describedby', described ? `${described} ${id}` : id);
  return node;
}

/** Errors that belong to no field, in the form's error box (one block each). */
export function showFormErrors(box: HTMLElement, errors: IErrorTexts[]): void {
  if (!errors.length) {
    return;
  }
  box.append(...errors.map(texts => el('div', {}, ...errorParts(texts))));
  box.hidden = false;
}

/** Remove every error of the form: field errors, their marks on the controls, the error box. */
export function clearFieldErrors(form: HTMLElement, box: HTMLElement | null = null): void {
  form.querySelectorAll('.jp-MageNbSched-field-error').forEach(node => node.remove());
  form
    .querySelectorAll('[aria-invalid]')
    .forEach(control => control.removeAttribute('aria-invalid'));
  form.querySelectorAll('[aria-describedby]').forEach(control => {
    // Keep what is not an error (the hint).
    const kept = (control.getAttribute('aria-describedby') ?? '')
      .split(/\s+/)
      .filter(id => id && !id.includes(ERROR_ID));
    if (kept.length) {
      control.setAttribute('aria-describedby', kept.join(' '));
    } else {
      control.removeAttribute('aria-describedby');
    }
  });
  if (box) {
    box.replaceChildren();
    box.hidden = true;
  }
}

// ---------------------------------------------------------------------------------------------
// Discard changes?

/**
 * The inline "Discard changes? [Discard] [Keep editing]" row (no `window.confirm`: it would
 * block the whole page). Hidden until `show()`; Discard calls `onDiscard`, Keep editing (or
 * `hide()`) puts the focus back where it was.
 */
export class DiscardConfirm {
  readonly node: HTMLElement;
  private readonly keepButton: HTMLButtonElement;
  private returnFocus: HTMLElement | null = null;

  constructor(question: string, onDiscard: () => void) {
    const discard = el(
      'button',
      { type: 'button', class: 'jp-MageNbSched-button jp-MageNbSched-discard-button' },
      'Discard'
    );
    this.keepButton = el(
      'button',
      { type: 'button', class: 'jp-MageNbSched-button' },
      'Keep editing'
    );
    discard.addEventListener('click', () => onDiscard());
    this.keepButton.addEventListener('click', () => this.hide());
    this.node = el(
      'div',
      { class: 'jp-MageNbSched-discard', hidden: '' },
      el('span', { class: 'jp-MageNbSched-discard-text', role: 'alert' }, question),
      discard,
      this.keepButton
    );
  }

  get isShown(): boolean {
    return !this.node.hidden;
  }

  /** Show the row, Keep editing focused (the safe answer to a stray Enter). */
  show(): void {
    const active = this.node.ownerDocument.activeElement;
    this.returnFocus = active instanceof HTMLElement ? active : null;
    this.node.hidden = false;
    this.keepButton.focus();
  }

  hide(): void {
    if (this.node.hidden) {
      return;
    }
    this.node.hidden = true;
    this.returnFocus?.focus();
    this.returnFocus = null;
  }
}
