"""`make soak`: many sessions and turns at once, with faults, against a real `hotsvc serve`.

Clients open sessions on three profiles (plain, slow to start, noisy on stderr), send turns
that are ordinary or faulty (the stand-in CLI crashes, hangs past the inactivity timeout,
writes garbage or a long line, streams slowly), interrupt some, disconnect mid-turn, come
back to their sessions (resumed when their process was evicted or died) and close them.
`--max-sessions` is below the number of clients, so sessions are evicted and refused.

It fails (exit 1) when any process leaked, when a turn on a stream the client did not
cancel lacks exactly one result, on an undocumented status, when more processes ran than
`--max-sessions`, or when the service's memory grew past a bound between the first and
the second half of the sessions. Bounded in count and time; loopback only.
"""

# This docstring is also `python -m hotsvc_tools.soak --help`'s description. The modules:
#   figures   Options (what to run) and Figures (what happened)
#   plan      the seeded random workload: profiles, turn kinds and faults, disconnects
#   procfs    processes, their sessions and memory, from /proc
#   server    `hotsvc serve` under test: start, sample its children, stop
#   client    the clients driving Prompt streams, and what each stream got
#   checks    leaks, lost or doubled results, statuses, the process cap, memory growth
#   runner    the whole soak: run()
#   report    render(): the figures as text
#   __main__  the command line

from hotsvc_tools.soak.figures import Figures, Options
from hotsvc_tools.soak.report import render
from hotsvc_tools.soak.runner import run

__all__ = ["Figures", "Options", "render", "run"]
