"""Identities, certificates and TLS material.

Pure logic shared by server, device and provisioning.
"""
