// One hot session on one bidi Prompt stream; every event routed to the turn it belongs to.
import { create, type JsonObject, type MessageInitShape } from "@bufbuild/protobuf";
import type { Client } from "@connectrpc/connect";
import { createWritableIterable, type WritableIterable } from "@connectrpc/connect/protocol";
import {
  type HotSession,
  type PermissionRequest,
  PromptRequestSchema,
  type PromptRequest,
  type PromptResponse,
  type SessionOpened,
  type SessionStart,
  type TurnResult,
  type UserTurnSchema,
} from "@hotsvc/hotsession-client/proto";
import {
  HotSessionError,
  SessionClosedError,
  streamError,
  toHotSessionError,
  TurnFailedError,
} from "./errors.js";

/** An answer to a permission request: true/false, or the whole decision. */
export type PermissionAnswer =
  | boolean
  | {
      allow: boolean;
      /** Shown to Claude when denying. */
      message?: string;
      /** Run the tool with this input instead. */
      updatedInput?: JsonObject;
      /** Deny and stop the turn. */
      interrupt?: boolean;
      /** Indexes into the request's suggestions to apply with an allow. */
      applySuggestions?: number[];
    };

/** Decides Claude Code's permission requests (a profile with permission_prompts = "caller"). */
export type PermissionCallback = (
  request: PermissionRequest,
) => PermissionAnswer | Promise<PermissionAnswer>;

type RequestInit = MessageInitShape<typeof PromptRequestSchema>["request"];
type Content = NonNullable<MessageInitShape<typeof UserTurnSchema>["content"]>;

/** One user turn: iterate it for its events (each pass from the first), or await result(). */
export class Turn implements AsyncIterable<PromptResponse> {
  readonly #events: PromptResponse[] = [];
  #wake: () => void = () => {};
  #changed = new Promise<void>((resolve) => (this.#wake = resolve));
  #failure: Error | undefined;
  #settled = false;
  readonly #result: Promise<TurnResult>;
  #resolve!: (r: TurnResult) => void;
  #reject!: (e: Error) => void;

  constructor(readonly turnId: string) {
    this.#result = new Promise<TurnResult>((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
    this.#result.catch(() => {}); // a caller may never await it
  }

  get done(): boolean {
    return this.#settled;
  }

  #notify(): void {
    const wake = this.#wake;
    this.#changed = new Promise<void>((resolve) => (this.#wake = resolve));
    wake();
  }

  /** @internal Records an event; true once the turn has ended. */
  deliver(event: PromptResponse): boolean {
    if (this.#settled) return true;
    this.#events.push(event);
    if (event.event.case === "result") {
      this.#settled = true;
      this.#resolve(event.event.value);
    } else if (event.event.case === "error") {
      this.#settled = true; // refused, e.g. past the pending-turn limit
      this.#failure = streamError(event.event.value);
      this.#reject(this.#failure);
    }
    this.#notify();
    return this.#settled;
  }

  /** @internal */
  fail(error: Error): void {
    if (this.#settled) return;
    this.#settled = true;
    this.#failure = error;
    this.#reject(error);
    this.#notify();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<PromptResponse> {
    for (let seen = 0; ; ) {
      const changed = this.#changed;
      while (seen < this.#events.length) {
        const event = this.#events[seen++]!;
        yield event;
        if (event.event.case === "result") return;
      }
      if (this.#failure) throw this.#failure;
      if (this.#settled) return;
      await changed;
    }
  }

  /** The turn's result (errors included: check isError); rejects if the stream broke first. */
  result(): Promise<TurnResult> {
    return this.#result;
  }

  /** The final text; rejects with TurnFailedError when the result is an error. */
  async text(): Promise<string> {
    const result = await this.#result;
    if (result.isError) throw new TurnFailedError(result);
    return result.text;
  }
}

/** A hot session attached through one Prompt stream. Make it with client.openSession(). */
export class Session {
  readonly #rpc: Client<typeof HotSession>;
  readonly #requests: WritableIterable<PromptRequest>;
  readonly #abort: AbortController;
  readonly #onPermission: PermissionCallback | undefined;
  readonly #turns = new Map<string, Turn>();
  readonly #prefix = Math.random().toString(16).slice(2, 10);
  #ids = 0;
  #halfClosed = false;
  #closed = false;
  #error: Error | undefined;
  readonly #reader: Promise<void>;

  /** @internal */
  constructor(
    rpc: Client<typeof HotSession>,
    requests: WritableIterable<PromptRequest>,
    events: AsyncIterator<PromptResponse>,
    abort: AbortController,
    readonly opened: SessionOpened,
    onPermission: PermissionCallback | undefined,
  ) {
    this.#rpc = rpc;
    this.#requests = requests;
    this.#abort = abort;
    this.#onPermission = onPermission;
    this.#reader = this.#read(events);
  }

  get sessionId(): string {
    return this.opened.sessionId;
  }
  /** Where the process came from: SessionStart.WARM, COLD, ATTACHED or RESUMED. */
  get start(): SessionStart {
    return this.opened.start;
  }
  get pid(): number {
    return this.opened.pid;
  }

  async #write(request: RequestInit): Promise<void> {
    if (this.#error) throw this.#error;
    if (this.#closed || this.#halfClosed) {
      throw new SessionClosedError(`session ${this.sessionId}: the stream is closed for writing`);
    }
    try {
      await this.#requests.write(create(PromptRequestSchema, { request }));
    } catch (err) {
      throw this.#error ?? new SessionClosedError(`write failed: ${String(err)}`);
    }
  }

  /** Writes a user turn; turns run in order, one at a time. `content` adds blocks. */
  async send(text: string, options: { content?: Content; turnId?: string } = {}): Promise<Turn> {
    if (!text && !options.content?.length) throw new TypeError("a turn needs text or content");
    const turn = new Turn(options.turnId ?? `${this.#prefix}-${++this.#ids}`);
    if (this.#turns.has(turn.turnId)) throw new TypeError(`turn id ${turn.turnId} is pending`);
    this.#turns.set(turn.turnId, turn); // before writing: the first event may come at once
    try {
      await this.#write({
        case: "turn",
        value: { text, turnId: turn.turnId, content: options.content ?? [] },
      });
    } catch (err) {
      this.#turns.delete(turn.turnId);
      throw err;
    }
    return turn;
  }

  /** Sends a turn and returns its final text (TurnFailedError if it failed). */
  async ask(text: string, options: { content?: Content } = {}): Promise<string> {
    return (await this.send(text, options)).text();
  }

  /** Stops the most recently sent turn if it has not finished; the session stays. */
  async interrupt(): Promise<void> {
    await this.#write({ case: "interrupt", value: {} });
  }

  /** Answers permission request `requestId` (for callers without onPermission). */
  async decide(requestId: string, answer: PermissionAnswer): Promise<void> {
    const decision = typeof answer === "boolean" ? { allow: answer } : answer;
    await this.#write({
      case: "permissionDecision",
      value: {
        requestId,
        allow: decision.allow,
        message: decision.message ?? "",
        interrupt: decision.interrupt ?? false,
        applySuggestions: decision.applySuggestions ?? [],
        ...(decision.updatedInput ? { updatedInput: decision.updatedInput } : {}),
      },
    });
  }

  /** Half-closes the stream: pending turns finish, the RPC ends, the session stays hot. */
  async detach(): Promise<void> {
    if (!this.#halfClosed && !this.#closed) {
      this.#halfClosed = true;
      this.#requests.close();
    }
    await this.#reader;
    if (this.#error) throw this.#error;
  }

  /** Ends the session and its process (CloseSession; the conversation is kept), then the stream. */
  async close(): Promise<void> {
    await this.#end("closeSession");
  }

  /** Removes the session for good (DeleteSession), then the stream. */
  async delete(): Promise<void> {
    await this.#end("deleteSession");
  }

  /** Ends the session with `method`, then drops the stream and waits for its reader. */
  async #end(method: "closeSession" | "deleteSession"): Promise<void> {
    this.#closed = true;
    try {
      await this.#rpc[method](
        { sessionId: this.sessionId },
        { headers: { "hotsvc-session-id": this.sessionId } },
      );
    } catch (err) {
      throw toHotSessionError(err);
    } finally {
      this.#drop();
      await this.#reader;
    }
  }

  #drop(): void {
    this.#requests.close();
    this.#abort.abort();
  }

  async #answer(request: PermissionRequest): Promise<void> {
    try {
      await this.decide(request.requestId, await this.#onPermission!(request));
    } catch {
      // The stream is gone (its waiters hear why), or the callback threw: hotsvc denies
      // an unanswered request when its time runs out.
    }
  }

  async #read(events: AsyncIterator<PromptResponse>): Promise<void> {
    let failure: Error = new SessionClosedError(
      `session ${this.sessionId}: the stream ended before the turn's result`,
    );
    try {
      for (;;) {
        const next = await events.next();
        if (next.done) break;
        const event = next.value;
        if (event.event.case === "permissionRequest" && this.#onPermission) {
          void this.#answer(event.event.value);
        }
        const turn = this.#turns.get(event.turnId);
        if (turn?.deliver(event)) this.#turns.delete(event.turnId);
      }
    } catch (err) {
      if (!this.#closed) {
        failure = toHotSessionError(err);
        this.#error = failure;
      }
    } finally {
      for (const turn of this.#turns.values()) turn.fail(failure);
      this.#turns.clear();
    }
  }
}

export { HotSessionError };
