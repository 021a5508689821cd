"""The demo's ``SECRET_KEY``: given in the configuration, or generated once and kept.

Sessions need no secret (their token is random, not signed), but Flask-WTF's CSRF tokens and
signed cookies do. A key generated per process would break them on every restart, and differ
between the workers of one gunicorn, so the demo writes one to the instance folder the first
time it starts and reads it back afterwards.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

#: The file in the instance folder that holds the generated key.
SECRET_FILE = "secret_key"  # noqa: S105 - a file name, not a secret


def load_or_create_secret(instance_path: str | os.PathLike[str]) -> str:
    """Return the key kept in ``instance_path``, creating it first if there is none.

    Safe when several processes start at once: the key is written to a private temporary file
    and linked into place, which fails if another process got there first, and then everyone
    reads the one file that won. A reader therefore never sees a half-written key.
    """
    path = Path(instance_path) / SECRET_FILE
    with contextlib.suppress(FileNotFoundError):
        key = path.read_text(encoding="ascii").strip()
        if key:
            return key
    tmp = path.with_name(f".{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
    # 0o600: the key signs CSRF tokens and cookies; other local users must not read it.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(secrets.token_urlsafe(48) + "\n")
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    key = path.read_text(encoding="ascii").strip()
    if not key:
        raise RuntimeError(f"{path} is empty: delete it to have a new key generated.")
    return key
