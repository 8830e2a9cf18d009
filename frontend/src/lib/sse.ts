// Server-Sent Events over fetch streaming: unlike EventSource it lets us see HTTP errors (401,
// 404, 429) and stop instead of retrying forever, while still resuming with Last-Event-ID.
import { toApiError, type ApiError } from './api/client';

export interface SseEvent {
  event: string;
  data: string;
  id: string | null;
}

/** Incremental parser of the text/event-stream format (WHATWG HTML §9.2.6). */
export class SseParser {
  private buffer = '';
  private data: string[] = [];
  private event = '';
  private id: string | null = null;
  /** The last id seen, kept across events as the spec says (the value to resume from). */
  lastEventId: string | null = null;

  feed(chunk: string): SseEvent[] {
    this.buffer += chunk;
    const out: SseEvent[] = [];
    for (;;) {
      const match = /\r\n|\r|\n/.exec(this.buffer);
      if (!match) break;
      // A lone CR at the very end may be the first half of CRLF: wait for more.
      if (match[0] === '\r' && match.index === this.buffer.length - 1) break;
      const line = this.buffer.slice(0, match.index);
      this.buffer = this.buffer.slice(match.index + match[0].length);
      const event = this.line(line);
      if (event) out.push(event);
    }
    return out;
  }

  private line(line: string): SseEvent | null {
    if (line === '') {
      if (this.data.length === 0) {
        this.event = '';
        return null;
      }
      const event: SseEvent = { event: this.event || 'message', data: this.data.join('\n'), id: this.id };
      this.data = [];
      this.event = '';
      return event;
    }
    if (line.startsWith(':')) return null;
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    switch (field) {
      case 'data':
        this.data.push(value);
        break;
      case 'event':
        this.event = value;
        break;
      case 'id':
        if (!value.includes('\0')) {
          this.id = value;
          this.lastEventId = value;
        }
        break;
    }
    return null;
  }
}

export interface StreamOptions {
  onEvent: (event: SseEvent) => void;
  /** Called when a connection opens, is lost (with the delay before the next try) or gives up. */
  onState?: (state: 'open' | 'reconnecting' | 'closed', detail?: { delayMs?: number; error?: ApiError | Error }) => void;
  /** Stop reconnecting once this says the stream is complete (e.g. after `result`). */
  isDone?: () => boolean;
  lastEventId?: string | null;
  /** Backoff: first delay, doubled up to maxDelayMs. */
  baseDelayMs?: number;
  maxDelayMs?: number;
  maxAttempts?: number;
  fetchImpl?: typeof fetch;
  sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
}

function defaultSleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** Client errors other than 429 will not get better by retrying. */
function permanent(status: number): boolean {
  return status >= 400 && status < 500 && status !== 408 && status !== 429;
}

export interface StreamHandle {
  close(): void;
  /** Resolves when the stream has ended for good (done, closed or given up). */
  finished: Promise<void>;
  lastEventId(): string | null;
}

/** Follows an SSE URL, reconnecting with Last-Event-ID after a drop until done or closed. */
export function openStream(url: string, options: StreamOptions): StreamHandle {
  const controller = new AbortController();
  const doFetch = options.fetchImpl ?? fetch.bind(globalThis);
  const sleep = options.sleep ?? defaultSleep;
  const base = options.baseDelayMs ?? 500;
  const max = options.maxDelayMs ?? 10_000;
  const maxAttempts = options.maxAttempts ?? Infinity;
  let lastId = options.lastEventId ?? null;

  async function once(): Promise<'done' | 'dropped'> {
    const headers: Record<string, string> = { Accept: 'text/event-stream' };
    if (lastId) headers['Last-Event-ID'] = lastId;
    const response = await doFetch(url, { headers, credentials: 'same-origin', signal: controller.signal, cache: 'no-store' });
    if (!response.ok) throw await toApiError(response);
    if (!response.body) throw new Error('the event stream has no body');
    options.onState?.('open');
    const parser = new SseParser();
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      for (const event of parser.feed(value)) {
        if (event.id) lastId = event.id;
        options.onEvent(event);
      }
      if (options.isDone?.()) {
        await reader.cancel().catch(() => undefined);
        return 'done';
      }
    }
    return options.isDone?.() ? 'done' : 'dropped';
  }

  const finished = (async () => {
    let failures = 0;
    while (!controller.signal.aborted) {
      let retryAfterMs = 0;
      try {
        if ((await once()) === 'done') break;
        failures = 0;
      } catch (error) {
        if (controller.signal.aborted) break;
        const status = (error as ApiError).status;
        if (typeof status === 'number' && permanent(status)) {
          options.onState?.('closed', { error: error as ApiError });
          return;
        }
        retryAfterMs = ((error as ApiError).retryAfter ?? 0) * 1000;
        failures += 1;
        if (failures >= maxAttempts) {
          options.onState?.('closed', { error: error as Error });
          return;
        }
      }
      if (options.isDone?.()) break;
      const delayMs = Math.max(retryAfterMs, Math.min(max, base * 2 ** Math.max(0, failures - 1)));
      options.onState?.('reconnecting', { delayMs });
      await sleep(delayMs, controller.signal);
    }
    options.onState?.('closed');
  })();

  return {
    close: () => controller.abort(),
    finished,
    lastEventId: () => lastId,
  };
}
