"""Contact validation as pure functions: no server, microseconds each."""

from __future__ import annotations

import pytest

from core import failures
from core.contacts import rules


def field_of(call: object) -> str:
    with pytest.raises(failures.Invalid) as err:
        call()  # type: ignore[operator]
    return str(err.value.field)


def test_display_name_is_trimmed_and_bounded() -> None:
    assert rules.display_name("f", "  Ada  ") == "Ada"
    assert rules.display_name("f", "x" * 128) == "x" * 128
    for bad in ("", "  ", "x" * 129, "a\nb", "nul\x00"):
        assert field_of(lambda bad=bad: rules.display_name("contact.display_name", bad)) == "contact.display_name"


def test_phone_numbers_are_e164_deduplicated_in_order() -> None:
    assert rules.phone_numbers("f", ["600 111 222", "+44 20 7946 0958", "0034600111222"], "ES") == (
        "+34600111222",
        "+442079460958",
    )
    assert rules.phone_numbers("f", ["(212) 555-0100"], "US") == ("+12125550100",)
    assert field_of(lambda: rules.phone_numbers("c.p", ["600111222", "6001"], "ES")) == "c.p[1]"
    assert field_of(lambda: rules.phone_numbers("c.p", ["600111222"] * 21, "ES")) == "c.p"


def test_emails_are_checked_and_deduplicated_ignoring_case() -> None:
    assert rules.emails("f", [" Ann@Example.org", "ann@example.org", "b@example.org"]) == (
        "Ann@Example.org",
        "b@example.org",
    )
    assert field_of(lambda: rules.emails("c.e", ["a@example.org", "a@b"])) == "c.e[1]"
    assert field_of(lambda: rules.emails("c.e", [" "])) == "c.e[0]"
    assert field_of(lambda: rules.emails("c.e", ["a@example.org"] * 21)) == "c.e"


def test_update_paths_from_the_mask_or_the_fields_set() -> None:
    assert rules.update_paths(["notes", "notes", "favorite"], []) == ["notes", "favorite"]
    assert rules.update_paths([], ["notes", "display_name", "create_time"]) == ["display_name", "notes"]
    assert rules.update_paths([], []) == []
    for bad in ("contact_id", "create_time", "update_time", "display_name.first"):
        assert field_of(lambda bad=bad: rules.update_paths([bad], [])) == "update_mask"


def test_validate_normalises_each_named_field() -> None:
    given = {
        "display_name": " Eve ",
        "phone_numbers": ["600111222"],
        "emails": ["eve@example.org"],
        "subscriber": " eve ",
        "favorite": 1,
        "notes": "n",
    }
    assert rules.validate("contact", given, rules.EDITABLE, "ES") == {
        "display_name": "Eve",
        "phone_numbers": ("+34600111222",),
        "emails": ("eve@example.org",),
        "subscriber": "eve",
        "favorite": True,
        "notes": "n",
    }
    assert rules.validate("contact", given, ["notes"], "ES") == {"notes": "n"}
    assert (
        field_of(lambda: rules.validate("contact", {**given, "notes": "n" * 1025}, ["notes"], "ES")) == "contact.notes"
    )
