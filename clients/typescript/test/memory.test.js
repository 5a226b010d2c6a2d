// @ts-check
// Two turns on one bidi Prompt stream against a live hotsvc (HOTSVC_ADDR).
import assert from "node:assert/strict";
import { test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createWritableIterable } from "@connectrpc/connect/protocol";
import { createGrpcTransport } from "@connectrpc/connect-node";
import {
  HotSession,
  PromptRequestSchema,
  SessionStart,
} from "../src/gen/hotsession/v1/hotsession_pb.js";

/** @typedef {import("../src/gen/hotsession/v1/hotsession_pb.js").PromptRequest} PromptRequest */
/** @typedef {import("../src/gen/hotsession/v1/hotsession_pb.js").PromptResponse} PromptResponse */
/** @typedef {import("../src/gen/hotsession/v1/hotsession_pb.js").TurnResult} TurnResult */

const addr = process.env.HOTSVC_ADDR;

test("two turns on one Prompt stream remember a number", { timeout: 120_000 }, async () => {
  assert.ok(addr, "HOTSVC_ADDR is not set: point it at a running `hotsvc serve`");
  const client = createClient(HotSession, createGrpcTransport({ baseUrl: `http://${addr}` }));
  const signal = AbortSignal.timeout(110_000);

  /** @type {import("@connectrpc/connect/protocol").WritableIterable<PromptRequest>} */
  const requests = createWritableIterable();
  const events = client.prompt(requests, { signal })[Symbol.asyncIterator]();
  // write() settles once the transport has taken the message; it is not awaited
  // before reading, since the call only starts pulling requests once it runs.
  /** @type {Promise<void>[]} */
  const writes = [];
  /** @param {import("@bufbuild/protobuf").MessageInitShape<typeof PromptRequestSchema>["request"]} request */
  const send = (request) => writes.push(requests.write(create(PromptRequestSchema, { request })));

  /** @returns {Promise<PromptResponse>} */
  const next = async () => {
    const r = await events.next();
    assert.ok(!r.done, "the Prompt stream ended early");
    return r.value;
  };

  send({ case: "open", value: {} });
  const first = await next();
  assert.equal(first.event.case, "opened", `first event: ${first.event.case}`);
  const opened = first.event.value;
  assert.ok(opened.sessionId, "opened has a session id");
  assert.equal(first.sessionId, opened.sessionId);
  assert.ok(opened.pid > 0, "opened has a pid");
  assert.notEqual(opened.start, SessionStart.UNSPECIFIED);

  /**
   * Sends one turn and reads its events up to and including its result.
   * @param {string} text
   * @param {string} turnId
   * @returns {Promise<TurnResult>}
   */
  const turn = async (text, turnId) => {
    send({ case: "turn", value: { text, turnId } });
    /** @type {string[]} */
    const seen = [];
    for (;;) {
      const ev = await next();
      assert.equal(ev.sessionId, opened.sessionId);
      assert.equal(ev.turnId, turnId, `event ${ev.event.case} belongs to turn ${turnId}`);
      seen.push(ev.event.case ?? "none");
      if (ev.event.case === "result") {
        assert.equal(seen[0], "turnStarted", `events: ${seen.join(",")}`);
        assert.ok(!ev.event.value.isError, `turn failed: ${ev.event.value.text}`);
        return ev.event.value;
      }
    }
  };

  assert.match((await turn("Remember 42", "ts-1")).text, /OK/);
  assert.match((await turn("What number?", "ts-2")).text, /42/);

  // Half-close: the RPC ends with OK once no turn is pending.
  requests.close();
  const end = await events.next();
  assert.ok(end.done, `expected the stream to end, got ${JSON.stringify(end.value?.event.case)}`);
  await Promise.all(writes);

  const status = await client.poolStatus({}, { signal });
  assert.ok(
    status.sessions.some((s) => s.sessionId === opened.sessionId),
    "PoolStatus lists the session",
  );
  const closed = await client.closeSession({ sessionId: opened.sessionId }, { signal });
  assert.equal(closed.sessionId, opened.sessionId);
});
