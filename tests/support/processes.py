"""What tests that run the CLI in a child process share: stopping it as a user would, and never
leaving it behind when an assertion fails first."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def killed_on_exit(proc: subprocess.Popen[str]) -> Iterator[subprocess.Popen[str]]:
    """``proc`` for the block; killed at its end if still running (a failed assertion, a timeout)."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()


def sigterm(proc: subprocess.Popen[str], timeout: float = 30) -> tuple[str, str]:
    """Send SIGTERM (a service manager's stop) and wait for the process: its stdout and stderr."""
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=timeout)
    return out, err
