"""The gRPC surface of the BatchService: servicer, converters and the error table."""
