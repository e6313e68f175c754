"""Per-step training metrics on their way from the agents to the orchestrator.

An agent's actor sends its optimizer steps' records here without waiting, gathered into one
fire-and-forget call at most every `FLUSH_S` seconds and at the end of each call (a call per step
cost about 3% of a 20 ms step on the default world; benchmarks/step_metrics_overhead.py; the
sender is agents.actor.StepSender); the orchestrator drains the records while
it waits for a stage, so metrics.jsonl, the trackers and the progress display see every step as it
happens, not one mean per stage. A bounded buffer: if nobody drains, the oldest records go first
and are counted.
"""
from __future__ import annotations

from collections import deque
from typing import Any

import ray

MAX_RECORDS = 100_000


class _StepLog:
    def __init__(self, max_records: int = MAX_RECORDS):
        self.records: deque[dict[str, Any]] = deque(maxlen=max_records)
        self.dropped = 0

    def extend(self, agent: str, records: list[dict[str, Any]]) -> None:
        for record in records:
            if len(self.records) == self.records.maxlen:
                self.dropped += 1
            self.records.append({"agent": agent, **record})

    def drain(self) -> tuple[list[dict[str, Any]], int]:
        """Every record so far (oldest first) and how many were dropped; the buffer starts empty."""
        out, dropped = list(self.records), self.dropped
        self.records.clear()
        self.dropped = 0
        return out, dropped


StepLog = ray.remote(num_cpus=0, max_restarts=0)(_StepLog)
