"""Phone numbers: E.164 normalisation and prefix-search keys.

wac stores every phone number in E.164 form ("+34600111222"); input in any
common national or international form is normalised with a default region,
by Google's libphonenumber rules (the ``phonenumbers`` package).

Directory search matches digit prefixes. Each stored number is indexed under
:func:`search_keys`: its E.164 form, the same digits without the "+", and
its national significant number. :func:`query_digits` turns a search query
into the prefixes to look up, so that "600 11", "+34600 11" and "0034 600"
all find +34600111222:

- a query starting with "+" is international: its digits are a prefix of
  the E.164 digits;
- a query starting with the default region's international call prefix
  ("00" in Spain, "011" in the US) is international too, without that prefix;
- any other query is taken as typed (a prefix of a national significant
  number, or of E.164 digits typed without the "+") and, when it starts with
  the region's trunk prefix ("0" in the UK, "1" in the US), also without it,
  since national significant numbers omit it.
"""

from __future__ import annotations

import functools
import re
from typing import Final

__all__ = ["InvalidPhoneNumber", "normalize_e164", "query_digits", "search_keys"]

# Characters people put between digits: spaces, dashes, dots, slashes, brackets.
_SEPARATORS: Final = re.compile(r"[\s\-./()\[\]]")
_PHONE_QUERY: Final = re.compile(r"\+?\d+")

# libphonenumber's parse errors and length verdicts (by their names), in words.
_PARSE_ERRORS: Final = {
    "INVALID_COUNTRY_CODE": "has an unknown or missing country code",
    "NOT_A_NUMBER": "is not a phone number",
    "TOO_SHORT_AFTER_IDD": "is too short after the international prefix",
    "TOO_SHORT_NSN": "is too short",
    "TOO_LONG": "is too long",
}
_LENGTH_ERRORS: Final = {
    "TOO_SHORT": "is too short",
    "TOO_LONG": "is too long",
    "INVALID_LENGTH": "has the wrong number of digits",
    "INVALID_COUNTRY_CODE": "has an unknown country code",
}


@functools.cache
def _problems() -> tuple[dict[int, str], dict[int, str]]:
    """``_PARSE_ERRORS`` and ``_LENGTH_ERRORS`` by libphonenumber's codes.

    ``phonenumbers`` is imported at the first number, here and in each
    function: a core holds it (1.2 MiB resident) only once a number came."""
    from phonenumbers import NumberParseException, ValidationResult

    return (
        {getattr(NumberParseException, name): text for name, text in _PARSE_ERRORS.items()},
        {getattr(ValidationResult, name): text for name, text in _LENGTH_ERRORS.items()},
    )


class InvalidPhoneNumber(ValueError):
    """A string that is not a valid phone number. ``raw`` is the input."""

    def __init__(self, raw: str, problem: str) -> None:
        super().__init__(f"{_shown(raw)} {problem}")
        self.raw = raw
        self.problem = problem


def _shown(raw: str) -> str:
    return repr(raw if len(raw) <= 40 else raw[:40] + "...")


def _check_region(region: str) -> str:
    import phonenumbers

    region = region.upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"unknown default region {region!r}; use an ISO 3166 code such as 'ES'")
    return region


def normalize_e164(raw: str, default_region: str = "ES") -> str:
    """``raw`` in E.164 form; InvalidPhoneNumber if it is not a valid number.

    Accepts international forms ("+34 600 11 12 22", "0034600111222",
    "tel:+34600111222") and national forms of ``default_region``
    ("600111222", "(600) 111-222"). ValueError if ``default_region`` is not
    a known region code.
    """
    import phonenumbers
    from phonenumbers import NumberParseException, PhoneNumberFormat, ValidationResult

    region = _check_region(default_region)
    parse_errors, length_errors = _problems()
    text = raw.strip()
    if not text:
        raise InvalidPhoneNumber(raw, "is empty")
    try:
        number = phonenumbers.parse(text, region)
    except NumberParseException as exc:
        raise InvalidPhoneNumber(raw, parse_errors.get(exc.error_type, "is not a phone number")) from exc
    if not phonenumbers.is_valid_number(number):
        reason = phonenumbers.is_possible_number_with_reason(number)
        national = number.country_code == phonenumbers.country_code_for_region(region)
        if national and not text.startswith("+"):
            problem = f"{length_errors.get(reason, 'is not a valid number')} for {region}"
            if reason is not ValidationResult.TOO_SHORT:
                problem += "; numbers of other countries need a + and their country code"
        else:
            problem = length_errors.get(reason) or (f"is not a valid number for country code +{number.country_code}")
        raise InvalidPhoneNumber(raw, problem)
    return phonenumbers.format_number(number, PhoneNumberFormat.E164)


def search_keys(e164: str) -> list[str]:
    """The keys to index a stored E.164 number under for prefix search.

    "+34600111222" gives ["+34600111222", "34600111222", "600111222"].
    InvalidPhoneNumber unless ``e164`` is a number in E.164 form.
    """
    import phonenumbers
    from phonenumbers import NumberParseException, PhoneNumberFormat

    try:
        number = phonenumbers.parse(e164, None)
    except NumberParseException as exc:
        raise InvalidPhoneNumber(e164, "is not in E.164 form") from exc
    if phonenumbers.format_number(number, PhoneNumberFormat.E164) != e164:
        raise InvalidPhoneNumber(e164, "is not in E.164 form")
    national = phonenumbers.national_significant_number(number)
    return list(dict.fromkeys([e164, e164[1:], national]))


def query_digits(query: str, default_region: str = "ES") -> list[str]:
    """The digit prefixes to look up for a search query; [] if it is not phone-like.

    Phone-like means digits with optional spaces, dashes, dots, slashes and
    brackets, and an optional leading "+". The prefixes are matched against
    the digit-only keys of :func:`search_keys`.
    """
    import phonenumbers

    region = _check_region(default_region)
    compact = _SEPARATORS.sub("", query)
    if not _PHONE_QUERY.fullmatch(compact):
        return []
    digits = phonenumbers.normalize_digits_only(compact)
    if compact.startswith("+"):
        return [digits]
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    assert metadata is not None, "checked by _check_region"
    if metadata.international_prefix:
        idd = re.match(metadata.international_prefix, digits)
        if idd:
            rest = digits[idd.end() :]
            return [rest] if rest else []
    prefixes = [digits]
    trunk = metadata.national_prefix
    if trunk and digits.startswith(trunk) and len(digits) > len(trunk):
        prefixes.append(digits[len(trunk) :])
    return prefixes
