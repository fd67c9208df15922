/**
 * The create / edit schedule form, as plain DOM. Thin on purpose: values, bodies, error
 * placement and saving are `scheduleForm.ts` (unit-tested); this file draws inputs, reads them
 * and puts each error (local or the server's) under the input it names.
 */
import { ApiClient, ApiError } from './api';
import { el } from './dom';
import { FieldError, IErrorTexts, errorTexts } from './errors';
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
import {
  FORM_FIELDS,
  FormField,
  INTERVAL_PRESETS,
  IScheduleFormValues,
  ISaveResult,
  defaultValues,
  fieldOfError,
  localErrors,
  saveSchedule,
  valuesFromSchedule,
  visibleFields
} from './scheduleForm';
import { browserTimezone, knownTimezones } from './time';
import type { IPipelineSchedule } from './types';

export interface IScheduleFormViewOptions {
  api: ApiClient;
  mode: 'create' | 'edit';
  /** The notebook's pipeline uuid. */
  pipelineUuid: string;
  /** The schedule to edit (edit mode). */
  schedule?: IPipelineSchedule;
  /** Zone for a new schedule; the browser's when left out. */
  timezone?: string;
  /** Saved; `result.changed` is false when an edit had nothing to save (no request made). */
  onSaved(result: ISaveResult): void;
  onCancel(): void;
}

const INTERVAL_LABELS: Record<string, string> = {
  '@once': '@once — one run',
  '@hourly': '@hourly',
  '@daily': '@daily',
  '@weekly': '@weekly',
  '@monthly': '@monthly',
  '@always_on': '@always_on — again when done',
  custom: 'Custom cron…'
};

/** Ids unique per form, so several forms (or a re-opened one) never share label targets. */
let formCount = 0;

export class ScheduleFormView {
  readonly node: HTMLElement;
  private readonly form: HTMLFormElement;
  private readonly controls = new Map<FormField, Control>();
  private readonly rows = new Map<FormField, HTMLElement>();
  private readonly formError: HTMLElement;
  private readonly saveButton: HTMLButtonElement;
  private readonly prefix: string;
  private readonly initial: IScheduleFormValues;
  private readonly discard: DiscardConfirm;
  private saving = false;
  private disposed = false;

  constructor(private readonly options: IScheduleFormViewOptions) {
    this.prefix = `jp-MageNbSched-form-${++formCount}`;
    const initial =
      options.mode === 'edit' && options.schedule
        ? valuesFromSchedule(options.schedule)
        : defaultValues(options.pipelineUuid, options.timezone || browserTimezone());
    const headingId = `${this.prefix}-heading`;
    const heading = el(
      'h3',
      { class: 'jp-MageNbSched-form-title', id: headingId },
      options.mode === 'edit' && options.schedule
        ? `Edit ${options.schedule.name}`
        : `New schedule for ${options.pipelineUuid}`
    );
    this.form = el('form', {
      class: 'jp-MageNbSched-form jp-MageNbSched-dialog',
      'data-form': 'schedule',
      'data-mode': options.mode,
      'aria-labelledby': headingId,
      // The server validates; the browser's own bubbles would hide its messages.
      novalidate: ''
    });
    this.formError = el('div', {
      class: 'jp-MageNbSched-form-error',
      role: 'alert',
      hidden: ''
    });
    this.saveButton = el(
      'button',
      { type: 'submit', class: 'jp-MageNbSched-button jp-MageNbSched-primary' },
      options.mode === 'edit' ? 'Save' : 'Create'
    );
    const cancel = el('button', { type: 'button', class: 'jp-MageNbSched-button' }, 'Cancel');
    cancel.addEventListener('click', () => this.options.onCancel());

    this.form.append(heading, this.formError);
    for (const field of FORM_FIELDS) {
      this.form.append(this.row(field));
    }
    this.discard = new DiscardConfirm('Discard the changes to this schedule?', () =>
      this.options.onCancel()
    );
    this.form.append(
      el('div', { class: 'jp-MageNbSched-form-buttons' }, this.saveButton, cancel),
      this.discard.node
    );
    this.setValues(initial);
    // As the inputs hold them (an input may normalise what it is given): "changed" means the
    // person changed something, not that an input rewrote a value.
    this.initial = this.readValues();
    this.updateVisibility();

    this.form.addEventListener('submit', this.onSubmit);
    this.form.addEventListener('keydown', this.onKeyDown);
    this.form.addEventListener('change', this.onChange);
    this.node = this.form;
  }

  /** Focus the first input that has an error, else the name. */
  focus(): void {
    const invalid = this.form.querySelector<HTMLElement>('[aria-invalid="true"]');
    (invalid ?? this.controls.get('name'))?.focus();
  }

  /** Remove the form; a save still under way is ignored when it ends. */
  dispose(): void {
    if (this.disposed) {
      return;
    }
    this.disposed = true;
    this.form.removeEventListener('submit', this.onSubmit);
    this.form.removeEventListener('keydown', this.onKeyDown);
    this.form.removeEventListener('change', this.onChange);
    this.form.remove();
  }

  // -------------------------------------------------------------------------------------------

  private id(field: FormField): string {
    return `${this.prefix}-${field}`;
  }

  private row(field: FormField): HTMLElement {
    const id = this.id(field);
    const attrs = (extra: Record<string, string> = {}) => ({ name: field, ...extra });
    let control: Control;
    let label = '';
    let hint: string | null = null;
    switch (field) {
      case 'name':
        label = 'Name';
        control = el('input', attrs({ type: 'text', autocomplete: 'off' }));
        break;
      case 'schedule_type':
        label = 'Type';
        control = el(
          'select',
          attrs(),
          el('option', { value: 'time' }, 'time — on an interval'),
          el('option', { value: 'event' }, 'event — when an event matches'),
          el('option', { value: 'api' }, 'api — when called')
        );
        break;
      case 'schedule_interval':
        label = 'Interval';
        control = el(
          'select',
          attrs(),
          ...[...INTERVAL_PRESETS, 'custom'].map(value =>
            el('option', { value }, INTERVAL_LABELS[value] ?? value)
          )
        );
        break;
      case 'cron':
        label = 'Cron expression';
        control = el(
          'input',
          attrs({ type: 'text', placeholder: '0 9 * * 1-5', spellcheck: 'false' })
        );
        hint = 'minute hour day-of-month month day-of-week, in the time zone below';
        break;
      case 'start_time':
        label = 'Start time';
        control = el('input', attrs({ type: 'datetime-local' }));
        hint = 'optional; wall time in the time zone below';
        break;
      case 'timezone': {
        label = 'Time zone';
        const listId = `${id}-zones`;
        control = el(
          'input',
          attrs({ type: 'text', list: listId, spellcheck: 'false', autocomplete: 'off' })
        );
        const zones = el('datalist', { id: listId });
        for (const zone of knownTimezones()) {
          zones.append(el('option', { value: zone }));
        }
        this.rows.set(
          field,
          this.wrap(field, label, control, 'IANA name, e.g. Europe/Berlin', zones)
        );
        this.controls.set(field, control);
        return this.rows.get(field) as HTMLElement;
      }
      case 'status':
        label = 'Status';
        control = el(
          'select',
          attrs(),
          el('option', { value: 'active' }, 'active'),
          el('option', { value: 'inactive' }, 'inactive (paused)')
        );
        break;
      case 'variables':
        label = 'Variables (JSON)';
        control = el(
          'textarea',
          attrs({ rows: '3', placeholder: '{"env": "production"}', spellcheck: 'false' })
        );
        break;
      case 'sla':
        label = 'SLA (seconds)';
        control = el('input', attrs({ type: 'text', inputmode: 'numeric', placeholder: 'none' }));
        break;
      case 'timeout':
        label = 'Timeout (seconds)';
        control = el('input', attrs({ type: 'text', inputmode: 'numeric', placeholder: 'none' }));
        break;
      case 'skip_if_previous_running':
        label = 'Skip a run while the previous one is still running';
        control = el('input', { name: field, type: 'checkbox', class: 'jp-MageNbSched-checkbox' });
        break;
      case 'description':
        label = 'Description';
        control = el('textarea', attrs({ rows: '2' }));
        break;
      case 'event_matchers':
        label = 'Event matchers (JSON)';
        control = el(
          'textarea',
          attrs({
            rows: '4',
            spellcheck: 'false',
            placeholder: '[{"event_type": "aws_event", "pattern": {"source": ["aws.s3"]}}]'
          })
        );
        break;
      case 'token':
        label = 'API token';
        control = el(
          'input',
          attrs({ type: 'password', autocomplete: 'new-password', spellcheck: 'false' })
        );
        hint =
          this.options.mode === 'edit'
            ? 'optional: a new token of your own (16+ URL-safe characters); empty keeps the current one'
            : 'optional: your own token (16+ URL-safe characters); empty: one is generated';
        break;
    }
    this.controls.set(field, control);
    const row = this.wrap(field, label, control, hint);
    this.rows.set(field, row);
    return row;
  }

  private wrap(
    field: FormField,
    label: string,
    control: Control,
    hint: string | null,
    extra: Node | null = null
  ): HTMLElement {
    const row = fieldRow({
      id: this.id(field),
      label,
      control,
      hint,
      attrs: { 'data-field-row': field }
    });
    if (extra) {
      row.append(extra);
    }
    return row;
  }

  private setValues(values: IScheduleFormValues): void {
    for (const field of FORM_FIELDS) {
      const control = this.controls.get(field);
      const value = values[field];
      if (control instanceof HTMLInputElement && control.type === 'checkbox') {
        control.checked = value === true;
      } else if (control) {
        control.value = String(value);
      }
    }
  }

  private readValues(): IScheduleFormValues {
    const text = (field: FormField) => this.controls.get(field)?.value ?? '';
    const check = this.controls.get('skip_if_previous_running') as HTMLInputElement;
    return {
      name: text('name'),
      schedule_type: text('schedule_type') as IScheduleFormValues['schedule_type'],
      schedule_interval: text('schedule_interval') as IScheduleFormValues['schedule_interval'],
      cron: text('cron'),
      start_time: text('start_time'),
      timezone: text('timezone'),
      variables: text('variables'),
      sla: text('sla'),
      timeout: text('timeout'),
      skip_if_previous_running: check.checked,
      description: text('description'),
      event_matchers: text('event_matchers'),
      status: text('status') as IScheduleFormValues['status'],
      token: text('token')
    };
  }

  private updateVisibility(): void {
    const shown = visibleFields(this.readValues());
    for (const [field, row] of this.rows) {
      row.hidden = !shown.has(field);
    }
  }

  private clearErrors(): void {
    clearFieldErrors(this.form, this.formError);
  }

  /** Put each error under its input; one whose field has no visible input goes on top. */
  private showErrors(errors: unknown[], values: IScheduleFormValues): void {
    const shown = visibleFields(values);
    const general: IErrorTexts[] = [];
    for (const err of errors) {
      const texts = errorTexts(err);
      const field =
        err instanceof FieldError || err instanceof ApiError ? fieldOfError(err, values) : null;
      const control = field ? this.controls.get(field) : undefined;
      const row = field ? this.rows.get(field) : undefined;
      if (field && control && row && shown.has(field)) {
        // data-field is the form's input name, as the browser tests look it up.
        showFieldError(row, control, field, texts);
      } else {
        general.push(texts);
      }
    }
    showFormErrors(this.formError, general);
  }

  private setSaving(saving: boolean): void {
    this.saving = saving;
    this.saveButton.disabled = saving;
    this.form.setAttribute('aria-busy', String(saving));
  }

  private readonly onSubmit = (event: Event): void => {
    event.preventDefault();
    if (this.saving) {
      return;
    }
    void this.submit();
  };

  private async submit(): Promise<void> {
    const values = this.readValues();
    this.clearErrors();
    const local = localErrors(values);
    if (local.length) {
      this.showErrors(local, values);
      this.focus();
      return;
    }
    this.setSaving(true);
    let result: ISaveResult;
    try {
      result = await saveSchedule(this.options.api, values, {
        mode: this.options.mode,
        pipelineUuid: this.options.pipelineUuid,
        original: this.options.schedule
      });
    } catch (err) {
      if (!this.disposed) {
        this.setSaving(false);
        this.showErrors([err], values);
        this.focus();
      }
      return;
    }
    if (this.disposed) {
      return;
    }
    this.setSaving(false);
    this.options.onSaved(result);
  }

  /** True when the form holds something other than what it opened with. */
  get isChanged(): boolean {
    return formChanged(this.initial, this.readValues());
  }

  private readonly onKeyDown = (event: KeyboardEvent): void => {
    onEscape(event, this.isChanged, this.discard, () => this.options.onCancel());
  };

  private readonly onChange = (event: Event): void => {
    const target = event.target as Control | null;
    if (target && (target.name === 'schedule_type' || target.name === 'schedule_interval')) {
      this.updateVisibility();
    }
  };
}
