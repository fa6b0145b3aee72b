"""The hop key: the credential wac's own hops (the WAPI edge, Envoy) show.

It is an API key with the scope "hop". With ``[core] hop_key`` empty, the
core creates it on start in ``$data_dir/hop.key`` (mode 0600) and the edge
and ``wac envoy`` on the same machine read it from there; on several
machines the operator creates one and sets ``[core] hop_key`` everywhere.
"""

from __future__ import annotations

from pathlib import Path

from settings.config import Config
from settings.servicekey import wait_for_key_file

FILE_NAME = "hop.key"
# The API key's name and its one scope.
NAME = "hop"
SCOPE = "hop"
# Metadata key (and HTTP header) in which a hop proves itself on calls it
# forwards for a client, beside that client's own credential.
HEADER = "x-wac-hop"


def hop_key_path(config: Config) -> Path:
    return config.data_dir / FILE_NAME


def read_hop_key(config: Config, wait: float) -> str:
    """The configured hop key, else the one the core wrote in the data dir.

    The file may appear a moment after the core starts: wait up to ``wait``
    seconds for it, then raise ConfigError saying what to do. Blocking:
    call it from a thread in async code.
    """
    if config.core.hop_key:
        return config.core.hop_key
    return wait_for_key_file(
        hop_key_path(config),
        wait,
        what="hop key",
        remedy="Start the core first (it creates the file), or set [core] hop_key (WAC_CORE_HOP_KEY) to a key made "
        "with `wac admin apikey create hop --scope hop`",
    )
