"""Launcher that makes a service die with the thread that started it, then becomes the service.

Run as ``python -I -S _spawn.py PARENT_PID -- ARGV...`` (by path, so no package import happens before
exec). It sets ``PR_SET_PDEATHSIG`` to SIGKILL, checks that its parent is still *PARENT_PID* (had the
parent died between fork and prctl, the signal would never come) and ``execvp``s *ARGV*; the pid, and
the death signal, carry over to the service. No ``preexec_fn`` is needed in the (possibly grpc-using)
parent.
"""

import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def main(args: list[str]) -> None:
    """Arm the death signal, verify the parent, exec the service."""
    if len(args) < 3 or args[1] != "--":
        sys.stderr.write("usage: _spawn.py PARENT_PID -- PROGRAM [ARG...]\n")
        os._exit(2)
    expected_parent, argv = int(args[0]), args[2:]
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            sys.stderr.write(f"_spawn: prctl failed: {os.strerror(ctypes.get_errno())}\n")
            os._exit(1)
    if os.getppid() != expected_parent:
        os._exit(1)  # the parent is already gone: nobody would ever stop us
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        sys.stderr.write(f"_spawn: cannot execute {argv[0]!r}: {exc}\n")
        os._exit(127)


if __name__ == "__main__":
    main(sys.argv[1:])
