// One execution as the editor shows it: submit, follow its SSE stream (resuming after drops),
// the status timeline, live output split into ANSI-styled segments, and the final result.
import { api as realApi } from '../api';
import { ApiError, describeError } from '../api/client';
import { isTerminal, type ExecutionStatus, type ExecutionView, type OutputEvent, type StatusEvent, type SubmitRequest } from '../api/types';
import { AnsiParser, type Segment } from '../ansi';
import { openStream as realOpenStream, type SseEvent, type StreamHandle, type StreamOptions } from '../sse';

export type Stream = 'stdout' | 'stderr';
export interface OutputChunk {
  stream: Stream;
  seq: number;
  segments: Segment[];
}
export interface TimelineEntry {
  status: ExecutionStatus;
  at: string | null;
}
export type Connection = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed';

export interface RunDeps {
  api: Pick<typeof realApi, 'execute' | 'cancel' | 'executionEventsUrl'>;
  openStream: (url: string, options: StreamOptions) => StreamHandle;
}

const ORDER: ExecutionStatus[] = ['queued', 'scheduled', 'running'];

export class RunStore {
  executionId = $state<string | null>(null);
  status = $state<ExecutionStatus | null>(null);
  timeline = $state<TimelineEntry[]>([]);
  output = $state<OutputChunk[]>([]);
  result = $state<ExecutionView | null>(null);
  connection = $state<Connection>('idle');
  error = $state<string | null>(null);
  submitting = $state(false);
  cancelling = $state(false);

  running = $derived(this.status !== null && !isTerminal(this.status));

  private deps: RunDeps;
  private handle: StreamHandle | null = null;
  private generation = 0;
  private parsers: Record<Stream, AnsiParser> = { stdout: new AnsiParser(), stderr: new AnsiParser() };
  /** Output seqs already shown: a bookkeeping detail, not rendered, so not reactive. */
  // eslint-disable-next-line svelte/prefer-svelte-reactivity
  private seen = new Set<number>();
  private live: Record<Stream, string> = { stdout: '', stderr: '' };

  constructor(deps: Partial<RunDeps> = {}) {
    this.deps = { api: deps.api ?? realApi, openStream: deps.openStream ?? realOpenStream };
  }

  private reset(executionId: string | null): void {
    this.handle?.close();
    this.handle = null;
    this.generation++;
    this.executionId = executionId;
    this.status = null;
    this.timeline = [];
    this.output = [];
    this.result = null;
    this.error = null;
    this.cancelling = false;
    this.connection = 'idle';
    this.parsers = { stdout: new AnsiParser(), stderr: new AnsiParser() };
    // eslint-disable-next-line svelte/prefer-svelte-reactivity
    this.seen = new Set();
    this.live = { stdout: '', stderr: '' };
  }

  async run(request: SubmitRequest): Promise<string | null> {
    this.reset(null);
    this.submitting = true;
    try {
      const accepted = await this.deps.api.execute(request);
      this.executionId = accepted.execution_id;
      this.mark(accepted.status, nowIso());
      this.follow(accepted.execution_id);
      return accepted.execution_id;
    } catch (error) {
      this.error = describeError(error);
      return null;
    } finally {
      this.submitting = false;
    }
  }

  /** Follows an execution's events from the start (a snapshot first). */
  follow(executionId: string): void {
    if (this.executionId !== executionId) this.reset(executionId);
    this.handle?.close();
    this.connection = 'connecting';
    // Events already read from a stream that was replaced must not reach the new run.
    const generation = ++this.generation;
    const current = () => generation === this.generation;
    this.handle = this.deps.openStream(this.deps.api.executionEventsUrl(executionId), {
      onEvent: (event) => current() && this.onEvent(event),
      isDone: () => !current() || this.result !== null,
      onState: (state, detail) => {
        if (!current()) return;
        this.connection = state;
        if (state === 'closed' && detail?.error && this.result === null) {
          this.error = describeError(detail.error);
        }
      },
    });
  }

  /** Shows a stored result without a stream (a finished execution from history). */
  show(view: ExecutionView): void {
    this.reset(view.execution_id);
    if (isTerminal(view.status)) {
      this.applyView(view);
    } else {
      // Still going: its output so far comes from the stream, which replays it.
      this.applyTimes(view);
      this.follow(view.execution_id);
    }
  }

  /** Forgets the run (sign-out). */
  clear(): void {
    this.reset(null);
  }

  async cancel(): Promise<void> {
    if (!this.executionId || !this.running) return;
    this.cancelling = true;
    try {
      await this.deps.api.cancel(this.executionId);
    } catch (error) {
      this.cancelling = false;
      if (!(error instanceof ApiError && error.code === 'already_finished')) {
        this.error = describeError(error);
      }
    }
  }

  close(): void {
    this.handle?.close();
    this.handle = null;
  }

  private onEvent(event: SseEvent): void {
    let data: unknown;
    try {
      data = JSON.parse(event.data);
    } catch {
      return;
    }
    switch (event.event) {
      case 'snapshot': {
        const view = data as ExecutionView;
        if (isTerminal(view.status)) this.applyView(view);
        else this.applyTimes(view);
        break;
      }
      case 'status': {
        const status = data as StatusEvent;
        this.mark(status.status, status.at);
        break;
      }
      case 'output':
        this.append(data as OutputEvent);
        break;
      case 'result':
        this.applyView(data as ExecutionView);
        break;
    }
  }

  private append(chunk: OutputEvent): void {
    if (this.result !== null || this.seen.has(chunk.seq)) return;
    this.seen.add(chunk.seq);
    this.live[chunk.stream] += chunk.data;
    const segments = this.parsers[chunk.stream].feed(chunk.data);
    const entry: OutputChunk = { stream: chunk.stream, seq: chunk.seq, segments };
    // Chunks arrive in seq order; a late one (after a resume) is put in its place.
    const index = this.output.findIndex((c) => c.seq > chunk.seq);
    if (index === -1) this.output.push(entry);
    else this.output.splice(index, 0, entry);
  }

  /** Marks a status reached at `at`; statuses only move forward. */
  private mark(status: ExecutionStatus, at: string | null): void {
    const existing = this.timeline.find((e) => e.status === status);
    if (existing) {
      existing.at ??= at;
    } else {
      this.timeline.push({ status, at });
      this.timeline.sort((a, b) => rank(a.status) - rank(b.status));
    }
    if (this.status === null || rank(status) >= rank(this.status)) this.status = status;
  }

  private applyTimes(view: ExecutionView): void {
    this.mark('queued', view.created_at);
    if (view.started_at) this.mark('running', view.started_at);
    this.mark(view.status, null);
  }

  private applyView(view: ExecutionView): void {
    this.applyTimes(view);
    if (isTerminal(view.status)) this.mark(view.status, view.finished_at ?? null);
    this.result = view;
    this.cancelling = false;
    // Keep the interleaved live chunks when they are exactly the stored output; else show the stored one.
    const complete = this.live.stdout === view.stdout && this.live.stderr === view.stderr && this.output.length > 0;
    if (!complete) {
      const parsers = { stdout: new AnsiParser(), stderr: new AnsiParser() };
      this.output = (['stdout', 'stderr'] as const)
        .filter((stream) => view[stream] !== '')
        .map((stream, seq) => ({ stream, seq, segments: parsers[stream].feed(view[stream]) }));
    }
  }
}

function nowIso(): string {
  return new Date(Date.now()).toISOString();
}

function rank(status: ExecutionStatus): number {
  const i = ORDER.indexOf(status);
  return i === -1 ? ORDER.length : i;
}

/** The editor's run, kept across page changes. */
export const currentRun = new RunStore();
