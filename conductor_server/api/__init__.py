"""The conductor's gRPC edge: converters, the error table, the servicer."""
