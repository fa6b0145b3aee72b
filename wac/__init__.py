"""The generated API stubs (``wac.v1``, from proto/wac/v1), named after the
contract's package; tools/gen_proto.py writes them, nothing else lives here."""
