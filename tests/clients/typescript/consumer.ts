// A project outside the repository using the npm pack tarball, as a user would. Run by
// tests/test_clients.py: HOTSVC_ADDR (TLS), HOTSVC_CA, HOTSVC_TOKEN; HOTSVC_PERMISSION=1
// also drives a permission request answered by a callback.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { Code } from "@connectrpc/connect";
import {
  connect,
  HotSessionError,
  type HotSessionClient,
  TurnFailedError,
  VERSION,
} from "@hotsvc/hotsession-client";
import { type PermissionRequest, SessionStart, SessionState } from "@hotsvc/hotsession-client/proto";

async function memoryAndInterrupt(client: HotSessionClient): Promise<void> {
  const session = await client.openSession();
  assert.ok([SessionStart.WARM, SessionStart.COLD].includes(session.start), `${session.start}`);
  assert.equal(await session.ask("Remember 42"), "OK");
  const turn = await session.send("What number?");
  const kinds: string[] = [];
  for await (const { event } of turn) kinds.push(event.case ?? "none");
  assert.equal(kinds[0], "turnStarted", kinds.join());
  assert.equal(kinds.at(-1), "result", kinds.join());
  assert.ok(kinds.includes("textDelta"), kinds.join());
  assert.equal(await turn.text(), "42");

  const slow = await session.send("tell me something slow");
  for await (const { event } of slow) {
    if (event.case === "textDelta") {
      await session.interrupt();
      break;
    }
  }
  assert.ok((await slow.result()).isError);
  await assert.rejects(slow.text(), TurnFailedError);
  assert.equal(await session.ask("What number?"), "42");

  const listed: string[] = [];
  for await (const s of client.listSessions()) listed.push(s.sessionId);
  assert.ok(listed.includes(session.sessionId), listed.join());
  await session.detach(); // stays hot: re-attach by id
  const again = await client.openSession({ sessionId: session.sessionId });
  assert.equal(again.start, SessionStart.ATTACHED);
  assert.equal(await again.ask("What number?"), "42");
  await again.close();
  assert.equal((await client.getSession(session.sessionId)).state, SessionState.STOPPED);
}

async function typedError(client: HotSessionClient): Promise<void> {
  await assert.rejects(client.openSession({ profile: "no-such-profile" }), (err: unknown) => {
    assert.ok(err instanceof HotSessionError, String(err));
    assert.equal(err.code, Code.NotFound);
    assert.equal(err.reason, "PROFILE_NOT_FOUND");
    assert.ok(err.metadata.knownProfiles, JSON.stringify(err.metadata));
    return true;
  });
}

async function permission(client: HotSessionClient): Promise<void> {
  const asked: PermissionRequest[] = [];
  const session = await client.openSession({
    profile: "caller",
    onPermission: (request) => {
      asked.push(request);
      return true;
    },
  });
  const text = await session.ask("write file from-typescript.txt");
  assert.deepEqual(
    asked.map((r) => r.toolName),
    ["Write"],
  );
  assert.match(text, /Write tool said/);
  await session.close();
}

assert.match(VERSION, /^\d+\.\d+\.\d+$/);
const client = connect(process.env.HOTSVC_ADDR!, {
  tls: { ca: readFileSync(process.env.HOTSVC_CA!) },
  token: process.env.HOTSVC_TOKEN!,
});
try {
  await memoryAndInterrupt(client);
  await typedError(client);
  if (process.env.HOTSVC_PERMISSION === "1") await permission(client);
} finally {
  client.close();
}
console.log("consumer: PASS");
