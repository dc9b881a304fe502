"""The support matrix: each Django line on its Python versions, on SQLite and PostgreSQL.

    .venv/bin/nox -l                                   # list the cells
    .venv/bin/nox -s "tests(py3.12-django6.1)"          # run one cell
    .venv/bin/nox                                      # run them all

A cell installs requirements.txt with its own Django into a fresh
virtualenv and runs the suite on SQLite, then on PostgreSQL at
127.0.0.1:5432 when it answers (with CI set, an unreachable server or a
missing interpreter is an error). Python versions come from pyenv when it has
them. `scripts/test.sh` runs the Django 6.1 cells; the Django 5.2 on
Python 3.11 cell is the test command's own run.

Environment:

- ``CELL_DATABASES``: ``sqlite``, ``postgresql`` or both (the default,
  ``sqlite,postgresql``): the databases this invocation runs the suite on.
  ``scripts/test.sh`` installs the cells first (``--install-only``), then
  runs each database of each cell as a job of its own, side by side.
- ``CELL_TAG``: a name the cell's test databases carry, so that runs side by
  side never share one (default: the cell's, ``py312_django61``). The
  PostgreSQL test databases are ``test_<name>_<tag>_gw<n>`` (``<name>`` from
  ``POSTGRES_URL``); SQLite's are files in a temporary directory.

A virtualenv whose requirements, Django and checkout are the ones it was
installed for is not installed into again (a stamp file in it), so the runs
after ``--install-only`` go straight to the tests.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import socket
import tempfile
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
# Outside the checkout, so that a fresh clone on the same machine (CI) finds
# the cells' virtualenvs made and only checks the pins; a new machine makes them.
nox.options.envdir = os.environ.get(
    "NOX_ENVDIR", os.path.join(os.path.expanduser("~"), ".cache", "django-agent-sessions", "nox")
)

DJANGO = {"5.2": "Django==5.2.19", "6.1": "Django==6.1.3"}
CELLS = [("3.11", "5.2"), ("3.12", "6.1"), ("3.13", "6.1")]
POSTGRES_URL = os.environ.get("POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")
DATABASES = ("sqlite", "postgresql")


def interpreter(version: str) -> str:
    """pyenv's interpreter for ``version`` when there is one (its shims hide the others), else the name."""
    found = sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}.*/bin/python{version}")))
    return found[-1] if found else version


def postgres_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=2):
            return True
    except OSError:
        return False


def cell_databases() -> list[str]:
    wanted = [name.strip() for name in os.environ.get("CELL_DATABASES", ",".join(DATABASES)).split(",")]
    unknown = set(wanted) - set(DATABASES)
    if unknown:
        known = ", ".join(DATABASES)
        raise SystemExit(f"CELL_DATABASES: unknown {', '.join(sorted(unknown))}; known: {known}")
    return wanted


def with_database_name(url: str, suffix: str) -> str:
    """``url`` with ``_<suffix>`` after its database name (query kept)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"{parts.path.rstrip('/')}_{suffix}"))


def install(session: nox.Session, django: str) -> None:
    """requirements.txt with the cell's Django, and the checkout (editable); skipped if the stamp matches."""
    pinned = [
        line
        for line in Path("requirements.txt").read_text().splitlines()
        if not line.lower().startswith(("django==", "django-stubs=="))
    ]
    wanted = hashlib.sha256(
        "\n".join([*pinned, DJANGO[django], Path("pyproject.toml").read_text(), os.getcwd()]).encode()
    ).hexdigest()
    location = getattr(session.virtualenv, "location", None)
    stamp = Path(location) / ".cell-stamp" if location else None
    if stamp is not None and stamp.exists() and stamp.read_text() == wanted:
        session.log("requirements, Django and checkout as installed: nothing to install")
        return
    requirements = Path(session.create_tmp()) / "requirements.txt"
    requirements.write_text("\n".join(pinned) + "\n")
    session.install("-r", str(requirements), DJANGO[django])
    session.install("--no-deps", "-e", ".")
    if stamp is not None:
        stamp.write_text(wanted)


@nox.session(name="tests")
@nox.parametrize(
    ("python", "django"),
    [(interpreter(python), django) for python, django in CELLS],
    ids=[f"py{python}-django{django}" for python, django in CELLS],
)
def tests(session: nox.Session, django: str) -> None:
    install(session, django)
    session.run(
        "python", "-c", "import django, sys; print('Django', django.get_version(), 'on', sys.version)"
    )
    # tests(py3.12-django6.1) -> py312_django61
    tag = os.environ.get("CELL_TAG") or "".join(
        c for c in session.name.partition("(")[2].rstrip(")").replace("-", "_") if c.isalnum() or c == "_"
    )
    pytest = ("pytest", "-q", "-p", "no:cacheprovider", *session.posargs)
    for database in cell_databases():
        if database == "sqlite":
            scratch = tempfile.mkdtemp(prefix=f"cell-{tag}-")
            try:
                env = {"DATABASE_URL": "", "SQLITE_TEST_DATABASE": os.path.join(scratch, "test.sqlite3")}
                session.run(*pytest, env=env)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        elif postgres_reachable():
            session.run(*pytest, env={"DATABASE_URL": with_database_name(POSTGRES_URL, tag)})
        elif os.environ.get("CI"):
            session.error("PostgreSQL at 127.0.0.1:5432 is not reachable, and CI is set: start it")
        else:
            session.log("PostgreSQL at 127.0.0.1:5432 is not reachable: skipped")
