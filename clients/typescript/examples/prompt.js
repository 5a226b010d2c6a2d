// @ts-check
// Opens a hot session on hotsvc, sends one turn and prints its events.
//
//   HOTSVC_ADDR=127.0.0.1:50051 node examples/prompt.js "Remember 42"
//
// HOTSVC_TOKEN sends a bearer token; HOTSVC_TLS=1 connects with TLS (system roots).
import { connect } from "@hotsvc/hotsession-client";

const client = connect(process.env.HOTSVC_ADDR ?? "127.0.0.1:50051", {
  tls: process.env.HOTSVC_TLS === "1",
  token: process.env.HOTSVC_TOKEN,
});
try {
  const session = await client.openSession();
  console.log(`session ${session.sessionId} (pid ${session.pid})`);
  const turn = await session.send(process.argv.slice(2).join(" ") || "Say hello");
  for await (const { event } of turn) {
    if (event.case === "textDelta") process.stdout.write(event.value.text);
  }
  const result = await turn.result();
  console.log(`\nresult (${result.subtype}): ${result.text}`);
  await session.detach(); // keeps it hot: openSession({ sessionId }) re-attaches
} finally {
  client.close();
}
