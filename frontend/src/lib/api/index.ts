// Typed calls of the Kiln HTTP API (docs/api.md); shapes come from the OpenAPI document.
import { request, type Query } from './client';
import type {
  Accepted,
  ExecutionPage,
  ExecutionView,
  Notification,
  NotificationPage,
  Runtimes,
  Script,
  ScriptInput,
  ScriptPage,
  Settings,
  SubmitRequest,
  User,
} from './types';

const V1 = '/api/v1';
const id = (value: string) => encodeURIComponent(value);

export const api = {
  register: (body: { username: string; email: string; password: string }) =>
    request<User>('POST', `${V1}/auth/register`, body),
  login: (body: { username: string; password: string }) =>
    request<{ user: User; csrf_token: string }>('POST', `${V1}/auth/login`, body),
  logout: () => request<void>('POST', `${V1}/auth/logout`),
  me: () => request<User>('GET', `${V1}/auth/me`),

  runtimes: () => request<Runtimes>('GET', `${V1}/runtimes`),
  execute: (body: SubmitRequest) => request<Accepted>('POST', `${V1}/execute`, body),
  execution: (executionId: string) => request<ExecutionView>('GET', `${V1}/executions/${id(executionId)}`),
  cancel: (executionId: string) => request<Accepted>('POST', `${V1}/executions/${id(executionId)}/cancel`),
  executions: (query: { status?: string; lang?: string; cursor?: string | null; limit?: number }) =>
    request<ExecutionPage>('GET', `${V1}/executions`, undefined, query as Query),
  executionEventsUrl: (executionId: string) => `${V1}/executions/${id(executionId)}/events`,

  scripts: (query: { cursor?: string | null; limit?: number } = {}) =>
    request<ScriptPage>('GET', `${V1}/scripts`, undefined, query as Query),
  script: (scriptId: string) => request<Script>('GET', `${V1}/scripts/${id(scriptId)}`),
  createScript: (body: ScriptInput) => request<Script>('POST', `${V1}/scripts`, body),
  updateScript: (scriptId: string, body: ScriptInput) => request<Script>('PUT', `${V1}/scripts/${id(scriptId)}`, body),
  deleteScript: (scriptId: string) => request<void>('DELETE', `${V1}/scripts/${id(scriptId)}`),

  settings: () => request<Settings>('GET', `${V1}/settings`),
  saveSettings: (body: Settings) => request<Settings>('PUT', `${V1}/settings`, body),

  notifications: (query: { unread_only?: boolean; cursor?: string | null; limit?: number } = {}) =>
    request<NotificationPage>('GET', `${V1}/notifications`, undefined, query as Query),
  markRead: (notificationId: string) => request<Notification | void>('POST', `${V1}/notifications/${id(notificationId)}/read`),
  markAllRead: () => request<void>('POST', `${V1}/notifications/read-all`),
  deleteNotification: (notificationId: string) => request<void>('DELETE', `${V1}/notifications/${id(notificationId)}`),
  notificationStreamUrl: () => `${V1}/notifications/stream`,
};
