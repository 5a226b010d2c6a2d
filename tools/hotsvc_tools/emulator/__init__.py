"""A stand-in for the Claude Code CLI in stream-json mode, for tests: ``hotsvc-emulator``.

It speaks the protocol of ``claude -p --input-format stream-json --output-format
stream-json --verbose`` as recorded in shared/reference/claude-code-stream-json:
JSON lines in on stdin, JSON lines out on stdout, one ``result`` per user turn,
``control_request``/``control_response`` for initialize and interrupt. The "model"
is a script and env knobs inject faults.

Where the local scripted model (hotsvc.localmodel) has the same trigger ("Remember N",
"What number?", "slow", "echo X", "fail500"/"fail529", "stall", "run tool[: CMD]"), the
emulator reads it with that model's own ``classify`` and answers as the real CLI 2.1.330
does against it: tests/test_fidelity.py runs the same scenarios on both through hotsvc
and compares what callers see.

Modules, in the order a turn meets them:

- ``options``: the real CLI's argv, and the HOTSVC_EMU_* knobs (``Knobs``);
- ``stdio``: stdin lines in, stdout lines out, exiting like the real process;
- ``transcript``: sessions on disk, for ``--resume``;
- ``session``: the stdin loop, the prompt queue, control requests (``control``);
- ``turn``: one turn, init line to result; ``reply``: what the script answers;
- ``stream``: API messages as stream events; ``wire`` and ``results``: message shapes.

Only light modules are imported (no grpc, no http.server): the pool measures
spawn-to-first-turn, and tests spawn it many times.
"""
