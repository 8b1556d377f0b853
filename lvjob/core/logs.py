"""Log lines of the runner and training: the standard `logging` module, one format, set up in one place.

Each line carries its UTC time and the run id, so a job log that spans requeues reads as a timeline:

    2026-11-26T14:03:07.512Z [train-1a2b3c4d] step 40/5000 loss 1.2345 (3.10 steps/s)

The runner and training keep taking a plain `log(message)` callable; `run_log` makes one that goes
through the `lvjob` logger with the run id attached.
"""

from __future__ import annotations

import logging
import sys
import time

FORMAT = "%(asctime)s.%(msecs)03dZ [%(run_id)s] %(message)s"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"


class _RunIdDefault(logging.Filter):
    """Lines logged outside a run (no run id attached) show `-` in its place."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "run_id"):
            record.run_id = "-"
        return True


def configure(stream=None) -> None:
    """Send the `lvjob` logger's lines to `stream` (default stdout, where job logs are read) in FORMAT.

    Called again (a second command in one process), it replaces its handler rather than doubling lines.
    """
    formatter = logging.Formatter(FORMAT, DATE_FORMAT)
    formatter.converter = time.gmtime  # UTC, whatever the node's time zone
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(formatter)
    handler.addFilter(_RunIdDefault())
    logger = logging.getLogger("lvjob")
    logger.handlers = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False


def run_log(run_id: str):
    """A `log(message)` callable for the runner: INFO lines of the `lvjob.run` logger tagged with `run_id`."""
    return logging.LoggerAdapter(logging.getLogger("lvjob.run"), {"run_id": run_id}).info
