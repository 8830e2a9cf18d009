import { describe, expect, it, vi } from 'vitest';
import { NotificationStore } from '../src/lib/stores/notifications.svelte';
import { FakeStreams } from './helpers';

function note(id: string, read = false) {
  return { id, kind: 'execution_finished', title: `Run ${id} completed`, body: 'exit 0', execution_id: id, status: 'completed' as const, read, created_at: '2026-11-24T10:00:00Z' };
}

function setup() {
  const streams = new FakeStreams();
  const api = {
    notifications: vi.fn().mockResolvedValue({ items: [note('n2'), note('n1', true)], next_cursor: 'c1', unread_count: 1 }),
    markRead: vi.fn().mockResolvedValue(undefined),
    markAllRead: vi.fn().mockResolvedValue(undefined),
    deleteNotification: vi.fn().mockResolvedValue(undefined),
    notificationStreamUrl: () => '/api/v1/notifications/stream',
  };
  return { store: new NotificationStore(api, streams.open), api, streams };
}

describe('NotificationStore', () => {
  it('loads a page and follows the stream (unread count, new notifications once)', async () => {
    const { store, streams } = setup();
    await store.load();
    expect(store.items.map((n) => n.id)).toEqual(['n2', 'n1']);
    expect(store.unread).toBe(1);
    store.connect();
    store.connect();
    expect(streams.opened).toHaveLength(1);
    streams.emit('unread', { count: 4 });
    expect(store.unread).toBe(4);
    streams.emit('notification', note('n3'));
    streams.emit('notification', note('n3'));
    expect(store.items.map((n) => n.id)).toEqual(['n3', 'n2', 'n1']);
    expect(store.unread).toBe(5);
  });

  it('marks one read, and puts it back when the server refuses', async () => {
    const { store, api } = setup();
    await store.load();
    await store.markRead('n2');
    expect(api.markRead).toHaveBeenCalledWith('n2');
    expect(store.unread).toBe(0);
    expect(store.items[0]?.read).toBe(true);

    store.items[0]!.read = false;
    store.unread = 1;
    api.markRead.mockRejectedValueOnce(new Error('offline'));
    await store.markRead('n2');
    expect(store.items[0]?.read).toBe(false);
    expect(store.unread).toBe(1);
    expect(store.error).toContain('offline');
  });

  it('marks all read, deletes, pages and resets', async () => {
    const { store, api, streams } = setup();
    await store.load();
    await store.remove('n2');
    expect(store.items.map((n) => n.id)).toEqual(['n1']);
    expect(store.unread).toBe(0);
    api.notifications.mockResolvedValueOnce({ items: [note('n1', true), note('n0')], next_cursor: null, unread_count: 1 });
    await store.more();
    expect(api.notifications).toHaveBeenLastCalledWith({ limit: '20', cursor: 'c1' });
    expect(store.items.map((n) => n.id)).toEqual(['n1', 'n0']);
    await store.markAllRead();
    expect(store.items.every((n) => n.read)).toBe(true);
    store.connect();
    store.reset();
    expect(streams.last().closed).toBe(true);
    expect(store.items).toEqual([]);
  });
});
