"""The generated stubs, named after their packages: the contract (``wac.v1``,
from proto/wac/v1) and wac's internal hops (``wac.internal.v1``, from
proto/wac/internal/v1); tools/gen_proto.py writes them, nothing else lives here."""
