"""The Janus secret: what Janus's tokens are signed with and its rooms
administered by, known to the core (which issues the tokens and creates the
rooms) and to ``wac janus`` (which configures Janus with it).

``[conferences] janus_secret`` when set (the same on every node of a
cluster); else ``$data_dir/janus.key`` (mode 0600), made by whichever of
the two needs it first: unlike the hop key it is no API key of the
database, so neither has to wait for the other. Janus gets two secrets
derived from it, one per use, so that a leaked room key signs no token.
Never printed or logged.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from settings.config import Config, ConfigError

FILE_NAME = "janus.key"


@dataclass(frozen=True)
class JanusSecrets:
    # Janus's token_auth_secret: HMAC-SHA1 over "expiry,janus,plugin" (signed-token mode).
    token: str
    # The VideoRoom plugin's admin_key: rooms are created only by who knows it.
    room_admin: str

    def __repr__(self) -> str:
        return "JanusSecrets(<hidden>)"


def janus_key_path(config: Config) -> Path:
    return config.data_dir / FILE_NAME


def janus_secrets(config: Config) -> JanusSecrets:
    """The configured secret's derived secrets, or the data dir's (made now if missing)."""
    key = config.conferences.janus_secret or _data_dir_key(janus_key_path(config))
    return JanusSecrets(token=_derive(key, "janus token"), room_admin=_derive(key, "videoroom admin"))


def _derive(key: str, use: str) -> str:
    return hmac.new(key.encode(), use.encode(), hashlib.sha256).hexdigest()


def _data_dir_key(path: Path) -> str:
    if not path.exists():
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # Written whole under another name, then linked into place: a
            # core and `wac janus` starting at once make one key, and
            # neither ever reads a half-written file.
            draft = path.with_name(f".{path.name}.{os.getpid()}")
            fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                file.write(secrets.token_urlsafe(32) + "\n")
            try:
                os.link(draft, path)
            except FileExistsError:
                pass
            finally:
                draft.unlink()
        except OSError as exc:
            raise ConfigError(f"cannot make the Janus secret {path}: {exc.strerror or exc}") from None
    try:
        key = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the Janus secret from {path}: {exc}") from None
    if not key:
        raise ConfigError(f"{path} is empty: delete it to have a new one made, or set [conferences] janus_secret")
    return key
