"""The soak's figures as the text `make soak` prints."""

from __future__ import annotations

import collections

from hotsvc_tools.soak.figures import Figures, Options


def render(options: Options, figures: Figures) -> str:
    def counts(counter: collections.Counter[str]) -> str:
        return ", ".join(f"{k} {v}" for k, v in counter.most_common()) or "none"

    first, second = figures.service_rss_mb
    lines = [
        f"hotsvc soak: {options.sessions} sessions, {options.concurrency} clients, "
        f"{options.turns} turns each, --max-sessions {options.max_sessions}, "
        f"--pool-size {options.pool_size}, seed {options.seed}, {figures.seconds:.1f} s",
        f"  sessions        {figures.sessions} opened, {figures.closes} closed",
        f"  streams         {figures.streams} ({counts(figures.opened_by_start)}); "
        f"{figures.disconnects} disconnected mid-turn",
        f"  turns           {figures.turns_sent} sent ({counts(figures.sent_by_kind)})",
        f"                  {figures.turns_accepted} on streams kept to the end, "
        f"{figures.results} results, {figures.results_lost_to_disconnects} "
        f"without a result on a cancelled stream; {figures.interrupts} interrupted",
        f"  results         {counts(figures.results_by_subtype)}",
        f"  by prompt       {counts(figures.outcomes)}",
        f"  resumes         {figures.opened_by_start['RESUMED']} on open, "
        f"{figures.resumed_in_turn} within a turn",
        f"  open refused    {counts(figures.refusals)}",
        f"  spawns          {figures.spawn_stats}",
        f"  service RSS     {first:.1f} MB after the first half, {second:.1f} MB after the "
        f"second; peak {figures.service_peak_mb:.1f}, final {figures.service_final_mb:.1f} MB",
        f"  children RSS    peak {figures.children_peak_mb:.1f} MB, final "
        f"{figures.children_final_mb:.1f} MB; at most {figures.children_peak} processes "
        f"at once (cap {options.max_sessions})",
        f"  leaked          {len(figures.leaked)} processes",
    ]
    if figures.failures:
        lines.append(f"FAILED ({len(figures.failures)}):")
        lines += [f"  - {failure}" for failure in figures.failures[:20]]
    else:
        lines.append("OK")
    return "\n".join(lines)
