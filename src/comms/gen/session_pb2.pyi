from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class CreateSessionRequest(_message.Message):
    __slots__ = ("max_frame_ms",)
    MAX_FRAME_MS_FIELD_NUMBER: _ClassVar[int]
    max_frame_ms: int
    def __init__(self, max_frame_ms: _Optional[int] = ...) -> None: ...

class CreateSessionResponse(_message.Message):
    __slots__ = ("token", "session_id", "expires_at_unix", "refresh_after_unix")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_UNIX_FIELD_NUMBER: _ClassVar[int]
    REFRESH_AFTER_UNIX_FIELD_NUMBER: _ClassVar[int]
    token: str
    session_id: str
    expires_at_unix: int
    refresh_after_unix: int
    def __init__(self, token: _Optional[str] = ..., session_id: _Optional[str] = ..., expires_at_unix: _Optional[int] = ..., refresh_after_unix: _Optional[int] = ...) -> None: ...
