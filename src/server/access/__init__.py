"""Who is calling: the one interceptor, certificate and token checks, trust material, server TLS."""
