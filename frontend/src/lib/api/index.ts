// Calls of the Kiln HTTP API (docs/api.md), typed by path and method from its OpenAPI document
// (./typed.ts). SSE streams are read by ../sse.ts from the URLs given here.
import { call, type QueryOf, type RequestBody } from './typed';

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

  scripts: (query: QueryOf<'/api/v1/scripts', 'get'> = {}) => call('get', '/api/v1/scripts', { query }),
  script: (id: string) => call('get', '/api/v1/scripts/{id}', { params: { id } }),
  createScript: (body: RequestBody<'/api/v1/scripts', 'post'>) => call('post', '/api/v1/scripts', { body }),
  /** Any subset of the fields. */
  updateScript: (id: string, body: RequestBody<'/api/v1/scripts/{id}', 'put'>) =>
    call('put', '/api/v1/scripts/{id}', { params: { id }, body }),
  deleteScript: (id: string) => call('delete', '/api/v1/scripts/{id}', { params: { id } }),

  settings: () => call('get', '/api/v1/settings'),
  saveSettings: (body: RequestBody<'/api/v1/settings', 'put'>) => call('put', '/api/v1/settings', { body }),

  notifications: (query: QueryOf<'/api/v1/notifications', 'get'> = {}) => call('get', '/api/v1/notifications', { query }),
  markRead: (id: string) => call('post', '/api/v1/notifications/{id}/read', { params: { id } }),
  markAllRead: () => call('post', '/api/v1/notifications/read-all'),
  deleteNotification: (id: string) => call('delete', '/api/v1/notifications/{id}', { params: { id } }),
  notificationStreamUrl: () => `${V1}/notifications/stream`,
};
