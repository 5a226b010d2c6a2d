// @ts-check
// In a browser: one turn over hotsvc's HTTP face (`hotsvc serve --http-listen`, with
// `--http-cors-origins` naming the page's origin), Connect protocol over fetch. Browsers
// cannot hold a bidi stream, so this is Ask (server streaming): the same events, one turn.
//
//   (shipped in the package under examples/; copy it into your app)
//
// Bundle it with any bundler (moduleResolution "bundler"); needs @connectrpc/connect-web.
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { HotSession } from "@hotsvc/hotsession-client/proto";

/**
 * Runs one turn and returns its text, calling onText with each streamed piece.
 * @param {string} baseUrl e.g. "http://localhost:8080"
 * @param {string} text
 * @param {{ sessionId?: string, token?: string, onText?: (piece: string) => void }} [options]
 * @returns {Promise<{ sessionId: string, text: string }>}
 */
export async function askInBrowser(baseUrl, text, options = {}) {
  const transport = createConnectTransport({
    baseUrl,
    interceptors: options.token
      ? [(next) => (req) => (req.header.set("authorization", `Bearer ${options.token}`), next(req))]
      : [],
  });
  const client = createClient(HotSession, transport);
  let sessionId = options.sessionId ?? "";
  for await (const res of client.ask({ sessionId, turn: { text } })) {
    sessionId ||= res.sessionId;
    if (res.event.case === "textDelta") options.onText?.(res.event.value.text);
    if (res.event.case === "result") return { sessionId, text: res.event.value.text };
  }
  throw new Error("the Ask stream ended without a result");
}
