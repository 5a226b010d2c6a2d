// @ts-check
// Opens a hot session on hotsvc, sends one turn, and prints its events.
//
//   HOTSVC_ADDR=127.0.0.1:50051 node examples/prompt.js "Remember 42"
import { create } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { HotSession, PromptRequestSchema } from "../src/gen/hotsession/v1/hotsession_pb.js";

const addr = process.env.HOTSVC_ADDR ?? "127.0.0.1:50051";
const text = process.argv.slice(2).join(" ") || "Say hello";

// gRPC over HTTP/2 (cleartext); Connect's transport does bidi streaming on Node.
const client = createClient(HotSession, createGrpcTransport({ baseUrl: `http://${addr}` }));

// The requests: open first, then the turn. Ending the iterable half-closes the
// stream; the turn still runs to its result, then the RPC ends with OK.
async function* requests() {
  yield create(PromptRequestSchema, { request: { case: "open", value: {} } });
  yield create(PromptRequestSchema, { request: { case: "turn", value: { text } } });
}

for await (const res of client.prompt(requests())) {
  const { event } = res;
  switch (event.case) {
    case "opened":
      console.log(`session ${event.value.sessionId} (pid ${event.value.pid})`);
      break;
    case "textDelta":
      process.stdout.write(event.value.text);
      break;
    case "result":
      console.log(`\nresult (${event.value.subtype}): ${event.value.text}`);
      break;
  }
}
