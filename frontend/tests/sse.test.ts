import { describe, expect, it, vi } from 'vitest';
import { SseParser, openStream, type SseEvent } from '../src/lib/sse';
import { jsonResponse, sseResponse } from './helpers';

describe('SseParser', () => {
  it('parses named events with ids and multi-line data', () => {
    const parser = new SseParser();
    const events = parser.feed('event: output\nid: 1-0\ndata: {"a":1}\n\n: heartbeat\n\ndata: x\ndata: y\n\n');
    expect(events).toEqual([
      { event: 'output', data: '{"a":1}', id: '1-0' },
      { event: 'message', data: 'x\ny', id: '1-0' },
    ]);
    expect(parser.lastEventId).toBe('1-0');
  });

  it('joins events split across chunks at any byte, with CRLF line ends', () => {
    const text = 'event: status\r\nid: 5-1\r\ndata: {"status":"running"}\r\n\r\n';
    for (let cut = 1; cut < text.length; cut++) {
      const parser = new SseParser();
      const events = [...parser.feed(text.slice(0, cut)), ...parser.feed(text.slice(cut))];
      expect(events, `cut at ${cut}`).toEqual([{ event: 'status', data: '{"status":"running"}', id: '5-1' }]);
    }
  });

  it('ignores comments and unknown fields and keeps a value without a space', () => {
    const parser = new SseParser();
    expect(parser.feed(':c\nretry: 10\nfoo: bar\ndata:tight\n\n')).toEqual([{ event: 'message', data: 'tight', id: null }]);
  });
});

function collect() {
  const events: SseEvent[] = [];
  return { events, onEvent: (e: SseEvent) => events.push(e) };
}

describe('openStream', () => {
  const noSleep = () => Promise.resolve();

  it('reconnects after a drop and sends the last id as Last-Event-ID', async () => {
    const fetchImpl = vi
      .fn<typeof fetch>()
      .mockResolvedValueOnce(sseResponse(['event: snapshot\nid: 0-0\ndata: {}\n\n', 'event: output\nid: 7-0\ndata: {"seq":0}\n\n']))
      .mockResolvedValueOnce(sseResponse(['event: result\nid: 9-0\ndata: {}\n\n']));
    const { events, onEvent } = collect();
    let done = false;
    const states: string[] = [];
    const handle = openStream('/s', {
      onEvent: (e) => {
        onEvent(e);
        if (e.event === 'result') done = true;
      },
      isDone: () => done,
      onState: (s) => states.push(s),
      fetchImpl,
      sleep: noSleep,
    });
    await handle.finished;
    expect(events.map((e) => e.event)).toEqual(['snapshot', 'output', 'result']);
    expect(fetchImpl).toHaveBeenCalledTimes(2);
    const secondHeaders = fetchImpl.mock.calls[1]?.[1]?.headers as Record<string, string>;
    expect(secondHeaders['Last-Event-ID']).toBe('7-0');
    const firstHeaders = fetchImpl.mock.calls[0]?.[1]?.headers as Record<string, string>;
    expect(firstHeaders['Last-Event-ID']).toBeUndefined();
    expect(states).toEqual(['open', 'reconnecting', 'open', 'closed']);
    expect(handle.lastEventId()).toBe('9-0');
  });

  it('stops without retrying on a client error such as 404', async () => {
    const fetchImpl = vi.fn<typeof fetch>().mockResolvedValue(jsonResponse(404, { code: 'not_found', message: 'no such execution' }));
    const onState = vi.fn();
    await openStream('/s', { onEvent: () => undefined, onState, fetchImpl, sleep: noSleep }).finished;
    expect(fetchImpl).toHaveBeenCalledTimes(1);
    expect(onState).toHaveBeenCalledWith('closed', expect.objectContaining({ error: expect.objectContaining({ code: 'not_found' }) }));
  });

  it('retries a network error and a 429 with backoff, waiting at least Retry-After', async () => {
    const delays: number[] = [];
    const fetchImpl = vi
      .fn<typeof fetch>()
      .mockRejectedValueOnce(new TypeError('network down'))
      .mockResolvedValueOnce(jsonResponse(429, { code: 'rate_limited', message: 'slow down' }, { 'Retry-After': '3' }))
      .mockResolvedValueOnce(sseResponse(['event: result\ndata: {}\n\n']));
    let done = false;
    await openStream('/s', {
      onEvent: () => (done = true),
      isDone: () => done,
      onState: (s, d) => s === 'reconnecting' && delays.push(d?.delayMs ?? -1),
      fetchImpl,
      sleep: noSleep,
      baseDelayMs: 100,
    }).finished;
    expect(fetchImpl).toHaveBeenCalledTimes(3);
    expect(delays).toEqual([100, 3000]);
  });

  it('gives up after maxAttempts failures', async () => {
    const fetchImpl = vi.fn<typeof fetch>().mockRejectedValue(new TypeError('down'));
    await openStream('/s', { onEvent: () => undefined, fetchImpl, sleep: noSleep, maxAttempts: 3 }).finished;
    expect(fetchImpl).toHaveBeenCalledTimes(3);
  });
});
