"""Scenario: the producers' `--rate 0` publish rate, on the backlogs the drains then consume."""

from __future__ import annotations

from ..harness import Bench, Figures, produce

__all__ = ["publish"]

SCRIPTS = {  # kind: the producer, and its flags beyond the count and the rate
    "orders": ("order_data_producer.py", ()),
    "payments": ("payments_data_producer.py", ("--orphan-every", 0)),  # every payment has its order
}


def publish(bench: Bench, kind: str, topic: str, n: int, suffix: str = "") -> Figures:
    """Publish `n` orders or payments (`kind`) into `topic`: `producer_<kind><suffix>_msgs`."""
    script, extra = SCRIPTS[kind]
    return {f"producer_{kind}{suffix}_msgs": produce(bench, script, topic, n, *extra)}
