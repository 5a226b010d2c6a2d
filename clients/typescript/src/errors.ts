// Errors as TypeScript callers catch them: the gRPC status and the google.rpc details.
import { Code, ConnectError } from "@connectrpc/connect";
import {
  BadRequestSchema,
  ErrorInfoSchema,
  QuotaFailureSchema,
  RetryInfoSchema,
} from "@hotsvc/hotsession-client/rpc";
import type { StreamError, TurnResult } from "@hotsvc/hotsession-client/proto";

/** A call hotsvc refused: its status code and the google.rpc details it carried. */
export class HotSessionError extends Error {
  override readonly name = "HotSessionError";
  /** The gRPC status code (Connect's Code enum: Code.NotFound, Code.Unavailable, ...). */
  readonly code: Code;
  /** google.rpc.ErrorInfo's stable reason, e.g. "SESSION_NOT_FOUND". */
  readonly reason: string;
  /** The figures the message quotes (sessionId, maxSessions, ...). */
  readonly metadata: Readonly<Record<string, string>>;
  /** google.rpc.RetryInfo's delay, where a retry can succeed. */
  readonly retryDelayMs: number | undefined;
  /** google.rpc.BadRequest: which request field to fix, and why. */
  readonly fieldViolations: ReadonlyArray<{ field: string; description: string }>;
  /** google.rpc.QuotaFailure: whose quota, and which. */
  readonly quotaViolations: ReadonlyArray<{ subject: string; description: string }>;

  constructor(
    message: string,
    code: Code,
    details: {
      reason?: string;
      metadata?: Record<string, string>;
      retryDelayMs?: number;
      fieldViolations?: { field: string; description: string }[];
      quotaViolations?: { subject: string; description: string }[];
      cause?: unknown;
    } = {},
  ) {
    super(message, { cause: details.cause });
    this.code = code;
    this.reason = details.reason ?? "";
    this.metadata = details.metadata ?? {};
    this.retryDelayMs = details.retryDelayMs;
    this.fieldViolations = details.fieldViolations ?? [];
    this.quotaViolations = details.quotaViolations ?? [];
  }

  /** The status code's name, e.g. "not_found". */
  get codeName(): string {
    return Code[this.code] ?? String(this.code);
  }

  /** UNAVAILABLE and RESOURCE_EXHAUSTED: waiting retryDelayMs and trying again can work. */
  get retryable(): boolean {
    return this.code === Code.Unavailable || this.code === Code.ResourceExhausted;
  }
}

const durationMs = (d: { seconds: bigint; nanos: number } | undefined): number | undefined =>
  d === undefined ? undefined : Number(d.seconds) * 1000 + d.nanos / 1e6;

/** The HotSessionError for anything a call threw (a ConnectError or other). */
export function toHotSessionError(err: unknown): HotSessionError {
  if (err instanceof HotSessionError) return err;
  const connect = ConnectError.from(err);
  const [info] = connect.findDetails(ErrorInfoSchema);
  const [retry] = connect.findDetails(RetryInfoSchema);
  return new HotSessionError(connect.rawMessage, connect.code, {
    reason: info?.reason,
    metadata: info?.metadata,
    retryDelayMs: durationMs(retry?.retryDelay),
    fieldViolations: connect
      .findDetails(BadRequestSchema)
      .flatMap((b) => b.fieldViolations.map(({ field, description }) => ({ field, description }))),
    quotaViolations: connect
      .findDetails(QuotaFailureSchema)
      .flatMap((q) => q.violations.map(({ subject, description }) => ({ subject, description }))),
    cause: err,
  });
}

/** A refusal on an open stream (a `error` event), as a HotSessionError. */
export function streamError(e: StreamError): HotSessionError {
  return new HotSessionError(e.message, e.code as Code, {
    reason: e.reason,
    metadata: e.metadata,
    retryDelayMs: durationMs(e.retryDelay),
  });
}

/** The session's stream ended (or was closed) before the turn's result. */
export class SessionClosedError extends Error {
  override readonly name = "SessionClosedError";
}

/** A turn whose result has isError (e.g. subtype "interrupted"). */
export class TurnFailedError extends Error {
  override readonly name = "TurnFailedError";
  constructor(readonly result: TurnResult) {
    super(`turn failed (${result.subtype || "error"})${result.text ? `: ${result.text}` : ""}`);
  }
}

export interface RetryOptions {
  /** Attempts in all, the first included (default 4). */
  attempts?: number;
  /** The wait when the error names no retry delay (default 200 ms, doubling). */
  backoffMs?: number;
  /** Caps any one wait (default 30 s). */
  maxDelayMs?: number;
  signal?: AbortSignal;
}

/**
 * Calls fn until it succeeds or fails with an error no retry can fix: UNAVAILABLE and
 * RESOURCE_EXHAUSTED are retried after the RetryInfo delay hotsvc sent.
 */
export async function withRetry<T>(fn: () => Promise<T>, options: RetryOptions = {}): Promise<T> {
  const attempts = options.attempts ?? 4;
  let backoff = options.backoffMs ?? 200;
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      const refused = toHotSessionError(err);
      if (attempt >= attempts || !refused.retryable) throw refused;
      let wait = refused.retryDelayMs;
      if (wait === undefined || wait <= 0) {
        wait = backoff;
        backoff *= 2;
      }
      wait = Math.min(wait, options.maxDelayMs ?? 30_000);
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(resolve, wait);
        options.signal?.addEventListener(
          "abort",
          () => {
            clearTimeout(timer);
            reject(options.signal?.reason);
          },
          { once: true },
        );
      });
    }
  }
}
