"""The workload: what each client does, drawn from the seed so a run can be repeated.

Draws are made lazily, in the order the client needs them (some depend on what happened:
a stream that could not be opened draws nothing more), so one seed gives one plan.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

PROFILES = ("", "", "slowstart", "noisy")  # "" is the default profile
# Faulty turns, as (kind, prompt to the stand-in CLI, share of turns).
FAULTS = (
    ("crash", "please crash", 0.06),
    ("garbage", "garbage then echo", 0.06),
    ("slow", "slow story", 0.08),
    ("huge", "huge 300000", 0.03),
)
HANG_SHARE = 0.02  # while the budget of hangs (Options.hangs) lasts
MAX_TURNS_PER_STREAM = 4
DISCONNECT_SHARE = 0.15  # streams the client cancels mid-turn
GONE_SHARE = 0.3  # of those, clients that do not come back (the session is closed)
INTERRUPT_SHARE = 0.5  # of slow turns
MAX_EVENTS_BEFORE_DISCONNECT = 6


class Scenario:
    """The whole run's plan: one per client, and the hang budget they share."""

    def __init__(self, seed: int, hangs: int) -> None:
        self.seed = seed
        self.hangs_left = hangs

    def client(self, index: int) -> ClientPlan:
        return ClientPlan(self, random.Random(f"{self.seed}-{index}"))

    def turn(self, rng: random.Random) -> tuple[str, str]:
        """(kind, text) of the next turn."""
        roll = rng.random()
        if roll < HANG_SHARE and self.hangs_left > 0:
            self.hangs_left -= 1
            return "hang", "please hang"
        for kind, text, share in FAULTS:
            roll -= share
            if roll < 0:
                return kind, text
        number = rng.randint(1, 999)
        return rng.choice(
            [
                ("remember", f"Remember {number}"),
                ("recall", "What number?"),
                ("echo", f"echo soak {number}"),
            ]
        )


@dataclass
class StreamPlan:
    """One Prompt stream: its turns, and whether the client disconnects during one."""

    turns: list[tuple[str, str]]
    disconnect: bool


class ClientPlan:
    """One client's draws: its profile, then its streams one by one."""

    def __init__(self, scenario: Scenario, rng: random.Random) -> None:
        self.scenario = scenario
        self.rng = rng
        self.profile = rng.choice(PROFILES)

    def stream(self, turns_left: int) -> StreamPlan:
        count = self.rng.randint(1, min(turns_left, MAX_TURNS_PER_STREAM))
        turns = [self.scenario.turn(self.rng) for _ in range(count)]
        return StreamPlan(turns, self.rng.random() < DISCONNECT_SHARE)

    def cancel_turn(self, stream: StreamPlan) -> int:
        """The turn a disconnecting stream is cancelled in (drawn once it is open); or -1."""
        return self.rng.randrange(len(stream.turns)) if stream.disconnect else -1

    def interrupt(self, kind: str) -> bool:
        """Whether to interrupt this turn at its first text."""
        return kind == "slow" and self.rng.random() < INTERRUPT_SHARE

    def cancel_after(self, index: int, cancel_turn: int) -> int:
        """After how many events of turn `index` the client disconnects; -1: it does not."""
        return self.rng.randint(0, MAX_EVENTS_BEFORE_DISCONNECT) if index == cancel_turn else -1

    def gone_for_good(self, stream: StreamPlan) -> bool:
        """After a disconnect, whether the client stays away (its session is closed)."""
        return stream.disconnect and self.rng.random() < GONE_SHARE
