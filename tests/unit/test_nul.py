"""The NUL rule's field paths (core/nul.py): pure, no server."""

from __future__ import annotations

from google.protobuf import field_mask_pb2

from core.nul import nul_field
from wac.v1 import calls_pb2, contacts_pb2


def test_paths_name_the_field_with_the_nul() -> None:
    request = contacts_pb2.UpdateContactRequest(
        contact=contacts_pb2.Contact(display_name="Bob", emails=["bob@example.org", "b\x00b@example.org"]),
        update_mask=field_mask_pb2.FieldMask(paths=["emails"]),
    )
    assert nul_field(request) == "contact.emails[1]"
    request.contact.emails[1] = "bob@example.com"
    assert nul_field(request) is None
    request.update_mask.paths.append("no\x00tes")
    assert nul_field(request) == "update_mask.paths[1]"


def test_nested_and_top_level_strings() -> None:
    offer = calls_pb2.SessionDescription(type=calls_pb2.SessionDescription.OFFER, sdp="v=0\r\n\x00")
    assert nul_field(calls_pb2.CreateCallRequest(callee="bob", offer=offer)) == "offer.sdp"
    assert nul_field(calls_pb2.GetCallRequest(call_id="\x00")) == "call_id"
    assert nul_field(calls_pb2.GetCallRequest()) is None
