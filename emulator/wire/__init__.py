"""The HTTP wire layer: auth, multipart and meta parsing, envelopes, routes."""
