// @hotsvc/hotsession-client: a helper over Connect's gRPC transport for Node.
//
//   const client = connect("127.0.0.1:50051");                 // { tls, token } as needed
//   const session = await client.openSession();
//   console.log(await session.ask("Remember 42"));              // "OK"
//   const turn = await session.send("What number?");
//   for await (const event of turn) { ... }                     // turnStarted ... result
//   await session.close();
//   client.close();
//
// The generated code is the "./proto" export; the .proto is "./hotsession.proto".
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { type Client, createClient, type Interceptor, type Transport } from "@connectrpc/connect";
import { createWritableIterable } from "@connectrpc/connect/protocol";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import {
  type CloseSessionResponse,
  HotSession,
  type PoolStatusResponse,
  PromptRequestSchema,
  type PromptRequest,
  type Session as SessionResource,
  type SessionMessage,
  type SessionOptionsSchema,
} from "@hotsvc/hotsession-client/proto";
import { VERSION } from "../src/gen/version.js";
import { toHotSessionError } from "./errors.js";
import { type PermissionCallback, Session } from "./session.js";

export {
  HotSessionError,
  SessionClosedError,
  TurnFailedError,
  toHotSessionError,
  withRetry,
  type RetryOptions,
} from "./errors.js";
export { Session, Turn, type PermissionAnswer, type PermissionCallback } from "./session.js";
export { VERSION };

/** The largest message hotsvc sends (it splits or cuts events to fit). */
export const MAX_RESPONSE_BYTES = 4 * 1024 * 1024;

export interface ConnectOptions {
  /** true: TLS with the system's roots; or a private CA and, for mTLS, a client certificate. */
  tls?: boolean | { ca?: string | Buffer; cert?: string | Buffer; key?: string | Buffer };
  /** Sent as `authorization: Bearer TOKEN` on every call (from `hotsvc token`, or a JWT). */
  token?: string;
  /** Extra Connect interceptors. */
  interceptors?: Interceptor[];
}

export interface OpenOptions {
  /** Re-attach to this session (resuming it if stopped); empty opens a new one, warm. */
  sessionId?: string;
  /** Create sessionId if it does not exist (a new session without one gets a fresh id). */
  createIfMissing?: boolean;
  /** A profile of the service's config; empty is the default. */
  profile?: string;
  /** Options for a new session, as the profile's caller_may_set allows. */
  options?: MessageInitShape<typeof SessionOptionsSchema>;
  includeRawJson?: boolean;
  /** Answers Claude Code's permission requests; without it, answer with session.decide(). */
  onPermission?: PermissionCallback;
  /** Ends the session's stream when aborted (the session stays, as on detach). */
  signal?: AbortSignal;
}

/** Makes a client for address (host:port); nothing is dialled until the first call. */
export function connect(address: string, options: ConnectOptions = {}): HotSessionClient {
  const secure = options.tls !== undefined && options.tls !== false;
  const baseUrl = `${secure ? "https" : "http"}://${address}`;
  const nodeOptions = typeof options.tls === "object" ? options.tls : {};
  const sessions = new Http2SessionManager(baseUrl, {}, nodeOptions);
  const auth: Interceptor[] = options.token
    ? [
        (next) => (req) => {
          req.header.set("authorization", `Bearer ${options.token}`);
          return next(req);
        },
      ]
    : [];
  const transport = createGrpcTransport({
    baseUrl,
    sessionManager: sessions,
    readMaxBytes: MAX_RESPONSE_BYTES,
    interceptors: [...auth, ...(options.interceptors ?? [])],
  });
  return new HotSessionClient(transport, () => sessions.abort());
}

const routed = (sessionId: string) => ({ headers: { "hotsvc-session-id": sessionId } });

/** A connection to hotsvc. */
export class HotSessionClient {
  /** The generated Connect client, for calls the helper does not wrap. */
  readonly rpc: Client<typeof HotSession>;
  readonly #close: () => void;

  constructor(transport: Transport, close: () => void = () => {}) {
    this.rpc = createClient(HotSession, transport);
    this.#close = close;
  }

  /** Closes the connection (and every stream still on it). */
  close(): void {
    this.#close();
  }

  /** Opens a session and resolves once hotsvc confirmed it (the `opened` event). */
  async openSession(options: OpenOptions = {}): Promise<Session> {
    // A new session gets its id here, sent as routing metadata too, so a load balancer
    // routes its first request as every later one; it still takes a warm process.
    const sessionId = options.sessionId || crypto.randomUUID();
    const createIfMissing = !options.sessionId || (options.createIfMissing ?? false);
    const abort = new AbortController();
    options.signal?.addEventListener("abort", () => abort.abort(options.signal?.reason), {
      once: true,
    });
    const requests = createWritableIterable<PromptRequest>();
    const events = this.rpc
      .prompt(requests, { signal: abort.signal, ...routed(sessionId) })
      [Symbol.asyncIterator]();
    // Not awaited before reading: the call takes requests only once it runs.
    void requests
      .write(
        create(PromptRequestSchema, {
          request: {
            case: "open",
            value: {
              sessionId,
              profile: options.profile ?? "",
              createIfMissing,
              includeRawJson: options.includeRawJson ?? false,
              ...(options.options ? { options: options.options } : {}),
            },
          },
        }),
      )
      .catch(() => {}); // a failed open shows as the stream's error below
    try {
      for (;;) {
        const next = await events.next();
        if (next.done) throw new Error("the Prompt stream ended before `opened`");
        const event = next.value.event;
        if (event.case === "opened") {
          return new Session(this.rpc, requests, events, abort, event.value, options.onPermission);
        }
        // "queued" progress while the open waits for room: keep waiting.
      }
    } catch (err) {
      abort.abort();
      throw toHotSessionError(err);
    }
  }

  async #call<T>(call: () => Promise<T>): Promise<T> {
    try {
      return await call();
    } catch (err) {
      throw toHotSessionError(err);
    }
  }

  /** One session: state, owner, turns, model, usage and cost. */
  getSession(sessionId: string): Promise<SessionResource> {
    return this.#call(() => this.rpc.getSession({ sessionId }, routed(sessionId)));
  }

  /** Every session you may see, newest first, page after page; `filter` as in `state = STOPPED`. */
  async *listSessions(options: { filter?: string; pageSize?: number } = {}): AsyncGenerator<SessionResource> {
    let pageToken = "";
    do {
      const page = await this.#call(() =>
        this.rpc.listSessions({
          filter: options.filter ?? "",
          pageSize: options.pageSize ?? 0,
          pageToken,
        }),
      );
      yield* page.sessions;
      pageToken = page.nextPageToken;
    } while (pageToken);
  }

  /** The whole conversation, oldest first. */
  async getSessionMessages(sessionId: string): Promise<SessionMessage[]> {
    const all: SessionMessage[] = [];
    let pageToken = "";
    do {
      const page = await this.#call(() =>
        this.rpc.getSessionMessages({ sessionId, pageToken }, routed(sessionId)),
      );
      all.push(...page.messages);
      pageToken = page.nextPageToken;
    } while (pageToken);
    return all;
  }

  /** A new session (yours) holding a copy of the conversation. */
  fork(sessionId: string): Promise<SessionResource> {
    return this.#call(() => this.rpc.forkSession({ sessionId }, routed(sessionId)));
  }

  /** Ends a session's process; the conversation is kept (a later open resumes it). */
  closeSession(sessionId: string): Promise<CloseSessionResponse> {
    return this.#call(() => this.rpc.closeSession({ sessionId }, routed(sessionId)));
  }

  /** Removes a session, its process, conversation and workspace. */
  async deleteSession(sessionId: string): Promise<void> {
    await this.#call(() => this.rpc.deleteSession({ sessionId }, routed(sessionId)));
  }

  /** The warm pools and your live sessions. */
  poolStatus(): Promise<PoolStatusResponse> {
    return this.#call(() => this.rpc.poolStatus({}));
  }
}
