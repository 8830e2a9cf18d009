import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { cleanup, render, screen, waitFor } from '@testing-library/svelte';
import userEvent from '@testing-library/user-event';

const api = vi.hoisted(() => ({
  executions: vi.fn(),
  execution: vi.fn(),
  runtimes: vi.fn(),
  login: vi.fn(),
  scripts: vi.fn(),
  updateScript: vi.fn(),
  deleteScript: vi.fn(),
}));
vi.mock('../src/lib/api', () => ({ api }));

import History from '../src/pages/History.svelte';
import Login from '../src/pages/Login.svelte';
import Scripts from '../src/pages/Scripts.svelte';
import { ApiError } from '../src/lib/api/client';
import { workspace } from '../src/lib/stores/workspace.svelte';

function summary(id: string, status = 'completed') {
  return { execution_id: id, user_id: 'u', status, lang: 'python', lang_version: '3.11', priority: 0, timeout_seconds: 10, exit_code: 0, error_type: null, created_at: '2026-11-24T10:00:00Z', started_at: null, finished_at: null };
}

function script(id: string, name: string) {
  return { id, name, lang: 'python', lang_version: '3.11', script: `print("${name}")`, description: '', created_at: '2026-11-24T10:00:00Z', updated_at: '2026-11-24T10:00:00Z' };
}

beforeEach(() => {
  vi.resetAllMocks();
  api.runtimes.mockResolvedValue({ languages: [{ lang: 'python', default_version: '3.11', versions: [{ version: '3.11', file_name: 'main.py', example: 'print(1)' }] }], limits: {} });
  window.location.hash = '';
});
afterEach(cleanup);

describe('History page', () => {
  it('filters as soon as a filter changes, pages forward and back', async () => {
    // Two pages of failed runs (g then h) and one page of everything.
    api.executions.mockImplementation(async (query: { status?: string; cursor?: string }) => {
      if (query.status !== 'failed') return { items: [summary('a'), summary('b')], next_cursor: null };
      return query.cursor === 'g'
        ? { items: [summary('h', 'failed')], next_cursor: null }
        : { items: [summary('g', 'failed')], next_cursor: 'g' };
    });
    render(History);
    await waitFor(() => expect(screen.getAllByTestId('history-row')).toHaveLength(2));
    expect(api.executions).toHaveBeenLastCalledWith({ status: undefined, lang: undefined, cursor: undefined, limit: '20' });
    expect(screen.getByRole('button', { name: 'Older' })).toBeDisabled();

    await userEvent.selectOptions(screen.getByTestId('filter-status'), 'failed');
    await waitFor(() => expect(api.executions).toHaveBeenLastCalledWith({ status: 'failed', lang: undefined, cursor: undefined, limit: '20' }));
    await waitFor(() => expect(screen.getByRole('button', { name: 'Older' })).toBeEnabled());
    expect(screen.getByRole('button', { name: 'Newer' })).toBeDisabled();

    await userEvent.click(screen.getByRole('button', { name: 'Older' }));
    await waitFor(() => expect(screen.getByRole('link', { name: 'Open run h' })).toBeInTheDocument());
    expect(api.executions).toHaveBeenLastCalledWith({ status: 'failed', lang: undefined, cursor: 'g', limit: '20' });
    expect(screen.getByRole('button', { name: 'Older' })).toBeDisabled();

    await userEvent.click(screen.getByRole('button', { name: 'Newer' }));
    await waitFor(() => expect(screen.getByRole('link', { name: 'Open run g' })).toHaveAttribute('href', '#/editor?execution=g'));
    expect(api.executions).toHaveBeenLastCalledWith({ status: 'failed', lang: undefined, cursor: undefined, limit: '20' });
  });

  it('says so when nothing matches', async () => {
    api.executions.mockResolvedValue({ items: [], next_cursor: null });
    render(History);
    expect(await screen.findByText('No runs yet.')).toBeInTheDocument();
  });
});

describe('Login page', () => {
  it('shows the server message of a refused sign-in', async () => {
    api.login.mockRejectedValue(new ApiError(423, 'account_locked', 'too many failed sign-ins', null, '2026-11-24T10:15:00Z'));
    render(Login);
    await userEvent.type(screen.getByLabelText('Username'), 'ann');
    await userEvent.type(screen.getByLabelText('Password'), 'secret-password');
    await userEvent.click(screen.getByRole('button', { name: 'Sign in' }));
    expect(await screen.findByRole('alert')).toHaveTextContent(/too many failed sign-ins \(until/);
    expect(api.login).toHaveBeenCalledWith({ username: 'ann', password: 'secret-password' });
  });
});

describe('Scripts page', () => {
  it('renames, deletes and opens a script in the editor', async () => {
    api.scripts.mockResolvedValue({ items: [script('s1', 'one'), script('s2', 'two')], next_cursor: null });
    api.updateScript.mockImplementation(async (id: string, body: { name: string }) => script(id, body.name));
    api.deleteScript.mockResolvedValue(undefined);
    vi.spyOn(window, 'confirm').mockReturnValue(true);
    render(Scripts);
    await waitFor(() => expect(screen.getAllByTestId('script-row')).toHaveLength(2));

    await userEvent.click(screen.getByRole('button', { name: 'Rename one' }));
    const input = screen.getByLabelText('New name');
    await userEvent.clear(input);
    await userEvent.type(input, 'uno{Enter}');
    await waitFor(() => expect(screen.getByText('uno')).toBeInTheDocument());
    expect(api.updateScript).toHaveBeenCalledWith('s1', { name: 'uno' });

    await userEvent.click(screen.getByRole('button', { name: 'Delete two' }));
    await waitFor(() => expect(screen.getAllByTestId('script-row')).toHaveLength(1));
    expect(api.deleteScript).toHaveBeenCalledWith('s2');

    await userEvent.click(screen.getByRole('button', { name: 'Open uno in the editor' }));
    expect(workspace.draft).toMatchObject({ scriptId: 's1', scriptName: 'uno', script: 'print("uno")', lang: 'python' });
    expect(window.location.hash).toBe('#/editor');
  });
});

describe('History page answers', () => {
  it('keeps the answer of the latest request when an older one comes late', async () => {
    let releaseFirst: (page: unknown) => void = () => undefined;
    api.executions
      .mockImplementationOnce(() => new Promise((resolve) => (releaseFirst = resolve)))
      .mockResolvedValueOnce({ items: [summary('new', 'failed')], next_cursor: null });
    render(History);
    await userEvent.selectOptions(screen.getByTestId('filter-status'), 'failed');
    await waitFor(() => expect(screen.getByRole('link', { name: 'Open run new' })).toBeInTheDocument());
    releaseFirst({ items: [summary('stale')], next_cursor: null });
    await new Promise((resolve) => setTimeout(resolve, 10));
    expect(screen.queryByRole('link', { name: 'Open run stale' })).toBeNull();
    expect(screen.getByRole('link', { name: 'Open run new' })).toBeInTheDocument();
  });
});
