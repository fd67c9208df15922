import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { Dialog, ICommandPalette, Notification, showDialog } from '@jupyterlab/apputils';
import {
  INotebookTracker,
  INotebookWidgetFactory,
  NotebookPanel,
  NotebookWidgetFactory
} from '@jupyterlab/notebook';
import { ServerConnection } from '@jupyterlab/services';
import { LabIcon, ToolbarButton } from '@jupyterlab/ui-components';

import { ApiClient } from './api';
import { IAlert, PanelModel, alertKey, pipelineUuidFromPath } from './model';
import { PANEL_ID, SchedulesPanel } from './panel';
import { ExecutedNotebooksDrive, RUNS_DRIVE, executedNotebookPath } from './runsDrive';
import { alertOfServerEvent } from './serverEvents';
import type { IPipelineRun } from './types';

export const COMMAND_OPEN = 'mage-nb-sched:open-panel';
export const COMMAND_SCHEDULE = 'mage-nb-sched:schedule-notebook';
export const COMMAND_RUN = 'mage-nb-sched:run-notebook';
/** The widget factory that opens executed notebooks without a kernel. */
export const EXECUTED_FACTORY = 'Executed notebook';

const clockSvg =
  '<svg xmlns="http://www.w3.org/2000/svg" width="16" viewBox="0 0 24 24">' +
  '<g class="jp-icon3" fill="#616161"><path d="M12 2a10 10 0 1 0 0 20 10 10 0 0 0 0-20zm0 18a8 8 0 ' +
  '1 1 0-16 8 8 0 0 1 0 16zm.5-13H11v6l5.2 3.2.8-1.2-4.5-2.7z"/></g></svg>';

export const scheduleIcon = new LabIcon({ name: 'mage-nb-sched:clock', svgstr: clockSvg });

/** Alerts already shown, so the server's event and the panel's poll do not both toast (the
 * newest few hundred: a run alerts within seconds of the event, never days later). */
const shownAlerts = new Set<string>();
const MAX_SHOWN_ALERTS = 500;

function toast(alert: IAlert, show: () => void): void {
  const key = alertKey(alert);
  if (shownAlerts.has(key)) {
    return;
  }
  shownAlerts.add(key);
  if (shownAlerts.size > MAX_SHOWN_ALERTS) {
    shownAlerts.delete(shownAlerts.values().next().value as string);
  }
  const options = { autoClose: 10000, actions: [{ label: 'Show', callback: show }] };
  if (alert.kind === 'failure') {
    Notification.error(alert.text, options);
  } else {
    Notification.warning(alert.text, options);
  }
}

/** Put text on the clipboard; false when the browser refused (the caller shows the text). */
async function copyText(text: string): Promise<boolean> {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    // No async clipboard (not a secure context, or no permission): the classic way, whose
    // answer says whether it worked.
    const area = document.createElement('textarea');
    area.value = text;
    area.setAttribute('readonly', '');
    area.style.position = 'fixed';
    area.style.opacity = '0';
    document.body.append(area);
    area.select();
    let copied = false;
    try {
      copied = document.execCommand('copy');
    } catch {
      copied = false;
    }
    area.remove();
    return copied;
  }
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'mage-nb-sched:plugin',
  description: 'A sidebar of the notebook schedules of mage_nb_sched.',
  autoStart: true,
  optional: [ICommandPalette, ILayoutRestorer, INotebookTracker, INotebookWidgetFactory],
  activate: (
    app: JupyterFrontEnd,
    palette: ICommandPalette | null,
    restorer: ILayoutRestorer | null,
    notebooks: INotebookTracker | null,
    notebookFactory: NotebookWidgetFactory.IFactory | null
  ) => {
    const settings = ServerConnection.makeSettings();
    const api = new ApiClient(settings.baseUrl, (url, init) =>
      ServerConnection.makeRequest(url, init, settings)
    );

    // Executed notebooks open from a read-only drive, in a notebook view that starts no kernel.
    const drive = new ExecutedNotebooksDrive(api, settings);
    app.serviceManager.contents.addDrive(drive);
    let executedFactory = 'default';
    if (notebookFactory instanceof NotebookWidgetFactory) {
      const factory = new NotebookWidgetFactory({
        name: EXECUTED_FACTORY,
        label: 'Executed notebook (read-only, no kernel)',
        fileTypes: ['notebook'],
        modelName: 'notebook',
        preferKernel: false,
        canStartKernel: false,
        rendermime: notebookFactory.rendermime,
        contentFactory: notebookFactory.contentFactory,
        mimeTypeService: notebookFactory.mimeTypeService,
        editorConfig: notebookFactory.editorConfig,
        notebookConfig: notebookFactory.notebookConfig
      });
      // Read-only however it is opened ("Open With" offers it for any notebook too).
      factory.widgetCreated.connect((_, widget) => {
        void widget.context.ready.then(() => {
          if (widget.content.model) {
            widget.content.model.readOnly = true;
          }
        });
      });
      app.docRegistry.addWidgetFactory(factory);
      executedFactory = EXECUTED_FACTORY;
    }
    const openNotebook = (run: IPipelineRun): void => {
      const path = executedNotebookPath(run.id, run.pipeline_uuid);
      app.commands
        .execute('docmanager:open', { path, factory: executedFactory })
        .then(widget => {
          if (widget instanceof NotebookPanel) {
            widget.title.label = `${run.pipeline_uuid.split('/').pop()} · run ${run.id}`;
            void widget.context.ready.then(() => {
              // Nothing typed into it can be saved (the drive is read-only).
              if (widget.content.model) {
                widget.content.model.readOnly = true;
              }
              widget.node.dataset.mageRunId = String(run.id);
            });
          }
        })
        .catch(err =>
          Notification.error(`Cannot open the notebook of run ${run.id}: ${err.message ?? err}`)
        );
    };

    const model = new PanelModel(api);
    const panel = new SchedulesPanel(model, {
      notifier: {
        error: message => Notification.error(message, { autoClose: 8000 }),
        info: message => Notification.info(message, { autoClose: 4000 }),
        warning: message => Notification.warning(message, { autoClose: 8000 })
      },
      openNotebook,
      copyText,
      confirm: async (title, body, action) => {
        const answer = await showDialog({
          title,
          body,
          buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: action })]
        });
        return answer.button.accept;
      }
    });
    panel.title.icon = scheduleIcon;
    app.shell.add(panel, 'left', { rank: 700 });
    if (restorer) {
      restorer.add(panel, PANEL_ID);
    }
    const showPanel = () => app.shell.activateById(PANEL_ID);
    const showAlert = (alert: IAlert) => () => {
      showPanel();
      void panel.showRun(alert.scheduleId, alert.runId);
    };

    // Failures and missed SLAs: the scheduler's events (in this server) and the panel's polls
    // (a scheduler elsewhere) both raise them; each run's alert shows once.
    model.onAlert(alert => toast(alert, showAlert(alert)));
    // A retried run that fails again alerts again.
    model.onRestart(runId => {
      shownAlerts.delete(alertKey({ kind: 'failure', runId }));
      shownAlerts.delete(alertKey({ kind: 'sla_breach', runId }));
    });
    app.serviceManager.events.stream.connect((_, event) => {
      const alert = alertOfServerEvent(event as Record<string, unknown>);
      if (alert) {
        toast(alert, showAlert(alert));
        panel.refreshSoon();
      }
    });

    // The notebook the panel follows: the tracker's current one (it stays while focus is in a
    // sidebar or an executed notebook, so its runs stay in view beside it).
    const trackedPath = (): string | null => notebooks?.currentWidget?.context.path ?? null;
    if (notebooks) {
      let followed: NotebookPanel | null = null;
      const follow = () => {
        const path = trackedPath();
        if (!path?.startsWith(`${RUNS_DRIVE}:`)) {
          panel.setNotebookPath(path);
        }
      };
      const onCurrent = () => {
        // A rename or "Save As" changes the path without changing the current notebook.
        followed?.context.pathChanged.disconnect(follow);
        followed = notebooks.currentWidget;
        followed?.context.pathChanged.connect(follow);
        follow();
      };
      notebooks.currentChanged.connect(onCurrent);
      onCurrent();
    }
    // The notebook a command acts on: a path given by the caller (the toolbar button), else the
    // main area's current widget when it is a tracked notebook — never a notebook left behind
    // the one in focus (an executed notebook, an editor).
    const commandNotebook = (args: { path?: unknown }): NotebookPanel | null => {
      if (!notebooks) {
        return null;
      }
      if (typeof args.path === 'string') {
        return notebooks.find(w => w.context.path === args.path) ?? null;
      }
      const current = notebooks.currentWidget;
      return current && current === app.shell.currentWidget ? current : null;
    };
    const uuidOf = (widget: NotebookPanel | null): string | null => {
      const path = widget?.context.path ?? null;
      return path?.startsWith(`${RUNS_DRIVE}:`) ? null : pipelineUuidFromPath(path);
    };

    app.commands.addCommand(COMMAND_OPEN, {
      label: 'Open the schedules panel',
      caption: 'Show the notebook schedules sidebar',
      icon: scheduleIcon,
      execute: () => {
        showPanel();
      }
    });
    app.commands.addCommand(COMMAND_SCHEDULE, {
      label: 'Schedule this notebook…',
      caption: 'Create a schedule (time, event or API trigger) for the notebook in focus',
      icon: scheduleIcon,
      isEnabled: args => uuidOf(commandNotebook(args)) !== null,
      execute: args => {
        const widget = commandNotebook(args);
        const uuid = uuidOf(widget);
        showPanel();
        if (widget) {
          panel.setNotebookPath(widget.context.path);
        }
        panel.openCreateForm(uuid);
      }
    });
    app.commands.addCommand(COMMAND_RUN, {
      label: 'Run this notebook now (scheduler)',
      caption: 'Save the notebook, then run it now as a pipeline run, without a schedule',
      isEnabled: args => uuidOf(commandNotebook(args)) !== null,
      execute: async args => {
        const widget = commandNotebook(args);
        const uuid = uuidOf(widget);
        if (!widget || !uuid) {
          return;
        }
        // A run executes the notebook as saved: save what is on screen first.
        if (widget.context.model.dirty) {
          try {
            await widget.context.save();
          } catch (err) {
            Notification.error(
              `Not run: ${widget.context.path} could not be saved first (${(err as Error).message ?? err}).`
            );
            return;
          }
        }
        showPanel();
        panel.setNotebookPath(widget.context.path);
        await panel.runNotebook(uuid);
      }
    });
    if (palette) {
      for (const command of [COMMAND_OPEN, COMMAND_SCHEDULE, COMMAND_RUN]) {
        palette.addItem({ command, category: 'Notebook schedules' });
      }
    }
    app.contextMenu.addItem({ type: 'separator', selector: '.jp-Notebook', rank: 90 });
    app.contextMenu.addItem({ command: COMMAND_SCHEDULE, selector: '.jp-Notebook', rank: 91 });
    app.contextMenu.addItem({ command: COMMAND_RUN, selector: '.jp-Notebook', rank: 92 });

    // A button in every notebook's toolbar.
    app.docRegistry.addWidgetExtension('Notebook', {
      createNew: (widget: NotebookPanel) => {
        const button = new ToolbarButton({
          icon: scheduleIcon,
          tooltip: 'Schedule this notebook (mage_nb_sched)',
          label: 'Schedule',
          className: 'jp-MageNbSched-toolbarButton',
          onClick: () => {
            void app.commands.execute(COMMAND_SCHEDULE, { path: widget.context.path });
          }
        });
        button.node.dataset.command = COMMAND_SCHEDULE;
        widget.toolbar.addItem('mage-nb-sched-schedule', button);
        return button;
      }
    });
  }
};

export default plugin;
