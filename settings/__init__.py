"""What configures a wac process: the configuration's types and their
loading (``config``), the data dir and the key files kept in it, and the
garbage collector's pacing. Core, edges, connectors and the CLI import it;
it imports none of them."""
