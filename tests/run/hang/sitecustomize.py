"""A run that hangs in C: on PYTHONPATH (tests/run/test_signals.py), the runner blocks in libc's sleep
right after writing its first evaluation batch, where no Python signal handler can run."""

import builtins
import ctypes
import sys

_import = builtins.__import__


def block_in_c() -> None:
    libc = ctypes.CDLL(None)
    while True:
        libc.sleep(3600)  # returns early on each signal a C-level handler takes (faulthandler's); sleep again


def _write_part_then_hang(real):
    def write_part(run_dir, index, **arrays):
        real(run_dir, index, **arrays)
        block_in_c()
    return write_part


def _import_and_patch(name, *args, **kwargs):
    module = _import(name, *args, **kwargs)
    evaluate = sys.modules.get("lvjob.run.evaluate")
    if evaluate is not None and hasattr(evaluate, "write_part") and not hasattr(evaluate, "_hung"):
        evaluate._hung = True
        evaluate.write_part = _write_part_then_hang(evaluate.write_part)
    return module


builtins.__import__ = _import_and_patch
