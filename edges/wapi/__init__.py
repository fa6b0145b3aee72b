"""The WAPI edge: JSON-RPC 2.0 over WebSocket (and an HTTP fallback),
translated into gRPC calls on the core. See edges/README.md."""
