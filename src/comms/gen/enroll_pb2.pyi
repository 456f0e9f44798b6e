from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EnrollRequest(_message.Message):
    __slots__ = ("code", "csr")
    CODE_FIELD_NUMBER: _ClassVar[int]
    CSR_FIELD_NUMBER: _ClassVar[int]
    code: str
    csr: bytes
    def __init__(self, code: _Optional[str] = ..., csr: _Optional[bytes] = ...) -> None: ...

class EnrollResponse(_message.Message):
    __slots__ = ("certificate_chain", "ca_bundle", "tenant", "device_id")
    CERTIFICATE_CHAIN_FIELD_NUMBER: _ClassVar[int]
    CA_BUNDLE_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    certificate_chain: bytes
    ca_bundle: bytes
    tenant: str
    device_id: str
    def __init__(self, certificate_chain: _Optional[bytes] = ..., ca_bundle: _Optional[bytes] = ..., tenant: _Optional[str] = ..., device_id: _Optional[str] = ...) -> None: ...

class ClaimRequest(_message.Message):
    __slots__ = ("claim_code", "csr", "proposed_device_id")
    CLAIM_CODE_FIELD_NUMBER: _ClassVar[int]
    CSR_FIELD_NUMBER: _ClassVar[int]
    PROPOSED_DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    claim_code: str
    csr: bytes
    proposed_device_id: str
    def __init__(self, claim_code: _Optional[str] = ..., csr: _Optional[bytes] = ..., proposed_device_id: _Optional[str] = ...) -> None: ...

class ClaimResponse(_message.Message):
    __slots__ = ("request_id", "tenant", "key_fingerprint", "expires_unix", "retry_after_s")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    KEY_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_UNIX_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_S_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    tenant: str
    key_fingerprint: str
    expires_unix: float
    retry_after_s: float
    def __init__(self, request_id: _Optional[str] = ..., tenant: _Optional[str] = ..., key_fingerprint: _Optional[str] = ..., expires_unix: _Optional[float] = ..., retry_after_s: _Optional[float] = ...) -> None: ...

class PollRequest(_message.Message):
    __slots__ = ("request_id", "signature")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    signature: bytes
    def __init__(self, request_id: _Optional[str] = ..., signature: _Optional[bytes] = ...) -> None: ...

class PollResponse(_message.Message):
    __slots__ = ("state", "retry_after_s", "issued")
    class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        PENDING: _ClassVar[PollResponse.State]
        ISSUED: _ClassVar[PollResponse.State]
    PENDING: PollResponse.State
    ISSUED: PollResponse.State
    STATE_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_S_FIELD_NUMBER: _ClassVar[int]
    ISSUED_FIELD_NUMBER: _ClassVar[int]
    state: PollResponse.State
    retry_after_s: float
    issued: EnrollResponse
    def __init__(self, state: _Optional[_Union[PollResponse.State, str]] = ..., retry_after_s: _Optional[float] = ..., issued: _Optional[_Union[EnrollResponse, _Mapping]] = ...) -> None: ...
