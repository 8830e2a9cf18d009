import { afterEach, describe, expect, it, vi } from 'vitest';
import { cleanup, render, screen, waitFor } from '@testing-library/svelte';
import userEvent from '@testing-library/user-event';

const api = vi.hoisted(() => ({
  runtimes: vi.fn(),
  execute: vi.fn(),
  execution: vi.fn(),
  cancel: vi.fn(),
  createScript: vi.fn(),
  updateScript: vi.fn(),
  executionEventsUrl: (id: string) => `/api/v1/executions/${id}/events`,
}));
vi.mock('../src/lib/api', () => ({ api }));
// The page's run follows SSE; here the stream stays silent.
vi.mock('../src/lib/sse', () => ({
  openStream: () => ({ close: () => undefined, finished: Promise.resolve(), lastEventId: () => null }),
}));

import Editor from '../src/pages/Editor.svelte';
import { workspace } from '../src/lib/stores/workspace.svelte';

const runtimes = {
  languages: [
    { lang: 'python', default_version: '3.11', versions: [{ version: '3.11', file_name: 'main.py', example: 'print("hello from python")' }] },
    { lang: 'bash', default_version: '5.2', versions: [{ version: '5.2', file_name: 'main.sh', example: 'echo "hello from bash"' }] },
  ],
  limits: { max_script_bytes: 1000, max_stdin_bytes: 1000, default_timeout_seconds: 10, max_timeout_seconds: 60, memory_mb: 256, max_output_bytes: 1000, max_priority: 9 },
};

afterEach(cleanup);

describe('Editor page', () => {
  it('offers the runtimes, loads the example per language and runs the script with stdin', async () => {
    api.runtimes.mockResolvedValue(runtimes);
    api.execute.mockResolvedValue({ execution_id: 'e42', status: 'queued' });
    api.createScript.mockImplementation(async (body: { name: string }) => ({ id: 's1', ...body }));
    render(Editor);

    const language = await screen.findByRole('combobox', { name: 'Language' });
    await waitFor(() => expect(language).toHaveValue('python'));
    const content = document.querySelector('.cm-content');
    expect(content).toHaveAttribute('aria-label', 'Script');
    await waitFor(() => expect(content?.textContent).toBe('print("hello from python")'));

    await userEvent.selectOptions(language, 'bash');
    await waitFor(() => expect(document.querySelector('.cm-content')?.textContent).toBe('echo "hello from bash"'));
    expect(screen.getByRole('combobox', { name: 'Version' })).toHaveValue('5.2');

    await userEvent.type(screen.getByLabelText('Standard input'), 'input text');
    await userEvent.click(screen.getByRole('button', { name: 'Run' }));
    await waitFor(() =>
      expect(api.execute).toHaveBeenCalledWith({ script: 'echo "hello from bash"', lang: 'bash', lang_version: '5.2', stdin: 'input text' }),
    );
    expect(await screen.findByRole('list', { name: 'Status timeline' })).toHaveTextContent('queued');
    expect(screen.getByRole('button', { name: 'Cancel' })).toBeEnabled();
    expect(window.location.hash).toBe('#/editor?execution=e42');

    await userEvent.click(screen.getByRole('button', { name: 'Save script' }));
    expect(await screen.findByRole('status')).toHaveTextContent('Give the script a name to save it');
    await userEvent.type(screen.getByRole('textbox', { name: 'Script name' }), 'greet');
    await userEvent.click(screen.getByRole('button', { name: 'Save script' }));
    await waitFor(() => expect(api.createScript).toHaveBeenCalledWith({ name: 'greet', lang: 'bash', lang_version: '5.2', script: 'echo "hello from bash"' }));
    expect(workspace.draft.scriptId).toBe('s1');
    expect(screen.getByRole('button', { name: 'Save' })).toBeInTheDocument();
  });
});
