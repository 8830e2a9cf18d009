// Calls of the Kiln HTTP API (docs/api.md). Those the OpenAPI document describes are typed from
// it (./typed.ts); notifications are typed by hand until the document has them.
import { request, type Query } from './client';
import { call, type QueryOf, type RequestBody } from './typed';
import type { Notification, NotificationPage, Script, ScriptPage } from './types';

const V1 = '/api/v1';

export const api = {
  register: (body: RequestBody<'/api/v1/auth/register', 'post'>) => call('post', '/api/v1/auth/register', { body }),
  login: (body: RequestBody<'/api/v1/auth/login', 'post'>) => call('post', '/api/v1/auth/login', { body }),
  logout: () => call('post', '/api/v1/auth/logout'),
  me: () => call('get', '/api/v1/auth/me'),

  runtimes: () => call('get', '/api/v1/runtimes'),
  execute: (body: RequestBody<'/api/v1/execute', 'post'>) => call('post', '/api/v1/execute', { body }),
  execution: (id: string) => call('get', '/api/v1/executions/{id}', { params: { id } }),
  cancel: (id: string) => call('post', '/api/v1/executions/{id}/cancel', { params: { id } }),
  executions: (query: QueryOf<'/api/v1/executions', 'get'>) => call('get', '/api/v1/executions', { query }),
  executionEventsUrl: (id: string) => `${V1}/executions/${encodeURIComponent(id)}/events`,

  // Typed by hand: the document gives these two the operationIds of the executions' list and
  // get_one, so the generated types mix them up (see the report on docs/openapi.json).
  scripts: (query: { cursor?: string | null; limit?: string } = {}) =>
    request<ScriptPage>('GET', `${V1}/scripts`, undefined, query as Query),
  script: (id: string) => request<Script>('GET', `${V1}/scripts/${encodeURIComponent(id)}`),
  createScript: (body: RequestBody<'/api/v1/scripts', 'post'>) => call('post', '/api/v1/scripts', { body }),
  /** Any subset of the fields. */
  updateScript: (id: string, body: RequestBody<'/api/v1/scripts/{id}', 'put'>) =>
    call('put', '/api/v1/scripts/{id}', { params: { id }, body }),
  deleteScript: (id: string) => call('delete', '/api/v1/scripts/{id}', { params: { id } }),

  settings: () => call('get', '/api/v1/settings'),
  saveSettings: (body: RequestBody<'/api/v1/settings', 'put'>) => call('put', '/api/v1/settings', { body }),

  notifications: (query: { unread_only?: boolean; cursor?: string | null; limit?: number } = {}) =>
    request<NotificationPage>('GET', `${V1}/notifications`, undefined, query as Query),
  markRead: (id: string) => request<Notification | undefined>('POST', `${V1}/notifications/${encodeURIComponent(id)}/read`),
  markAllRead: () => request<void>('POST', `${V1}/notifications/read-all`),
  deleteNotification: (id: string) => request<void>('DELETE', `${V1}/notifications/${encodeURIComponent(id)}`),
  notificationStreamUrl: () => `${V1}/notifications/stream`,
};
