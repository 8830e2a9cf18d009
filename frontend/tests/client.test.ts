import { afterEach, describe, expect, it, vi } from 'vitest';
import { ApiError, readCookie, request, onUnauthorized, withQuery } from '../src/lib/api/client';
import { parseHash } from '../src/lib/routes';
import { languageForFile } from '../src/lib/stores/workspace.svelte';
import { jsonResponse } from './helpers';

afterEach(() => {
  vi.unstubAllGlobals();
  document.cookie = 'kiln_csrf=; max-age=0';
});

describe('request', () => {
  it('sends the CSRF cookie as a header on mutating requests only', async () => {
    document.cookie = 'kiln_csrf=tok%3D1';
    const fetchMock = vi.fn().mockImplementation(async () => jsonResponse(202, { execution_id: 'e', status: 'queued' }));
    vi.stubGlobal('fetch', fetchMock);
    await request('POST', '/api/v1/execute', { lang: 'python' });
    await request('GET', '/api/v1/executions', undefined, { status: 'running', lang: '', cursor: null });
    const [, post] = fetchMock.mock.calls[0]!;
    expect(post.headers['X-CSRF-Token']).toBe('tok=1');
    expect(post.body).toBe('{"lang":"python"}');
    const [url, get] = fetchMock.mock.calls[1]!;
    expect(url).toBe('/api/v1/executions?status=running');
    expect(get.headers['X-CSRF-Token']).toBeUndefined();
  });

  it('turns {code, message} into ApiError with Retry-After and locked_until', async () => {
    vi.stubGlobal('fetch', vi.fn().mockResolvedValue(jsonResponse(429, { code: 'rate_limited', message: 'slow down' }, { 'Retry-After': '7' })));
    const error = (await request('GET', '/api/v1/x').catch((e) => e)) as ApiError;
    expect(error).toBeInstanceOf(ApiError);
    expect([error.status, error.code, error.retryAfter]).toEqual([429, 'rate_limited', 7]);
    expect(error.describe()).toBe('slow down (try again in 7s)');

    vi.stubGlobal('fetch', vi.fn().mockResolvedValue(jsonResponse(423, { code: 'account_locked', message: 'locked', locked_until: '2026-11-24T10:00:00Z' })));
    const locked = (await request('POST', '/api/v1/auth/login', {}).catch((e) => e)) as ApiError;
    expect(locked.lockedUntil).toBe('2026-11-24T10:00:00Z');
  });

  it('tells listeners about a 401 outside /auth', async () => {
    const listener = vi.fn();
    const stop = onUnauthorized(listener);
    vi.stubGlobal('fetch', vi.fn().mockResolvedValue(jsonResponse(401, { code: 'unauthenticated', message: 'sign in' })));
    await request('GET', '/api/v1/auth/me').catch(() => undefined);
    expect(listener).not.toHaveBeenCalled();
    await request('GET', '/api/v1/scripts').catch(() => undefined);
    expect(listener).toHaveBeenCalledTimes(1);
    stop();
  });
});

describe('helpers', () => {
  it('reads cookies, builds queries and parses hash routes', () => {
    expect(readCookie('b', 'a=1; b=x%20y; c=3')).toBe('x y');
    expect(readCookie('z', 'a=1')).toBeNull();
    expect(withQuery('/p', { a: 1, b: undefined, c: true })).toBe('/p?a=1&c=true');
    expect(parseHash('#/history?status=failed')).toEqual({ route: 'history', params: { status: 'failed' } });
    expect(parseHash('#/nope').route).toBe('editor');
    expect(parseHash('').route).toBe('editor');
  });

  it('guesses the language of an uploaded file from its extension', () => {
    const languages = [
      { lang: 'python', default_version: '3.12', versions: [{ version: '3.12', file_name: 'main.py', example: '' }] },
      { lang: 'ruby', default_version: '3.3', versions: [{ version: '3.3', file_name: 'main.rb', example: '' }] },
    ];
    expect(languageForFile(languages, 'x.RB')).toEqual({ lang: 'ruby', version: '3.3' });
    expect(languageForFile(languages, 'notes.txt')).toBeNull();
  });
});

describe('typed calls', () => {
  it('fill encodes path parameters and refuses a missing one', async () => {
    const { fill } = await import('../src/lib/api/typed');
    expect(fill('/api/v1/executions/{id}/cancel', { id: 'a/b c' })).toBe('/api/v1/executions/a%2Fb%20c/cancel');
    expect(() => fill('/api/v1/scripts/{id}', {})).toThrow('missing path parameter id');
  });
});

describe('describeError', () => {
  it('words each kind of failure for the user', async () => {
    const { describeError } = await import('../src/lib/api/client');
    expect(describeError(new ApiError(429, 'rate_limited', 'slow down', 2))).toBe('slow down (try again in 2s)');
    expect(describeError(new TypeError('Failed to fetch'))).toBe('Could not reach the server');
    expect(describeError(new Error('boom'))).toBe('boom');
    expect(describeError('odd')).toBe('odd');
  });
});
