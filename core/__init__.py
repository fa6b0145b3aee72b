"""The wac gRPC core: services, their rules and their stores."""
