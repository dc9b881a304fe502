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
"""

from __future__ import annotations

import glob
import os
import socket
from pathlib import Path

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


@nox.session(name="tests")
@nox.parametrize(
    ("python", "django"),
    [(interpreter(python), django) for python, django in CELLS],
    ids=[f"py{python}-django{django}" for python, django in CELLS],
)
def tests(session: nox.Session, django: str) -> None:
    pinned = [
        line
        for line in Path("requirements.txt").read_text().splitlines()
        if not line.lower().startswith(("django==", "django-stubs=="))
    ]
    requirements = Path(session.create_tmp()) / "requirements.txt"
    requirements.write_text("\n".join(pinned) + "\n")
    session.install("-r", str(requirements), DJANGO[django])
    session.install("--no-deps", "-e", ".")
    session.run(
        "python", "-c", "import django, sys; print('Django', django.get_version(), 'on', sys.version)"
    )
    session.run("pytest", "-q", "-p", "no:cacheprovider", *session.posargs, env={"DATABASE_URL": ""})
    if postgres_reachable():
        session.run(
            "pytest", "-q", "-p", "no:cacheprovider", *session.posargs, env={"DATABASE_URL": POSTGRES_URL}
        )
    elif os.environ.get("CI"):
        session.error("PostgreSQL at 127.0.0.1:5432 is not reachable, and CI is set: start it")
    else:
        session.log("PostgreSQL at 127.0.0.1:5432 is not reachable: skipped")
