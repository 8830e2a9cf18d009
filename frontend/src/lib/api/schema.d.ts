/**
 * Hand-written stand-in in the shape openapi-typescript generates, until docs/openapi.json
 * exists; `npm run gen:api` replaces this file with the generated one.
 */
export type paths = Record<string, never>;

export interface components {
  schemas: {
    ApiErrorBody: { code: string; message: string; locked_until?: string | null };
    UserView: { id: string; username: string; email: string; role: 'user' | 'admin'; created_at: string };
    LoginRequest: { username: string; password: string };
    RegisterRequest: { username: string; email: string; password: string };
    LoginResponse: { user: components['schemas']['UserView']; csrf_token: string };
    ExecutionStatus: 'queued' | 'scheduled' | 'running' | 'completed' | 'failed' | 'timeout' | 'cancelled';
    ErrorType: 'system_error' | 'resource_limit' | 'executor_lost' | 'invalid_request' | 'budget_exceeded';
    OutputStream: 'stdout' | 'stderr';
    ResourceUsage: { wall_ms: number; cpu_ms: number; peak_memory_kb: number };
    SubmitRequest: {
      script: string;
      lang: string;
      lang_version?: string | null;
      stdin?: string | null;
      timeout_seconds?: number | null;
      priority?: number | null;
    };
    Accepted: { execution_id: string; status: components['schemas']['ExecutionStatus'] };
    ExecutionView: {
      execution_id: string;
      status: components['schemas']['ExecutionStatus'];
      lang: string;
      lang_version: string;
      stdout: string;
      stderr: string;
      stdout_truncated: boolean;
      stderr_truncated: boolean;
      exit_code: number | null;
      error_type: components['schemas']['ErrorType'] | null;
      error_message: string | null;
      resource_usage: components['schemas']['ResourceUsage'];
      created_at: string;
      started_at: string | null;
      finished_at: string | null;
    };
    ExecutionSummary: {
      execution_id: string;
      user_id: string;
      status: components['schemas']['ExecutionStatus'];
      lang: string;
      lang_version: string;
      priority: number;
      timeout_seconds: number;
      exit_code: number | null;
      error_type: components['schemas']['ErrorType'] | null;
      created_at: string;
      started_at: string | null;
      finished_at: string | null;
    };
    ExecutionPage: { items: components['schemas']['ExecutionSummary'][]; next_cursor: string | null };
    StatusEvent: { status: components['schemas']['ExecutionStatus']; event_type: string; at: string };
    OutputEvent: { stream: components['schemas']['OutputStream']; seq: number; data: string };
    Runtimes: { languages: components['schemas']['LanguageView'][]; limits: components['schemas']['LimitsView'] };
    LanguageView: { lang: string; default_version: string; versions: components['schemas']['VersionView'][] };
    VersionView: { version: string; file_name: string; example: string };
    LimitsView: {
      max_script_bytes: number;
      max_stdin_bytes: number;
      default_timeout_seconds: number;
      max_timeout_seconds: number;
      memory_mb: number;
      max_output_bytes: number;
      max_priority: number;
    };
    Script: {
      id: string;
      name: string;
      lang: string;
      lang_version: string;
      script: string;
      description: string | null;
      created_at: string;
      updated_at: string;
    };
    ScriptInput: {
      name: string;
      lang: string;
      lang_version?: string | null;
      script: string;
      description?: string | null;
    };
    ScriptPage: { items: components['schemas']['Script'][]; next_cursor: string | null };
    Theme: 'light' | 'dark' | 'auto';
    EditorSettings: { font_size: number; tab_size: number; word_wrap: boolean; line_numbers: boolean };
    Settings: { theme: components['schemas']['Theme']; editor: components['schemas']['EditorSettings'] };
    Notification: {
      id: string;
      kind: string;
      title: string;
      body: string;
      execution_id: string | null;
      status: components['schemas']['ExecutionStatus'] | null;
      read: boolean;
      created_at: string;
    };
    NotificationPage: {
      items: components['schemas']['Notification'][];
      next_cursor: string | null;
      unread_count: number;
    };
    UnreadEvent: { count: number };
  };
}
