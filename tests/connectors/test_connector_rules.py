"""Pure connector rules: configuration, LDAP mapping and cursor,
People API mapping, sealing, the statuses of failures."""

from __future__ import annotations

import base64
import os
import uuid
from pathlib import Path

import pytest

from connectors.errors import GoogleUnreachable, LinkFailed, LinkStateMismatch
from connectors.google_people import map_person
from connectors.ldap_entries import ChangeCursor, change_mark, map_entry
from core import errors, failures
from core.cipher import SealError, TokenCipher
from core.directory.runner import AlreadyRunning, UnknownConnector
from settings.connectors import AttributeMap, GoogleConfig, LdapConfig, parse_connector, parse_connectors
from settings.fields import ConfigError

LDAP = {"type": "ldap", "urls": ["ldap://127.0.0.1:389"], "base_dn": "dc=example,dc=org"}


def test_ldap_defaults() -> None:
    config = parse_connector("corp", LDAP)
    assert isinstance(config, LdapConfig)
    assert config.filter == "(objectClass=inetOrgPerson)"
    assert (config.page_size, config.full_every, config.bind_dn) == (500, 86_400.0, "")
    assert config.attributes.id == "entryUUID"


def test_ldaps_urls_imply_ssl_and_secrets_come_from_files(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    config = parse_connector(
        "corp",
        {**LDAP, "urls": ["ldaps://ldap.example.org"], "bind_dn": "cn=wac", "bind_password_file": str(secret)},
    )
    assert isinstance(config, LdapConfig)
    assert config.use_ssl and config.bind_password == "s3cret"
    assert "s3cret" not in repr(config)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({**LDAP, "page_size": 0}, "[connectors.corp] page_size: must be between 1 and 10000, got 0"),
        ({**LDAP, "pagesize": 5}, "[connectors.corp] unknown key(s): pagesize"),
        ({**LDAP, "urls": ["http://x"]}, "[connectors.corp] urls: must be ldap:// or ldaps:// URLs"),
        ({k: v for k, v in LDAP.items() if k != "base_dn"}, "[connectors.corp] base_dn: is required"),
        ({**LDAP, "bind_dn": "cn=x"}, "[connectors.corp] bind_password: is required"),
        ({**LDAP, "interval": "soon"}, "[connectors.corp] interval: must be a duration"),
        ({**LDAP, "default_region": "XX"}, "[connectors.corp] default_region: must be a two-letter region"),
        ({**LDAP, "change_attribute": "whenChanged"}, "[connectors.corp] change_attribute: must be one of"),
        ({**LDAP, "attributes": {"phone": ["x"]}}, "[connectors.corp.attributes] unknown key(s): phone"),
        ({**LDAP, "type": "exchange"}, '[connectors.corp] type: must be "ldap" or "google"'),
        ({**LDAP, "urls": []}, "[connectors.corp] urls: must be a non-empty list of strings"),
        ({**LDAP, "urls": ["ldaps://x"], "start_tls": True}, "[connectors.corp] start_tls: cannot be used with"),
        ({**LDAP, "page_size": True}, "[connectors.corp] page_size: expected a number"),
        ({**LDAP, "timeout": 0}, "[connectors.corp] timeout: must be more than zero"),
    ],
)
def test_ldap_errors_name_the_key(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_connector("corp", table)
    assert str(caught.value).startswith(message)


def test_google_config() -> None:
    key = base64.b64encode(os.urandom(32)).decode()
    base = {
        "type": "google",
        "client_id": "id",
        "client_secret": "secret",
        "redirect_uri": "https://wac.example.org/oauth2/google/callback",
        "token_key": key,
    }
    config = parse_connectors({"google": base})["google"]
    assert isinstance(config, GoogleConfig)
    assert config.token_endpoint == "https://oauth2.googleapis.com/token"
    assert config.full_every is None and "secret" not in repr(config)
    with pytest.raises(ConfigError, match=r"\[connectors\.google\] token_key: must be 32 random bytes"):
        parse_connector("google", {**base, "token_key": "c2hvcnQ="})
    with pytest.raises(ConfigError, match=r"\[connectors\.google\] token_endpoint: must be an https URL"):
        parse_connector("google", {**base, "token_endpoint": "http://tokens.example.org/"})
    local = parse_connector("google", {**base, "token_endpoint": "http://127.0.0.1:8080/token"})
    assert isinstance(local, GoogleConfig)
    with pytest.raises(ConfigError, match=r"\[connectors\.gmail\] type: only one google connector"):
        parse_connectors({"google": base, "gmail": base})


def raw(**attrs: list[str] | list[bytes]) -> dict[str, list[bytes]]:
    return {k: [v if isinstance(v, bytes) else v.encode() for v in vs] for k, vs in attrs.items()}


def test_map_entry() -> None:
    mapped = map_entry(
        raw(
            entryUUID=["u-1"],
            cn=["Ana García"],
            telephoneNumber=["612 34 56 78", "n/a"],
            MOBILE=["+34 612 34 56 78", "699 11 22 33"],
            mail=["Ana@Example.org", "ana@example.org"],
            departmentNumber=["42"],
        ),
        AttributeMap(),
        region="ES",
        require_phone=True,
    )
    assert mapped.record is not None
    assert mapped.record.display_name == "Ana García"
    assert mapped.record.phone_numbers == ("+34612345678", "+34699112233")
    assert mapped.record.emails == ("Ana@Example.org",)
    assert mapped.record.department == "42"


def test_map_entry_skips() -> None:
    m = AttributeMap()
    no_name = map_entry(raw(entryUUID=["u"], telephoneNumber=["612345678"]), m, region="ES", require_phone=True)
    assert no_name.record is None and no_name.reason == "no usable name"
    given_family = map_entry(
        raw(entryUUID=["u"], givenName=["Ana"], sn=["Gil"], mobile=["612345678"]), m, region="ES", require_phone=True
    )
    assert given_family.record is not None and given_family.record.display_name == "Ana Gil"
    no_phone = map_entry(raw(entryUUID=["u"], cn=["Ana"]), m, region="ES", require_phone=True)
    assert no_phone.reason == "no usable phone number"
    assert map_entry(raw(entryUUID=["u"], cn=["Ana"]), m, region="ES", require_phone=False).record is not None
    assert map_entry(raw(cn=["Ana"]), m, region="ES", require_phone=False).reason == "no entryUUID"


def test_active_directory_guid() -> None:
    guid = uuid.uuid4()
    mapped = map_entry(
        {"objectGUID": [guid.bytes_le], "displayName": [b"Ana"], "telephoneNumber": [b"+34612345678"]},
        AttributeMap(id="objectGUID"),
        region="ES",
        require_phone=True,
    )
    assert mapped.entry_id == str(guid)


def test_change_cursor() -> None:
    assert change_mark(b"20240101120000Z", "modifyTimestamp") == "20240101120000Z"
    assert change_mark(b"20240101120000.0Z", "modifyTimestamp") == "20240101120000Z"
    assert change_mark(b"12345", "uSNChanged") == 12345
    cursor = ChangeCursor("modifyTimestamp")
    cursor.observe("a", "20240101120000Z", "d1")
    cursor.observe("b", "20240101120005Z", "d2")
    cursor.observe("c", "20240101120005Z", "d3")
    cursor.observe("d", "20240101120001Z", "d4")
    assert cursor.mark == "20240101120005Z" and cursor.seen == {"b": "d2", "c": "d3"}
    loaded = ChangeCursor.load(cursor.dump(), "modifyTimestamp")
    assert loaded is not None
    assert loaded.search_filter("(objectClass=person)") == ("(&(objectClass=person)(modifyTimestamp>=20240101120005Z))")
    assert loaded.is_repeat("b", "20240101120005Z", "d2")
    assert not loaded.is_repeat("b", "20240101120005Z", "changed again that second")
    assert not loaded.is_repeat("e", "20240101120005Z", "d5")
    assert ChangeCursor.load(cursor.dump(), "entryUSN") is None  # another attribute: full run


def test_map_person() -> None:
    person = {
        "resourceName": "people/c1",
        "names": [{"displayName": "Other"}, {"metadata": {"primary": True}, "displayName": "Ana Gil"}],
        "phoneNumbers": [{"value": "612 34 56 78"}, {"value": "+44 20 7946 0011", "canonicalForm": "+442079460011"}],
        "emailAddresses": [{"value": "ana@example.org"}],
    }
    mapped = map_person(person, region="ES", require_phone=True)
    assert mapped.record is not None
    assert mapped.record.display_name == "Ana Gil"
    assert mapped.record.phone_numbers == ("+34612345678", "+442079460011")
    deleted = map_person({"resourceName": "people/c2", "metadata": {"deleted": True}}, region="ES", require_phone=True)
    assert deleted.deleted and deleted.entry_id == "people/c2"
    assert map_person({"resourceName": "people/c3"}, region="ES", require_phone=True).reason == "no usable name"


def test_sealing() -> None:
    cipher = TokenCipher(os.urandom(32))
    sealed = cipher.seal_json({"refresh_token": "1//abc"}, context="google_links:alice")
    assert "abc" not in sealed and repr(cipher) == "TokenCipher(<key>)"
    assert cipher.open_json(sealed, context="google_links:alice") == {"refresh_token": "1//abc"}
    with pytest.raises(SealError):
        cipher.open_json(sealed, context="google_links:mallory")  # moved to another row
    with pytest.raises(SealError):
        TokenCipher(os.urandom(32)).open_json(sealed, context="google_links:alice")
    with pytest.raises(SealError):
        cipher.open(sealed[:-4] + "AAAA", context="google_links:alice")


@pytest.mark.parametrize(
    ("failure", "code", "message", "field"),
    [
        (AlreadyRunning("corp"), "ABORTED", "connector corp is already running", None),
        (UnknownConnector("corp"), "NOT_FOUND", "no connector named corp", None),
        (
            LinkStateMismatch(),
            "INVALID_ARGUMENT",
            "state: does not match a Google link this subscriber started, or it expired",
            "state",
        ),
        (LinkFailed("refused"), "FAILED_PRECONDITION", "refused", None),
        (GoogleUnreachable("unreachable"), "UNAVAILABLE", "unreachable", None),
    ],
)
def test_connector_failures_reach_clients_as_their_status(
    failure: failures.Failure, code: str, message: str, field: str | None
) -> None:
    error = errors.from_failure(failure)
    assert (error.code.name, error.message, error.field) == (code, message, field)
