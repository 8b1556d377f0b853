"""The program, `lvjob` or `python -m lvjob`: a job's stop signals are caught from its first instant
(lvjob.core.stops, installed before the command line and everything heavy is imported)."""

from lvjob.core import stops

JOB_COMMANDS = ("run",)  # honour a stop request at their safe points; every other command keeps the default actions


def entry() -> int:
    stops.install()
    import sys

    from lvjob.cli import main

    if sys.argv[1:2] and sys.argv[1] in JOB_COMMANDS:
        import faulthandler
        import signal

        faulthandler.register(signal.SIGUSR1, all_threads=True)  # the watchdog's stack dump (lvjob.cluster.supervise)
        try:
            return main()
        finally:
            stops.ignore()  # the outcome is written: a late signal must not kill the shut-down
    stops.release()
    return main()


if __name__ == "__main__":
    raise SystemExit(entry())
