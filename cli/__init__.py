"""The command line (`wac`): the top floor. It renders and runs the core,
the edge, Envoy and the gateway, and nothing imports it but the tests."""
