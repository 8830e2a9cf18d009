// The notification bell: a page of notifications, the unread count, and live ones over SSE.
import { api as realApi } from '../api';
import { describeError } from '../api/client';
import type { Notification, UnreadCount } from '../api/types';
import { openStream as realOpenStream, type SseEvent, type StreamHandle, type StreamOptions } from '../sse';

type Api = Pick<typeof realApi, 'notifications' | 'markRead' | 'markAllRead' | 'deleteNotification' | 'notificationStreamUrl'>;

export class NotificationStore {
  items = $state<Notification[]>([]);
  unread = $state(0);
  nextCursor = $state<string | null>(null);
  error = $state<string | null>(null);
  live = $state(false);

  private api: Api;
  private openStream: (url: string, options: StreamOptions) => StreamHandle;
  private handle: StreamHandle | null = null;

  constructor(api: Api = realApi, openStream = realOpenStream) {
    this.api = api;
    this.openStream = openStream;
  }

  async load(): Promise<void> {
    try {
      const page = await this.api.notifications({ limit: '20' });
      this.items = page.items;
      this.unread = page.unread_count;
      this.nextCursor = page.next_cursor ?? null;
      this.error = null;
    } catch (error) {
      this.error = describeError(error);
    }
  }

  async more(): Promise<void> {
    if (!this.nextCursor) return;
    const page = await this.api.notifications({ limit: '20', cursor: this.nextCursor });
    const fresh = page.items.filter((n) => !this.items.some((known) => known.id === n.id));
    this.items.push(...fresh);
    this.nextCursor = page.next_cursor ?? null;
    this.unread = page.unread_count;
  }

  connect(): void {
    if (this.handle) return;
    this.handle = this.openStream(this.api.notificationStreamUrl(), {
      onEvent: (event) => this.onEvent(event),
      onState: (state) => (this.live = state === 'open'),
      maxDelayMs: 30_000,
    });
  }

  disconnect(): void {
    this.handle?.close();
    this.handle = null;
    this.live = false;
  }

  onEvent(event: SseEvent): void {
    let data: unknown;
    try {
      data = JSON.parse(event.data);
    } catch {
      return;
    }
    if (event.event === 'unread') {
      this.unread = (data as UnreadCount).count;
    } else if (event.event === 'notification') {
      const notification = data as Notification;
      if (this.items.some((n) => n.id === notification.id)) return;
      this.items.unshift(notification);
      if (!notification.read) this.unread += 1;
    }
  }

  async markRead(id: string): Promise<void> {
    const item = this.items.find((n) => n.id === id);
    if (!item || item.read) return;
    item.read = true;
    this.unread = Math.max(0, this.unread - 1);
    try {
      await this.api.markRead(id);
    } catch (error) {
      item.read = false;
      this.unread += 1;
      this.error = describeError(error);
    }
  }

  async markAllRead(): Promise<void> {
    await this.api.markAllRead();
    this.items.forEach((n) => (n.read = true));
    this.unread = 0;
  }

  async remove(id: string): Promise<void> {
    await this.api.deleteNotification(id);
    const item = this.items.find((n) => n.id === id);
    this.items = this.items.filter((n) => n.id !== id);
    if (item && !item.read) this.unread = Math.max(0, this.unread - 1);
  }

  reset(): void {
    this.disconnect();
    this.items = [];
    this.unread = 0;
    this.nextCursor = null;
  }
}

export const notifications = new NotificationStore();
