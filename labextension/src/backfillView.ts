/**
 * The backfill dialog of a schedule: a form (range, step, variables), then the started
 * backfill's live progress. Thin DOM over backfill.ts, which holds every rule and is tested.
 */
import type { ApiClient } from './api';
import { errorMessage } from './api';
import {
  BackfillWatcher,
  IBackfill,
  IBackfillFormValues,
  IFieldError,
  INTERVAL_TYPES,
  IntervalType,
  MAX_INTERVAL_UNITS,
  cancelBackfill,
  defaultBackfillValues,
  fieldErrorsOf,
  finishedRuns,
  inputForField,
  isBackfillFinished,
  progressFraction,
  safeTimeZone,
  startBackfill,
  statusText
} from './backfill';
import { scheduleTimezone } from './model';
import type { IPipelineSchedule } from './types';
import { el } from './dom';

export interface IBackfillViewOptions {
  api: ApiClient;
  schedule: IPipelineSchedule;
  /** The clock the default range is computed from. */
  now?: () => Date;
  /** Cancel, Close or Escape: the host removes the view (and should dispose it). */
  onClose(): void;
  /** The backfill has ended (completed, failed or cancelled). */
  onFinished?(backfill: IBackfill): void;
  /** A failure worth a notification too (it is also shown in the view). */
  notifyError?(message: string): void;
}


let counter = 0;

type InputName = keyof IBackfillFormValues;
type Input = HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement;

export class BackfillView {
  readonly node: HTMLElement;
  private readonly form: HTMLFormElement;
  private readonly inputs = new Map<InputName, Input>();
  private readonly fields = new Map<InputName, HTMLElement>();
  private readonly formError: HTMLElement;
  private readonly submit: HTMLButtonElement;
  private readonly progressArea: HTMLElement;
  private readonly progressBar: HTMLProgressElement;
  private readonly statusLine: HTMLElement;
  private readonly progressError: HTMLElement;
  private readonly cancelRun: HTMLButtonElement;
  private readonly closeButton: HTMLButtonElement;
  private watcher: BackfillWatcher | null = null;
  private disposed = false;
  private readonly onKey = (ev: KeyboardEvent) => this.handleKey(ev);

  constructor(private readonly options: IBackfillViewOptions) {
    const { schedule } = options;
    const uid = `jp-MageNbSched-backfill-${++counter}`;
    const zone = safeTimeZone(scheduleTimezone(schedule));
    const values = defaultBackfillValues(schedule, (options.now ?? (() => new Date()))());

    this.node = el('section', {
      class: 'jp-MageNbSched-backfill',
      'aria-labelledby': `${uid}-title`,
      'data-schedule-id': String(schedule.id)
    });
    this.node.append(
      el('h3', { class: 'jp-MageNbSched-backfill-title', id: `${uid}-title` }, `Backfill ${schedule.name}`)
    );

    this.form = el('form', {
      class: 'jp-MageNbSched-form',
      'data-form': 'backfill',
      novalidate: '',
      'aria-describedby': `${uid}-hint`
    });
    this.form.append(
      el(
        'p',
        { class: 'jp-MageNbSched-hint', id: `${uid}-hint` },
        `One run per step from start to end, both included. Times are in ${zone}.`
      )
    );
    const add = (name: InputName, label: string, input: Input): void => {
      input.id = `${uid}-${name}`;
      input.name = name;
      input.classList.add('jp-MageNbSched-input');
      const field = el(
        'div',
        { class: 'jp-MageNbSched-field', 'data-input': name },
        el('label', { for: input.id }, label),
        input
      );
      this.inputs.set(name, input);
      this.fields.set(name, field);
      this.form.append(field);
    };

    const start = el('input', { type: 'datetime-local', required: '' });
    start.value = values.start;
    add('start', `Start (${zone})`, start);
    const end = el('input', { type: 'datetime-local', required: '' });
    end.value = values.end;
    add('end', `End (${zone})`, end);
    const units = el('input', {
      type: 'number',
      min: '1',
      max: String(MAX_INTERVAL_UNITS),
      step: '1',
      inputmode: 'numeric'
    });
    units.value = values.interval_units;
    add('interval_units', 'Every', units);
    const kind = el('select', {});
    for (const type of INTERVAL_TYPES) {
      kind.append(el('option', { value: type }, type));
    }
    kind.value = values.interval_type;
    add('interval_type', 'Interval', kind);
    const variables = el('textarea', {
      rows: '3',
      spellcheck: 'false',
      placeholder: '{"env": "prod"}'
    });
    variables.value = values.variables;
    add('variables', 'Variables (JSON, over the schedule’s)', variables);

    this.formError = el('div', {
      class: 'jp-MageNbSched-form-error',
      role: 'alert',
      hidden: ''
    });
    this.submit = el('button', { type: 'submit', class: 'jp-MageNbSched-button jp-MageNbSched-primary' }, 'Start backfill');
    const cancelForm = el('button', { type: 'button', class: 'jp-MageNbSched-button' }, 'Cancel');
    cancelForm.addEventListener('click', () => this.close());
    this.form.append(
      this.formError,
      el('div', { class: 'jp-MageNbSched-form-buttons' }, this.submit, cancelForm)
    );
    this.form.addEventListener('submit', ev => {
      ev.preventDefault();
      void this.onSubmit();
    });
    this.node.append(this.form);

    // The progress of the started backfill, hidden until there is one.
    this.progressBar = el('progress', {
      class: 'jp-MageNbSched-backfill-progress',
      max: '1',
      value: '0',
      'aria-label': 'Backfill progress'
    });
    this.statusLine = el('div', {
      class: 'jp-MageNbSched-backfill-status',
      'data-backfill-status': 'initial',
      'aria-live': 'polite'
    });
    this.progressError = el('div', { class: 'jp-MageNbSched-form-error', role: 'alert', hidden: '' });
    this.cancelRun = el('button', { type: 'button', class: 'jp-MageNbSched-button' }, 'Cancel backfill');
    this.cancelRun.addEventListener('click', () => void this.onCancelBackfill());
    this.closeButton = el('button', { type: 'button', class: 'jp-MageNbSched-button' }, 'Close');
    this.closeButton.addEventListener('click', () => this.close());
    this.progressArea = el(
      'div',
      { class: 'jp-MageNbSched-backfill-run', hidden: '' },
      this.progressBar,
      this.statusLine,
      this.progressError,
      el('div', { class: 'jp-MageNbSched-form-buttons' }, this.cancelRun, this.closeButton)
    );
    this.node.append(this.progressArea);
    this.node.addEventListener('keydown', this.onKey);
  }

  /** The form's values as typed. */
  values(): IBackfillFormValues {
    const value = (name: InputName) => this.inputs.get(name)?.value ?? '';
    return {
      start: value('start'),
      end: value('end'),
      interval_type: value('interval_type') as IntervalType,
      interval_units: value('interval_units'),
      variables: value('variables')
    };
  }

  /** Put the focus on the first input (call once the node is attached). */
  focus(): void {
    this.inputs.get('start')?.focus();
  }

  dispose(): void {
    if (this.disposed) {
      return;
    }
    this.disposed = true;
    this.watcher?.stop();
    this.watcher = null;
    this.node.removeEventListener('keydown', this.onKey);
    this.node.remove();
  }

  private close(): void {
    // The backfill goes on on the server; only following it stops.
    this.watcher?.stop();
    this.options.onClose();
  }

  private handleKey(ev: KeyboardEvent): void {
    if (ev.key === 'Escape') {
      ev.preventDefault();
      ev.stopPropagation();
      this.close();
    }
  }

  private clearErrors(): void {
    this.formError.hidden = true;
    this.formError.textContent = '';
    for (const [name, field] of this.fields) {
      field.querySelectorAll('.jp-MageNbSched-field-error').forEach(node => node.remove());
      const input = this.inputs.get(name);
      input?.removeAttribute('aria-invalid');
      input?.removeAttribute('aria-describedby');
    }
  }

  private showFieldErrors(errors: IFieldError[]): void {
    let first: Input | null = null;
    for (const error of errors) {
      const name = inputForField(error.field);
      const field = name ? this.fields.get(name) : undefined;
      const text = error.fix ? `${error.message}. ${error.fix}` : error.message;
      if (!name || !field) {
        this.showFormError(`${text} (field: ${error.field})`);
        continue;
      }
      const input = this.inputs.get(name) as Input;
      const id = `${input.id}-error-${field.children.length}`;
      field.append(
        el(
          'div',
          { class: 'jp-MageNbSched-field-error', role: 'alert', id, 'data-field': error.field },
          text
        )
      );
      input.setAttribute('aria-invalid', 'true');
      const described = input.getAttribute('aria-describedby');
      input.setAttribute('aria-describedby', described ? `${described} ${id}` : id);
      first = first ?? input;
    }
    first?.focus();
  }

  private showFormError(message: string): void {
    this.formError.hidden = false;
    this.formError.textContent = this.formError.textContent
      ? `${this.formError.textContent}\n${message}`
      : message;
  }

  private async onSubmit(): Promise<void> {
    if (this.submit.disabled || this.disposed) {
      return;
    }
    this.clearErrors();
    this.submit.disabled = true;
    this.submit.textContent = 'Starting…';
    let backfill: IBackfill;
    try {
      backfill = await startBackfill(this.options.api, this.values(), this.options.schedule);
    } catch (err) {
      if (this.disposed) {
        return;
      }
      this.submit.disabled = false;
      this.submit.textContent = 'Start backfill';
      const errors = fieldErrorsOf(err);
      if (errors) {
        this.showFieldErrors(errors);
      } else {
        const message = errorMessage(err);
        this.showFormError(message);
        this.options.notifyError?.(`Backfill of ${this.options.schedule.name}: ${message}`);
      }
      return;
    }
    if (this.disposed) {
      return;
    }
    this.showProgress(backfill);
  }

  private showProgress(backfill: IBackfill): void {
    this.form.hidden = true;
    this.progressArea.hidden = false;
    this.progressArea.setAttribute('data-backfill-id', String(backfill.id));
    this.watcher = new BackfillWatcher(this.options.api, backfill.id, {
      onProgress: b => this.render(b),
      onFinished: b => this.options.onFinished?.(b),
      onError: err => {
        this.progressError.hidden = false;
        this.progressError.textContent = `Cannot read the progress (retrying): ${errorMessage(err)}`;
      }
    });
    this.watcher.start(1000);
    // The start's answer is already a reading; show it (and stop if it has already ended).
    this.watcher.update(backfill);
    this.closeButton.focus();
  }

  private render(backfill: IBackfill): void {
    this.progressError.hidden = true;
    this.progressError.textContent = '';
    const total = backfill.progress?.total ?? 0;
    const finished = isBackfillFinished(backfill);
    // In runs (value = ended runs); a backfill without runs is 0 of 1 or, once over, 1 of 1 —
    // always a value, so the bar never reads as indeterminate.
    this.progressBar.max = Math.max(total, 1);
    this.progressBar.value = total ? finishedRuns(backfill) : progressFraction(backfill);
    this.progressBar.setAttribute('aria-valuetext', statusText(backfill));
    this.statusLine.setAttribute('data-backfill-status', backfill.status);
    this.statusLine.textContent = statusText(backfill);
    this.progressArea.setAttribute('data-total', String(total));
    this.cancelRun.hidden = finished;
    this.cancelRun.disabled = finished;
  }

  private async onCancelBackfill(): Promise<void> {
    const watcher = this.watcher;
    if (!watcher || this.cancelRun.disabled) {
      return;
    }
    this.cancelRun.disabled = true;
    try {
      const backfill = await cancelBackfill(this.options.api, watcher.backfillId);
      watcher.update(backfill);
    } catch (err) {
      const message = errorMessage(err);
      this.progressError.hidden = false;
      this.progressError.textContent = `Cannot cancel: ${message}`;
      this.options.notifyError?.(`Cancel backfill ${watcher.backfillId}: ${message}`);
      this.cancelRun.disabled = false;
      watcher.now();
    }
  }
}
