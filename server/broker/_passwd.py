"""Mosquitto 2 password hashes (`$7$`: PBKDF2-HMAC-SHA512), written and checked without the binary.

Measured against `mosquitto_passwd` 2.0.11: `user:$7$101$<b64 12-byte salt>$<b64 64-byte key>`,
where the PBKDF2 salt is the raw 12 bytes (not the base64 text). Producing the format here means
fleet-init needs no Mosquitto install and one subprocess per device is avoided; the embedded amqtt
broker verifies the same file (amqtt itself only reads argon2/bcrypt hashes).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from pathlib import Path

# Mosquitto 2.0's own default; raising it slows every CONNECT on the broker.
ITERATIONS = 101
_SALT_LEN = 12


class PasswordFileError(ValueError):
    """A password file line that is not a Mosquitto 2 `$7$` hash."""


def hash_password(password: str, *, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    """Return `$7$<iterations>$<salt>$<key>` exactly as `mosquitto_passwd` writes it."""
    salt = os.urandom(_SALT_LEN) if salt is None else salt
    key = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    b64 = base64.b64encode
    return f"$7${iterations}${b64(salt).decode()}${b64(key).decode()}"


def verify_password(password: str, hashed: str) -> bool:
    """Check `password` against a `$7$` hash; any malformed hash is simply a mismatch."""
    parts = hashed.split("$")
    if len(parts) != 5 or parts[0] != "" or parts[1] != "7":
        return False
    try:
        iterations = int(parts[2])
        salt = base64.b64decode(parts[3], validate=True)
        key = base64.b64decode(parts[4], validate=True)
    except ValueError:
        return False
    got = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    return hmac.compare_digest(got, key)


def render_password_file(users: dict[str, str]) -> str:
    """`{username: plaintext}` -> password file text (one hashed line per user)."""
    return "".join(f"{user}:{hash_password(pw)}\n" for user, pw in users.items())


def read_password_file(path: str | Path) -> dict[str, str]:
    """Password file -> `{username: hash}`; raises naming the line and the fix."""
    users: dict[str, str] = {}
    text = Path(path).read_text(encoding="utf-8")
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        if not sep or not hashed.startswith("$7$"):
            raise PasswordFileError(
                f"{path}:{lineno}: expected 'user:$7$...' (Mosquitto 2 PBKDF2-SHA512); "
                "regenerate the fleet with server.broker.fleet_init or use mosquitto_passwd"
            )
        users[user] = hashed
    return users
