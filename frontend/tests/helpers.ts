// Test doubles for the network edges: SSE streams and fetch responses built in memory.
import type { SseEvent, StreamHandle, StreamOptions } from '../src/lib/sse';

/** A fake openStream: the test pushes events and state changes by hand. */
export class FakeStreams {
  opened: { url: string; options: StreamOptions; closed: boolean }[] = [];

  open = (url: string, options: StreamOptions): StreamHandle => {
    const entry = { url, options, closed: false };
    this.opened.push(entry);
    return {
      close: () => {
        entry.closed = true;
      },
      finished: Promise.resolve(),
      lastEventId: () => null,
    };
  };

  last() {
    const entry = this.opened.at(-1);
    if (!entry) throw new Error('no stream was opened');
    return entry;
  }

  emit(event: string, data: unknown, id: string | null = null): void {
    const e: SseEvent = { event, data: JSON.stringify(data), id };
    this.last().options.onEvent(e);
  }
}

/** A streaming Response whose body yields `chunks` then ends (or stays open if `hang`). */
export function sseResponse(chunks: string[], init: ResponseInit = {}): Response {
  const encoder = new TextEncoder();
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      for (const chunk of chunks) controller.enqueue(encoder.encode(chunk));
      controller.close();
    },
  });
  return new Response(body, { status: 200, headers: { 'Content-Type': 'text/event-stream' }, ...init });
}

export function jsonResponse(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json', ...headers } });
}

export function view(overrides: Record<string, unknown> = {}) {
  return {
    execution_id: 'e1',
    status: 'completed',
    lang: 'python',
    lang_version: '3.12',
    stdout: '',
    stderr: '',
    stdout_truncated: false,
    stderr_truncated: false,
    exit_code: 0,
    error_type: null,
    error_message: null,
    resource_usage: { wall_ms: 1234, cpu_ms: 56, peak_memory_kb: 2048 },
    created_at: '2026-11-24T10:00:00.000Z',
    started_at: '2026-11-24T10:00:01.000Z',
    finished_at: '2026-11-24T10:00:02.000Z',
    ...overrides,
  } as import('../src/lib/api/types').ExecutionView;
}
