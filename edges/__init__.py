"""Edges: translators between client protocols and the core's gRPC API."""
