// The one place that talks HTTP to the api: same-origin cookies, the CSRF header on every
// mutating request, and `{code, message}` errors turned into ApiError.

export const CSRF_COOKIE = 'kiln_csrf';
export const CSRF_HEADER = 'X-CSRF-Token';

export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  /** Seconds to wait, from `Retry-After` (429). */
  readonly retryAfter: number | null;
  /** From a 423 `account_locked` body. */
  readonly lockedUntil: string | null;

  constructor(status: number, code: string, message: string, retryAfter: number | null = null, lockedUntil: string | null = null) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
    this.lockedUntil = lockedUntil;
  }

  /** A sentence for the user, with the wait when the server gave one. */
  describe(): string {
    if (this.status === 429 && this.retryAfter !== null) {
      return `${this.message} (try again in ${this.retryAfter}s)`;
    }
    if (this.status === 423 && this.lockedUntil) {
      return `${this.message} (until ${new Date(this.lockedUntil).toLocaleTimeString()})`;
    }
    return this.message;
  }
}

export function readCookie(name: string, cookies: string = document.cookie): string | null {
  for (const part of cookies.split(';')) {
    const [key, ...rest] = part.trim().split('=');
    if (key === name) return decodeURIComponent(rest.join('='));
  }
  return null;
}

/** Listeners told when any request answers 401, so the app can send the user to sign in. */
const unauthorizedListeners = new Set<() => void>();
export function onUnauthorized(listener: () => void): () => void {
  unauthorizedListeners.add(listener);
  return () => unauthorizedListeners.delete(listener);
}

export function csrfHeaders(): Record<string, string> {
  const token = readCookie(CSRF_COOKIE);
  return token ? { [CSRF_HEADER]: token } : {};
}

export async function toApiError(response: Response): Promise<ApiError> {
  let code = 'http_' + response.status;
  let message = response.statusText || `request failed with ${response.status}`;
  let lockedUntil: string | null = null;
  try {
    const body = (await response.json()) as { code?: string; message?: string; locked_until?: string };
    if (body.code) code = body.code;
    if (body.message) message = body.message;
    if (body.locked_until) lockedUntil = body.locked_until;
  } catch {
    // Not JSON (a proxy's page): keep the status line.
  }
  const retry = response.headers.get('Retry-After');
  const retryAfter = retry !== null && /^\d+$/.test(retry) ? Number(retry) : null;
  return new ApiError(response.status, code, message, retryAfter, lockedUntil);
}

export type Query = Record<string, string | number | boolean | null | undefined>;

export function withQuery(path: string, query?: Query): string {
  if (!query) return path;
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== '') params.set(key, String(value));
  }
  const qs = params.toString();
  return qs ? `${path}?${qs}` : path;
}

export async function request<T>(method: string, path: string, body?: unknown, query?: Query): Promise<T> {
  const headers: Record<string, string> = { Accept: 'application/json' };
  if (method !== 'GET' && method !== 'HEAD') Object.assign(headers, csrfHeaders());
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(withQuery(path, query), {
    method,
    headers,
    credentials: 'same-origin',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!response.ok) {
    const error = await toApiError(response);
    if (response.status === 401 && !path.startsWith('/api/v1/auth/')) {
      unauthorizedListeners.forEach((listener) => listener());
    }
    throw error;
  }
  if (response.status === 204) return undefined as T;
  const text = await response.text();
  return (text ? JSON.parse(text) : undefined) as T;
}

/** A sentence for the user about any failure of a call. */
export function describeError(error: unknown): string {
  if (error instanceof ApiError) return error.describe();
  // fetch rejects with a TypeError when the server cannot be reached at all.
  if (error instanceof TypeError) return 'Could not reach the server';
  return error instanceof Error ? error.message : String(error);
}
