import { afterEach, describe, expect, it, vi } from 'vitest';
import { cleanup, render, screen } from '@testing-library/svelte';
import userEvent from '@testing-library/user-event';
import OutputView from '../src/lib/components/OutputView.svelte';
import ResultSummary from '../src/lib/components/ResultSummary.svelte';
import StatusTimeline from '../src/lib/components/StatusTimeline.svelte';
import NotificationBell from '../src/lib/components/NotificationBell.svelte';
import { AnsiParser } from '../src/lib/ansi';
import { notifications } from '../src/lib/stores/notifications.svelte';
import { view } from './helpers';

afterEach(cleanup);

describe('OutputView', () => {
  it('renders program output as text in styled spans, never as markup', () => {
    const parser = new AnsiParser();
    const chunks = [
      { stream: 'stdout' as const, seq: 0, segments: parser.feed('<b>not bold</b> \x1b[32mgreen\x1b[0m\n') },
      { stream: 'stderr' as const, seq: 1, segments: new AnsiParser().feed('<script>alert(1)</script>') },
    ];
    const { container } = render(OutputView, { chunks });
    const log = screen.getByRole('log', { name: 'Output' });
    expect(log.textContent).toBe('<b>not bold</b> green\n<script>alert(1)</script>');
    expect(container.querySelector('b')).toBeNull();
    expect(container.querySelector('script')).toBeNull();
    const green = [...log.querySelectorAll('span span')].find((s) => s.textContent === 'green') as HTMLElement;
    expect(green.getAttribute('style')).toContain('var(--ansi-2)');
    expect(log.querySelector('[data-stream="stderr"]')?.textContent).toBe('<script>alert(1)</script>');
  });
});

describe('ResultSummary', () => {
  it('shows exit code, times, memory, the id to copy and a truncation notice', async () => {
    const writeText = vi.fn().mockResolvedValue(undefined);
    Object.defineProperty(navigator, 'clipboard', { value: { writeText }, configurable: true });
    render(ResultSummary, { result: view({ exit_code: 3, stdout_truncated: true, execution_id: 'abc-123' }) });
    expect(screen.getByTestId('exit-code')).toHaveTextContent('3');
    expect(screen.getByText('1.23 s')).toBeInTheDocument();
    expect(screen.getByText('56 ms')).toBeInTheDocument();
    expect(screen.getByText('2.0 MiB')).toBeInTheDocument();
    expect(screen.getByTestId('truncated')).toHaveTextContent('stdout');
    await userEvent.click(screen.getByRole('button', { name: 'Copy execution id' }));
    expect(writeText).toHaveBeenCalledWith('abc-123');
    expect(await screen.findByText('Copied')).toBeInTheDocument();
  });

  it('has no truncation notice when nothing was cut', () => {
    render(ResultSummary, { result: view() });
    expect(screen.queryByTestId('truncated')).toBeNull();
  });
});

describe('StatusTimeline', () => {
  it('lists the statuses reached and a reconnecting marker', () => {
    render(StatusTimeline, {
      entries: [
        { status: 'queued', at: '2026-11-24T10:00:00Z' },
        { status: 'running', at: null },
      ],
      connection: 'reconnecting',
    });
    const items = screen.getAllByRole('listitem');
    expect(items.map((i) => i.textContent?.trim().split(/\s/)[0])).toEqual(['queued', 'running', 'reconnecting…']);
  });
});

describe('NotificationBell', () => {
  it('shows the unread count, lists notifications and marks one read', async () => {
    const markRead = vi.spyOn(notifications, 'markRead').mockImplementation(async (id) => {
      const item = notifications.items.find((n) => n.id === id);
      if (item) item.read = true;
      notifications.unread -= 1;
    });
    notifications.items = [
      { id: 'n1', kind: 'execution_finished', title: 'python run completed', body: 'exit 0', execution_id: 'e1', status: 'completed', read: false, created_at: '2026-11-24T10:00:00Z' },
    ];
    notifications.unread = 1;
    render(NotificationBell);
    const bell = screen.getByRole('button', { name: 'Notifications, 1 unread' });
    expect(screen.getByTestId('unread-count')).toHaveTextContent('1');
    await userEvent.click(bell);
    expect(bell).toHaveAttribute('aria-expanded', 'true');
    expect(screen.getByText('python run completed')).toBeInTheDocument();
    await userEvent.click(screen.getByRole('button', { name: 'Mark "python run completed" read' }));
    expect(markRead).toHaveBeenCalledWith('n1');
    expect(screen.queryByTestId('unread-count')).toBeNull();
    expect(screen.getByRole('button', { name: 'Notifications, 0 unread' })).toBeInTheDocument();
  });
});
