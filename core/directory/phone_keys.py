"""Phone numbers for the directory: E.164 normalisation and search keys.

A stand-in for ``core.phones`` (being written alongside): the same names and
behaviour for what the directory needs, on Google's libphonenumber rules.
When ``core.phones`` lands, importers switch to it and this module goes.
"""

from __future__ import annotations

import contextlib
import re

import phonenumbers

_DIALABLE = re.compile(r"^\+?[0-9 ().\-/\u00a0]+$")


class InvalidPhoneNumber(ValueError):
    """The text is not a phone number that can be dialled."""


def normalize_e164(raw: str, default_region: str = "ES") -> str:
    """``raw`` in E.164 form; national forms are read in ``default_region``."""
    try:
        number = phonenumbers.parse(raw, default_region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhoneNumber(f"not a phone number: {raw!r}") from exc
    if not phonenumbers.is_possible_number(number):
        raise InvalidPhoneNumber(f"not a possible phone number: {raw!r}")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def search_keys(e164: str) -> tuple[str, ...]:
    """The forms a person may type the number in, all digits but a leading +:
    E.164 with and without +, the national significant number, and the
    national form with its trunk prefix ("020..." in the UK)."""
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhoneNumber(f"not in E.164 form: {e164!r}") from exc
    national = re.sub(
        r"\D", "", phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
    )
    keys = [e164, e164.lstrip("+"), phonenumbers.national_significant_number(number), national]
    return tuple(dict.fromkeys(k for k in keys if k))


def query_digits(query: str, region: str) -> tuple[str, ...]:
    """Keys a phone-looking query may prefix, or () if it is not one.

    "+34 612" and "0034 612" give "+34612"; "612 34" gives "61234"; a whole
    number dialled from ``region`` (say "011 44 20..." in the US) also gives
    its E.164 form.
    """
    text = query.strip()
    if not _DIALABLE.match(text):
        return ()
    digits = re.sub(r"\D", "", text)
    if len(digits) < 2:
        return ()
    keys: list[str] = []
    if text.startswith("+"):
        keys.append("+" + digits)
    else:
        keys.append(digits)
        if digits.startswith("00") and len(digits) > 2:
            keys.append("+" + digits[2:])
        with contextlib.suppress(InvalidPhoneNumber):
            keys.append(normalize_e164(text, region))
    return tuple(dict.fromkeys(keys))
