"""One-off work run in a forked child, so that what it imports does not stay
in the long-lived process that asked for it.

Preparing the database (Alembic's migrations, the demo subscribers) loads
SQLAlchemy, Alembic and much of the core: tens of MiB that CPython keeps
once loaded. Done by the supervisor of ``wac run`` or by a core before it
serves, they would stay resident for the process's whole life; done in a
child, they go when it exits.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable


def in_child(work: Callable[[], int]) -> int:
    """``work()``'s exit code, run in a forked child; the caller waits for it.

    Call it before any thread exists (a forked child holds only the thread
    that forked). In the child, an exception is printed as Python would
    print it and is exit code 1; Ctrl-C is 130, as for ``wac`` itself.
    """
    # Buffered output would otherwise be written twice, by both processes.
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = work()
        except KeyboardInterrupt:
            code = 130
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            # Not sys.exit: the parent's atexit handlers and buffers are not the child's to run.
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    # Killed by a signal: the shell's convention, 128 + its number.
    return 128 + -code if code < 0 else code
