"""A stand-in CLI that answers every turn with a real CLI's recorded lines, for profiling.

    hotsvc-replay TURN.jsonl [--gap-ms G] ...the CLI's own flags (ignored but --session-id)

Each user line is answered with the recorded turn (see `python -m hotsvc_tools.hotturn
--record`), with its own uuid in the echo and in the result, and the turn's entries
appended to the session's transcript, so hotsvc frames and settles it as a real turn.
With --gap-ms, the lines go out one write at a time, that far apart (as the real CLI
writes them); without, in one write. Control requests are answered with an empty success.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid as uuids

from hotsvc.claude.transcripts import transcript_path


def main() -> None:
    args = sys.argv[1:]
    with open(args[0], "rb") as file:
        recorded = [json.loads(line) for line in file if line.strip()]
    gap = float(args[args.index("--gap-ms") + 1]) / 1e3 if "--gap-ms" in args else 0.0
    session_id = args[args.index("--session-id") + 1] if "--session-id" in args else ""
    if "--resume" in args:
        session_id = args[args.index("--resume") + 1]
    path = transcript_path(os.environ, os.getcwd(), session_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = sys.stdout.buffer
    for raw in sys.stdin.buffer:
        message = json.loads(raw)
        if message.get("type") == "control_request":
            answer = {
                "type": "control_response",
                "response": {
                    "subtype": "success",
                    "request_id": message["request_id"],
                    "response": {},
                },
            }
            out.write(json.dumps(answer).encode() + b"\n")
            out.flush()
            continue
        if message.get("type") != "user":
            continue
        mine = message.get("uuid") or str(uuids.uuid4())
        lines = []
        for line in recorded:
            line = dict(line)
            if line.get("type") == "user":
                line["uuid"] = mine
            elif line.get("type") == "assistant":
                line["uuid"] = str(uuids.uuid4())
                entry = {"type": "assistant", "uuid": line["uuid"], "sessionId": session_id}
                with open(path, "a") as transcript:
                    transcript.write(json.dumps({"type": "user", "uuid": mine}) + "\n")
                    transcript.write(json.dumps(entry) + "\n")
            elif line.get("type") == "result":
                line["user_message_uuids"] = [mine]
                line["session_id"] = session_id
            elif line.get("type") == "transcript_mirror":
                line["filePath"] = str(path)
            lines.append(json.dumps(line, separators=(",", ":")).encode() + b"\n")
        if gap:
            for line in lines:
                out.write(line)
                out.flush()
                time.sleep(gap)
        else:
            out.write(b"".join(lines))
            out.flush()


if __name__ == "__main__":
    main()
