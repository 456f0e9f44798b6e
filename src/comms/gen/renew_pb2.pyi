from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class RenewRequest(_message.Message):
    __slots__ = ("csr",)
    CSR_FIELD_NUMBER: _ClassVar[int]
    csr: bytes
    def __init__(self, csr: _Optional[bytes] = ...) -> None: ...

class RenewResponse(_message.Message):
    __slots__ = ("certificate_chain", "ca_bundle", "token", "session_id", "expires_at_unix", "refresh_after_unix")
    CERTIFICATE_CHAIN_FIELD_NUMBER: _ClassVar[int]
    CA_BUNDLE_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_UNIX_FIELD_NUMBER: _ClassVar[int]
    REFRESH_AFTER_UNIX_FIELD_NUMBER: _ClassVar[int]
    certificate_chain: bytes
    ca_bundle: bytes
    token: str
    session_id: str
    expires_at_unix: int
    refresh_after_unix: int
    def __init__(self, certificate_chain: _Optional[bytes] = ..., ca_bundle: _Optional[bytes] = ..., token: _Optional[str] = ..., session_id: _Optional[str] = ..., expires_at_unix: _Optional[int] = ..., refresh_after_unix: _Optional[int] = ...) -> None: ...
