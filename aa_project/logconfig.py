"""The host project's ``LOGGING_CONFIG``: ``dictConfig``, less the record extras no format here shows.

Python's logging HOWTO ("Optimization") names the knobs: each record
otherwise looks up its caller's file and line (a walk up the stack), the
multiprocessing process name and (Python 3.12+) the asyncio task. No
formatter of this project prints them, and every request writes at least
one record (uvicorn's access line; a write also the API's write log), so
they are off: a fifth of a record's cost. A format that shows them prints
``(unknown file)``, line 0 or ``None``; none fails. The thread and process
ids stay (gunicorn's own format prints ``%(process)d``, which ``None``
would break). A project whose formats show the caller sets
``LOGGING_CONFIG = "logging.config.dictConfig"`` instead.
"""

from __future__ import annotations

import logging
import logging.config
from typing import Any


def configure(config: dict[str, Any]) -> None:
    logging._srcfile = None  # type: ignore[attr-defined]  # the HOWTO's knob: no findCaller()
    logging.logMultiprocessing = False
    logging.logAsyncioTasks = False  # type: ignore[attr-defined]  # read on Python 3.12+
    logging.config.dictConfig(config)
