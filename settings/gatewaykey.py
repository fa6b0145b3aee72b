"""The gateway's API key: the credential the SIP gateway (Kamailio) shows
the SAPI when it verifies a caller's token or looks up a number's owner.

While ``[gateway] enabled`` and ``[gateway] api_key`` is empty, the core
creates it on start in ``$data_dir/gateway.key`` (mode 0600) with the
smallest scopes the gateway needs; ``wac gateway`` on the same machine reads
it from there. With several cores on one database the operator creates one
key and sets ``[gateway] api_key`` everywhere, as for the hop key. It is never
printed or logged, and never in a committed file.
"""

from __future__ import annotations

from pathlib import Path

from settings import checks
from settings.config import Config, ConfigError
from settings.fields import Invalid
from settings.servicekey import wait_for_key_file

FILE_NAME = "gateway.key"
# The API key's name and its scopes: verify a token (identity:verify,
# identity:authorize), find who owns a number (phoneNumbers/{number}) and
# hand in a message from the trunk (phoneNumbers/{number}:receiveMessage).
# Not "gateway": the README's quick start has operators create a key of
# that name for their own gateway, and provisioning ends every earlier key
# of its name.
NAME = "sip-gateway"
SCOPES = ("identity.verify", "numbers.lookup", "messages.deliver")


def gateway_key_path(config: Config) -> Path:
    return config.data_dir / FILE_NAME


def read_gateway_key(config: Config, wait: float) -> str:
    """The configured gateway key, else the one the core wrote in the data dir.

    The file may appear a moment after the core starts: wait up to ``wait``
    seconds for it, then raise ConfigError saying what to do. Blocking:
    call it from a thread in async code.
    """
    if not config.gateway.enabled:
        raise ConfigError("the gateway is disabled ([gateway] enabled = false): the core keeps no key for it")
    if config.gateway.api_key:
        return config.gateway.api_key
    path = gateway_key_path(config)
    key = wait_for_key_file(
        path,
        wait,
        what="gateway key",
        remedy="Start the core first with [gateway] enabled (it creates the file), or set [gateway] api_key "
        "(WAC_GATEWAY_API_KEY) to a key made with `wac admin apikey create sip-gateway --scope identity.verify "
        "--scope numbers.lookup --scope messages.deliver`",
    )
    try:
        # It lands in Kamailio's script: the rule [gateway] api_key follows.
        return checks.api_key(key)
    except Invalid as exc:
        raise ConfigError(f"{path}: {exc.reason}") from None
