import {
  ILabShell,
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette, Notification } from '@jupyterlab/apputils';
import { INotebookTracker } from '@jupyterlab/notebook';
import { ServerConnection } from '@jupyterlab/services';
import { LabIcon } from '@jupyterlab/ui-components';

import { ApiClient } from './api';
import { PanelModel } from './model';
import { PANEL_ID, SchedulesPanel } from './panel';

export const COMMAND_OPEN = 'mage-nb-sched:open-panel';

const clockSvg =
  '<svg xmlns="http://www.w3.org/2000/svg" width="16" viewBox="0 0 24 24">' +
  '<g class="jp-icon3" fill="#616161"><path d="M12 2a10 10 0 1 0 0 20 10 10 0 0 0 0-20zm0 18a8 8 0 ' +
  '1 1 0-16 8 8 0 0 1 0 16zm.5-13H11v6l5.2 3.2.8-1.2-4.5-2.7z"/></g></svg>';

export const scheduleIcon = new LabIcon({ name: 'mage-nb-sched:clock', svgstr: clockSvg });

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'mage-nb-sched:plugin',
  description: 'A sidebar of the notebook schedules of mage_nb_sched.',
  autoStart: true,
  optional: [ICommandPalette, ILayoutRestorer, INotebookTracker, ILabShell],
  activate: (
    app: JupyterFrontEnd,
    palette: ICommandPalette | null,
    restorer: ILayoutRestorer | null,
    notebooks: INotebookTracker | null,
    labShell: ILabShell | null
  ) => {
    const settings = ServerConnection.makeSettings();
    const api = new ApiClient(settings.baseUrl, (url, init) =>
      ServerConnection.makeRequest(url, init, settings)
    );
    const model = new PanelModel(api);
    const panel = new SchedulesPanel(model, {
      error: message => Notification.error(message, { autoClose: 8000 }),
      info: message => Notification.info(message, { autoClose: 3000 })
    });
    panel.title.icon = scheduleIcon;
    app.shell.add(panel, 'left', { rank: 700 });
    if (restorer) {
      restorer.add(panel, PANEL_ID);
    }

    if (notebooks) {
      const follow = () => panel.setNotebookPath(notebooks.currentWidget?.context.path ?? null);
      notebooks.currentChanged.connect(follow);
      follow();
    }
    void labShell;

    app.commands.addCommand(COMMAND_OPEN, {
      label: 'Open the schedules panel',
      caption: 'Show the notebook schedules sidebar',
      icon: scheduleIcon,
      execute: () => {
        app.shell.activateById(PANEL_ID);
      }
    });
    if (palette) {
      palette.addItem({ command: COMMAND_OPEN, category: 'Notebook schedules' });
    }
  }
};

export default plugin;
