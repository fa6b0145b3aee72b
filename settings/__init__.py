"""What configures a wac process: the configuration's types and their
loading (``config``; the connectors' sections in ``connectors``), the one
way every key is read (``fields``: declared rules and one loader; ``checks``:
the rules a type and bounds do not say), the data dir and the key files kept
in it, and the garbage collector's pacing. Core, edges, connectors and the CLI import it;
it imports none of them."""
