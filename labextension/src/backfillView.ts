/**
 * The backfill dialog of a schedule: a form (range, step, variables), then the started
 * backfill's live progress. Thin DOM over backfill.ts, which holds every rule and is tested;
 * fields, errors and Escape are drawn as in the schedule form (formParts.ts).
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
  startBackfill,
  statusText
} from './backfill';
import { el } from './dom';
import { errorTexts } from './errors';
import {
  Control,
  DiscardConfirm,
  clearFieldErrors,
  onEscape,
  fieldRow,
  formChanged,
  showFieldError,
  showFormErrors
} from './formParts';
import { scheduleTimezone } from './model';
import { safeTimeZone } from './time';
import type { IPipelineSchedule } from './types';

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

export class BackfillView {
  readonly node: HTMLElement;
  private readonly form: HTMLFormElement;
  private readonly inputs = new Map<InputName, Control>();
  private readonly fields = new Map<InputName, HTMLElement>();
  private readonly formError: HTMLElement;
  private readonly submit: HTMLButtonElement;
  private readonly discard: DiscardConfirm;
  private readonly initial: IBackfillFormValues;
  private readonly progressArea: HTMLElement;
  private readonly progressBar: HTMLProgressElement;
  private readonly statusLine: HTMLElement;
  private readonly progressError: HTMLElement;
  private readonly cancelRun: HTMLButtonElement;
  private readonly closeButton: HTMLButtonElement;
  private watcher: BackfillWatcher | null = null;
  private starting = false;
  private disposed = false;
  private readonly onKey = (ev: KeyboardEvent) => this.handleKey(ev);

  constructor(private readonly options: IBackfillViewOptions) {
    const { schedule } = options;
    const uid = `jp-MageNbSched-backfill-${++counter}`;
    const zone = safeTimeZone(scheduleTimezone(schedule));
    const values = defaultBackfillValues(schedule, (options.now ?? (() => new Date()))());

    this.node = el('section', {
      class: 'jp-MageNbSched-backfill jp-MageNbSched-dialog',
      'aria-labelledby': `${uid}-title`,
      // Not data-schedule-id: that names the schedule rows (DESIGN §2), and a locator for a
      // row must not find this section too.
      'data-backfill-schedule-id': String(schedule.id)
    });
    this.node.append(
      el(
        'h3',
        { class: 'jp-MageNbSched-form-title', id: `${uid}-title` },
        `Backfill ${schedule.name}`
      )
    );

    this.form = el('form', {
      class: 'jp-MageNbSched-form',
      'data-form': 'backfill',
      novalidate: '',
      'aria-describedby': `${uid}-hint`
    });
    this.formError = el('div', { class: 'jp-MageNbSched-form-error', role: 'alert', hidden: '' });
    this.form.append(
      el(
        'p',
        { class: 'jp-MageNbSched-hint', id: `${uid}-hint` },
        `One run per step from start to end, both included. Times are in ${zone}.`
      ),
      this.formError
    );
    const add = (name: InputName, label: string, input: Control): void => {
      input.name = name;
      const field = fieldRow({
        id: `${uid}-${name}`,
        label,
        control: input,
        attrs: { 'data-input': name }
      });
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
    this.initial = this.values();

    // Shown once a backfill was created but its start failed (see onSubmit).
    this.submit = el(
      'button',
      { type: 'submit', class: 'jp-MageNbSched-button jp-MageNbSched-primary' },
      'Start backfill'
    );
    const cancelForm = el('button', { type: 'button', class: 'jp-MageNbSched-button' }, 'Cancel');
    cancelForm.addEventListener('click', () => this.close());
    this.discard = new DiscardConfirm('Discard this backfill’s settings?', () => this.close());
    this.form.append(
      el('div', { class: 'jp-MageNbSched-form-buttons' }, this.submit, cancelForm),
      this.discard.node
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
    this.progressError = el('div', {
      class: 'jp-MageNbSched-form-error',
      role: 'alert',
      hidden: ''
    });
    this.cancelRun = el(
      'button',
      { type: 'button', class: 'jp-MageNbSched-button' },
      'Cancel backfill'
    );
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

  /** Unsaved work: the form is shown and holds other values than it opened with. */
  private get isChanged(): boolean {
    return !this.form.hidden && formChanged(this.initial, this.values());
  }

  private handleKey(ev: KeyboardEvent): void {
    onEscape(ev, this.isChanged, this.discard, () => this.close());
  }

  private showFieldErrors(errors: IFieldError[]): void {
    let first: Control | null = null;
    const general: { message: string; fix: string | null }[] = [];
    for (const error of errors) {
      const name = inputForField(error.field);
      const row = name ? this.fields.get(name) : undefined;
      const input = name ? this.inputs.get(name) : undefined;
      const texts = { message: error.message, fix: error.fix || null };
      if (!row || !input) {
        general.push({ ...texts, message: `${texts.message} (field: ${error.field})` });
        continue;
      }
      showFieldError(row, input, error.field, texts);
      first = first ?? input;
    }
    showFormErrors(this.formError, general);
    first?.focus();
  }

  private async onSubmit(): Promise<void> {
    if (this.starting || this.disposed) {
      return;
    }
    clearFieldErrors(this.form, this.formError);
    this.discard.hide();
    this.starting = true;
    this.submit.disabled = true;
    this.submit.textContent = 'Starting…';
    let backfill: IBackfill;
    try {
      backfill = await startBackfill(this.options.api, this.values(), this.options.schedule);
    } catch (err) {
      if (this.disposed) {
        return;
      }
      this.starting = false;
      this.submit.disabled = false;
      this.submit.textContent = 'Start backfill';
      // Nothing was written (the server creates and starts in one transaction): fix and retry.
      const errors = fieldErrorsOf(err);
      if (errors) {
        this.showFieldErrors(errors);
      } else {
        showFormErrors(this.formError, [errorTexts(err)]);
        this.options.notifyError?.(
          `Backfill of ${this.options.schedule.name}: ${errorMessage(err)}`
        );
        this.submit.focus();
      }
      return;
    }
    if (this.disposed) {
      return;
    }
    this.starting = false;
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
