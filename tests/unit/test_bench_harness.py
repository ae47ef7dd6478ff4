"""The bench's watch over a script's output, on small scripts of its own: no service, no bench run."""

from __future__ import annotations

import os
import sys

import pytest

from bench.harness import Stalled, Watched

# Prints a line, then nothing for a minute: a producer blocked in publish, as the emulator stops confirming.
SILENT = "print('published=10 rate=10 msg/s', flush=True); import time; time.sleep(60)"
# A line every 0.1 s for 3 s, then its final line: slow, but never quiet for long.
TALKING = (
    "import time\n"
    "for k in range(30):\n"
    "    print(f'published={k}', flush=True); time.sleep(0.1)\n"
    "print('final: published=30', flush=True)"
)


def watched(code: str) -> Watched:
    return Watched([sys.executable, "-c", code], dict(os.environ))


def test_a_script_silent_for_longer_than_it_may_be_is_stalled_before_the_timeout():
    script = watched(SILENT)
    try:
        with pytest.raises(Stalled, match="no output for 1 s"):
            script.wait_for_line("final: ", timeout=50, quiet=1)
    finally:
        script.process.kill()
        script.process.wait()


def test_a_script_that_keeps_talking_is_waited_for_past_its_quiet_limit():
    script = watched(TALKING)
    _, line = script.wait_for_line("final: ", timeout=50, quiet=1)
    assert line == "final: published=30"
    assert [text for _, text in script.lines][:2] == ["published=0", "published=1"]
    script.wait(timeout=10)


def test_without_a_quiet_limit_a_silent_script_is_only_a_timeout():
    script = watched(SILENT)
    try:
        with pytest.raises(RuntimeError) as raised:
            script.wait_for_line("final: ", timeout=1)
        assert type(raised.value) is RuntimeError  # not Stalled
    finally:
        script.process.kill()
        script.process.wait()
