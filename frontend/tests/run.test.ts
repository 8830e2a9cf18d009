import { describe, expect, it, vi } from 'vitest';
import { flushSync } from 'svelte';
import { ApiError } from '../src/lib/api/client';
import { RunStore } from '../src/lib/stores/run.svelte';
import { FakeStreams, view } from './helpers';

function setup() {
  const streams = new FakeStreams();
  const api = {
    execute: vi.fn().mockResolvedValue({ execution_id: 'e1', status: 'queued' }),
    cancel: vi.fn().mockResolvedValue({ execution_id: 'e1', status: 'running' }),
    executionEventsUrl: (id: string) => `/api/v1/executions/${id}/events`,
  };
  const run = new RunStore({ api, openStream: streams.open });
  return { run, api, streams };
}

const text = (run: RunStore) => run.output.map((c) => c.segments.map((s) => s.text).join('')).join('');

describe('RunStore', () => {
  it('submits, follows the stream and builds the timeline and live output', async () => {
    const { run, api, streams } = setup();
    await run.run({ script: 'print(1)', lang: 'python' });
    expect(api.execute).toHaveBeenCalledWith({ script: 'print(1)', lang: 'python' });
    expect(streams.last().url).toBe('/api/v1/executions/e1/events');
    expect(run.status).toBe('queued');
    expect(run.running).toBe(true);

    streams.emit('snapshot', view({ status: 'queued', started_at: null, finished_at: null }), '0-0');
    streams.emit('status', { status: 'scheduled', event_type: 'execution_scheduled', at: '2026-11-24T10:00:00.500Z' }, '1-0');
    streams.emit('status', { status: 'running', event_type: 'execution_started', at: '2026-11-24T10:00:01.000Z' }, '2-0');
    streams.emit('output', { stream: 'stdout', seq: 0, data: 'line 1\n' }, '3-0');
    streams.emit('output', { stream: 'stderr', seq: 1, data: '\x1b[33mwarn\x1b[0m\n' }, '4-0');
    flushSync();
    expect(run.timeline.map((t) => t.status)).toEqual(['queued', 'scheduled', 'running']);
    expect(text(run)).toBe('line 1\nwarn\n');
    expect(run.output[1]?.segments[0]?.style.fg).toBe('var(--ansi-3)');
    expect(run.result).toBeNull();

    streams.emit('result', view({ stdout: 'line 1\n', stderr: '\x1b[33mwarn\x1b[0m\n', exit_code: 0 }), '5-0');
    expect(run.result?.exit_code).toBe(0);
    expect(run.running).toBe(false);
    expect(run.timeline.map((t) => t.status)).toEqual(['queued', 'scheduled', 'running', 'completed']);
    // The live chunks were complete, so their interleaving is kept.
    expect(run.output.map((c) => c.stream)).toEqual(['stdout', 'stderr']);
    expect(streams.last().options.isDone?.()).toBe(true);
  });

  it('ignores output chunks seen before (a resumed stream) and orders a late one', async () => {
    const { run, streams } = setup();
    await run.run({ script: '', lang: 'python' });
    streams.emit('output', { stream: 'stdout', seq: 0, data: 'a' });
    streams.emit('output', { stream: 'stdout', seq: 2, data: 'c' });
    streams.emit('output', { stream: 'stdout', seq: 0, data: 'a' });
    streams.emit('output', { stream: 'stdout', seq: 1, data: 'b' });
    expect(text(run)).toBe('abc');
  });

  it('shows the stored output when the live stream missed some of it', async () => {
    const { run, streams } = setup();
    await run.run({ script: '', lang: 'python' });
    streams.emit('output', { stream: 'stdout', seq: 3, data: 'tail' });
    streams.emit('result', view({ stdout: 'head and tail', stderr: 'oops', exit_code: 1, status: 'completed' }));
    expect(text(run)).toBe('head and tailoops');
    expect(run.output.map((c) => c.stream)).toEqual(['stdout', 'stderr']);
  });

  it('takes a terminal snapshot as the result and ignores replayed output', async () => {
    const { run, streams } = setup();
    run.follow('e1');
    streams.emit('snapshot', view({ stdout: 'done\n' }), '0-0');
    streams.emit('output', { stream: 'stdout', seq: 0, data: 'done\n' });
    expect(run.result?.status).toBe('completed');
    expect(text(run)).toBe('done\n');
  });

  it('reports a rejected submission', async () => {
    const { run, api, streams } = setup();
    api.execute.mockRejectedValueOnce(new ApiError(429, 'rate_limited', 'too many requests', 12));
    expect(await run.run({ script: '', lang: 'python' })).toBeNull();
    expect(run.error).toBe('too many requests (try again in 12s)');
    expect(streams.opened).toHaveLength(0);
  });

  it('cancels a running execution once and tolerates one that already finished', async () => {
    const { run, api, streams } = setup();
    await run.run({ script: '', lang: 'python' });
    await run.cancel();
    expect(api.cancel).toHaveBeenCalledWith('e1');
    expect(run.cancelling).toBe(true);
    streams.emit('result', view({ status: 'cancelled', exit_code: null }));
    expect(run.cancelling).toBe(false);
    await run.cancel();
    expect(api.cancel).toHaveBeenCalledTimes(1);

    api.cancel.mockRejectedValueOnce(new ApiError(409, 'already_finished', 'the execution has already finished'));
    await run.run({ script: '', lang: 'python' });
    await run.cancel();
    expect(run.error).toBeNull();
  });

  it('a new run closes the previous stream', async () => {
    const { run, streams } = setup();
    await run.run({ script: '', lang: 'python' });
    await run.run({ script: '', lang: 'python' });
    expect(streams.opened[0]?.closed).toBe(true);
    expect(streams.opened[1]?.closed).toBe(false);
  });
});

describe('RunStore.show', () => {
  it('shows a finished run without a stream, and follows one still running', () => {
    const { run, streams } = setup();
    run.show(view({ stdout: 'old output' }));
    expect(streams.opened).toHaveLength(0);
    expect(run.result?.status).toBe('completed');
    expect(text(run)).toBe('old output');

    run.show(view({ execution_id: 'e2', status: 'running', finished_at: null }));
    expect(run.result).toBeNull();
    expect(run.running).toBe(true);
    expect(streams.last().url).toBe('/api/v1/executions/e2/events');
    expect(streams.last().options.isDone?.()).toBe(false);
    streams.emit('output', { stream: 'stdout', seq: 0, data: 'live' });
    expect(text(run)).toBe('live');

    run.clear();
    expect(streams.last().closed).toBe(true);
    expect(run.executionId).toBeNull();
  });
});

describe('RunStore streams', () => {
  it('ignores events that a replaced stream still delivers', async () => {
    const { run, streams } = setup();
    await run.run({ script: '', lang: 'python' });
    const old = streams.last();
    await run.run({ script: '', lang: 'python' });
    old.options.onEvent({ event: 'output', data: JSON.stringify({ stream: 'stdout', seq: 0, data: 'stale' }), id: '1-0' });
    old.options.onState?.('closed', { error: new Error('gone') });
    expect(text(run)).toBe('');
    expect(run.error).toBeNull();
    expect(old.options.isDone?.()).toBe(true);
  });
});
