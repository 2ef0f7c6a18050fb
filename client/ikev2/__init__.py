"""Sans-I/O IKEv2 (RFC 7296): no sockets, no clock reads, injectable randomness."""
