"""Identities, certificates and TLS material: pure logic shared by server, device and provisioning."""
