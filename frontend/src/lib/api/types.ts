// Names the app uses for the OpenAPI schemas, so a regenerated schema.d.ts is adapted in one place.
import type { components } from './schema';

type S = components['schemas'];

export type User = S['UserView'];
export type ExecutionStatus = S['ExecutionStatus'];
export type ExecutionView = S['ExecutionView'];
export type ExecutionSummary = S['ExecutionSummary'];
export type ExecutionPage = S['ExecutionPage'];
export type SubmitRequest = S['SubmitRequest'];
export type Accepted = S['Accepted'];
export type StatusEvent = S['StatusEvent'];
export type OutputEvent = S['OutputEvent'];
export type Runtimes = S['Runtimes'];
export type Language = S['LanguageView'];
export type Script = S['Script'];
export type ScriptInput = S['ScriptInput'];
export type ScriptPage = S['ScriptPage'];
export type Settings = S['Settings'];
export type Theme = S['Theme'];
export type EditorSettings = S['EditorSettings'];
export type Notification = S['Notification'];
export type NotificationPage = S['NotificationPage'];

export const TERMINAL: readonly ExecutionStatus[] = ['completed', 'failed', 'timeout', 'cancelled'];

export function isTerminal(status: ExecutionStatus): boolean {
  return TERMINAL.includes(status);
}
