from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DeviceRef(_message.Message):
    __slots__ = ("tenant", "device_id")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    device_id: str
    def __init__(self, tenant: _Optional[str] = ..., device_id: _Optional[str] = ...) -> None: ...

class Playing(_message.Message):
    __slots__ = ("mode", "position_s", "length_s")
    MODE_FIELD_NUMBER: _ClassVar[int]
    POSITION_S_FIELD_NUMBER: _ClassVar[int]
    LENGTH_S_FIELD_NUMBER: _ClassVar[int]
    mode: int
    position_s: float
    length_s: float
    def __init__(self, mode: _Optional[int] = ..., position_s: _Optional[float] = ..., length_s: _Optional[float] = ...) -> None: ...

class Led(_message.Message):
    __slots__ = ("index", "rgba", "label")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    RGBA_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    index: int
    rgba: int
    label: str
    def __init__(self, index: _Optional[int] = ..., rgba: _Optional[int] = ..., label: _Optional[str] = ...) -> None: ...

class Device(_message.Message):
    __slots__ = ("tenant", "device_id", "online", "node", "connected_since_unix", "last_seen_unix", "last_disconnect_reason", "mode", "playing", "battery_level", "buttons", "cert_serial", "cert_days_left", "session_id", "revoked", "leds", "labels", "renewal")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    ONLINE_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_SINCE_UNIX_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_UNIX_FIELD_NUMBER: _ClassVar[int]
    LAST_DISCONNECT_REASON_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    PLAYING_FIELD_NUMBER: _ClassVar[int]
    BATTERY_LEVEL_FIELD_NUMBER: _ClassVar[int]
    BUTTONS_FIELD_NUMBER: _ClassVar[int]
    CERT_SERIAL_FIELD_NUMBER: _ClassVar[int]
    CERT_DAYS_LEFT_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    LEDS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    RENEWAL_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    device_id: str
    online: bool
    node: str
    connected_since_unix: float
    last_seen_unix: float
    last_disconnect_reason: str
    mode: int
    playing: Playing
    battery_level: float
    buttons: _containers.RepeatedScalarFieldContainer[str]
    cert_serial: str
    cert_days_left: int
    session_id: str
    revoked: bool
    leds: _containers.RepeatedCompositeFieldContainer[Led]
    labels: _containers.RepeatedCompositeFieldContainer[Label]
    renewal: DeviceRenewal
    def __init__(self, tenant: _Optional[str] = ..., device_id: _Optional[str] = ..., online: _Optional[bool] = ..., node: _Optional[str] = ..., connected_since_unix: _Optional[float] = ..., last_seen_unix: _Optional[float] = ..., last_disconnect_reason: _Optional[str] = ..., mode: _Optional[int] = ..., playing: _Optional[_Union[Playing, _Mapping]] = ..., battery_level: _Optional[float] = ..., buttons: _Optional[_Iterable[str]] = ..., cert_serial: _Optional[str] = ..., cert_days_left: _Optional[int] = ..., session_id: _Optional[str] = ..., revoked: _Optional[bool] = ..., leds: _Optional[_Iterable[_Union[Led, _Mapping]]] = ..., labels: _Optional[_Iterable[_Union[Label, _Mapping]]] = ..., renewal: _Optional[_Union[DeviceRenewal, _Mapping]] = ...) -> None: ...

class ListDevicesRequest(_message.Message):
    __slots__ = ("tenant", "page_size", "page_token", "online", "mode", "search", "selector")
    class Online(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ANY: _ClassVar[ListDevicesRequest.Online]
        ONLINE: _ClassVar[ListDevicesRequest.Online]
        OFFLINE: _ClassVar[ListDevicesRequest.Online]
    ANY: ListDevicesRequest.Online
    ONLINE: ListDevicesRequest.Online
    OFFLINE: ListDevicesRequest.Online
    TENANT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ONLINE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    SEARCH_FIELD_NUMBER: _ClassVar[int]
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    page_size: int
    page_token: str
    online: ListDevicesRequest.Online
    mode: int
    search: str
    selector: str
    def __init__(self, tenant: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., online: _Optional[_Union[ListDevicesRequest.Online, str]] = ..., mode: _Optional[int] = ..., search: _Optional[str] = ..., selector: _Optional[str] = ...) -> None: ...

class ListDevicesResponse(_message.Message):
    __slots__ = ("devices", "next_page_token", "total")
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    devices: _containers.RepeatedCompositeFieldContainer[Device]
    next_page_token: str
    total: int
    def __init__(self, devices: _Optional[_Iterable[_Union[Device, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total: _Optional[int] = ...) -> None: ...

class WatchDevicesRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class DeviceUpdate(_message.Message):
    __slots__ = ("kind", "device", "change")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        SNAPSHOT: _ClassVar[DeviceUpdate.Kind]
        SNAPSHOT_END: _ClassVar[DeviceUpdate.Kind]
        CHANGED: _ClassVar[DeviceUpdate.Kind]
    SNAPSHOT: DeviceUpdate.Kind
    SNAPSHOT_END: DeviceUpdate.Kind
    CHANGED: DeviceUpdate.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    kind: DeviceUpdate.Kind
    device: Device
    change: str
    def __init__(self, kind: _Optional[_Union[DeviceUpdate.Kind, str]] = ..., device: _Optional[_Union[Device, _Mapping]] = ..., change: _Optional[str] = ...) -> None: ...

class SetModeRequest(_message.Message):
    __slots__ = ("device", "mode")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    device: DeviceRef
    mode: int
    def __init__(self, device: _Optional[_Union[DeviceRef, _Mapping]] = ..., mode: _Optional[int] = ...) -> None: ...

class CommandResult(_message.Message):
    __slots__ = ("device", "node", "stored_only")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    STORED_ONLY_FIELD_NUMBER: _ClassVar[int]
    device: Device
    node: str
    stored_only: bool
    def __init__(self, device: _Optional[_Union[Device, _Mapping]] = ..., node: _Optional[str] = ..., stored_only: _Optional[bool] = ...) -> None: ...

class ListAuditEventsRequest(_message.Message):
    __slots__ = ("tenant", "page_size", "page_token", "action", "device_id", "operator", "refused_only")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_FIELD_NUMBER: _ClassVar[int]
    REFUSED_ONLY_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    page_size: int
    page_token: str
    action: str
    device_id: str
    operator: str
    refused_only: bool
    def __init__(self, tenant: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., action: _Optional[str] = ..., device_id: _Optional[str] = ..., operator: _Optional[str] = ..., refused_only: _Optional[bool] = ...) -> None: ...

class AuditEvent(_message.Message):
    __slots__ = ("id", "time_unix", "operator", "role", "tenant", "action", "target", "parameters", "result", "message", "request_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    TIME_UNIX_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    time_unix: float
    operator: str
    role: str
    tenant: str
    action: str
    target: str
    parameters: str
    result: str
    message: str
    request_id: str
    def __init__(self, id: _Optional[str] = ..., time_unix: _Optional[float] = ..., operator: _Optional[str] = ..., role: _Optional[str] = ..., tenant: _Optional[str] = ..., action: _Optional[str] = ..., target: _Optional[str] = ..., parameters: _Optional[str] = ..., result: _Optional[str] = ..., message: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class ListAuditEventsResponse(_message.Message):
    __slots__ = ("events", "next_page_token")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[AuditEvent]
    next_page_token: str
    def __init__(self, events: _Optional[_Iterable[_Union[AuditEvent, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UploadSoundChunk(_message.Message):
    __slots__ = ("tenant", "mode", "filename", "data")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    mode: int
    filename: str
    data: bytes
    def __init__(self, tenant: _Optional[str] = ..., mode: _Optional[int] = ..., filename: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class Sound(_message.Message):
    __slots__ = ("tenant", "mode", "source", "filename", "length_s", "sha256", "uploaded_unix", "uploaded_by")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    LENGTH_S_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    UPLOADED_UNIX_FIELD_NUMBER: _ClassVar[int]
    UPLOADED_BY_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    mode: int
    source: str
    filename: str
    length_s: float
    sha256: str
    uploaded_unix: float
    uploaded_by: str
    def __init__(self, tenant: _Optional[str] = ..., mode: _Optional[int] = ..., source: _Optional[str] = ..., filename: _Optional[str] = ..., length_s: _Optional[float] = ..., sha256: _Optional[str] = ..., uploaded_unix: _Optional[float] = ..., uploaded_by: _Optional[str] = ...) -> None: ...

class ListSoundsRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class ListSoundsResponse(_message.Message):
    __slots__ = ("sounds",)
    SOUNDS_FIELD_NUMBER: _ClassVar[int]
    sounds: _containers.RepeatedCompositeFieldContainer[Sound]
    def __init__(self, sounds: _Optional[_Iterable[_Union[Sound, _Mapping]]] = ...) -> None: ...

class ResetSoundRequest(_message.Message):
    __slots__ = ("tenant", "mode")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    mode: int
    def __init__(self, tenant: _Optional[str] = ..., mode: _Optional[int] = ...) -> None: ...

class DeviceEvent(_message.Message):
    __slots__ = ("time_unix", "what", "node")
    TIME_UNIX_FIELD_NUMBER: _ClassVar[int]
    WHAT_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    time_unix: float
    what: str
    node: str
    def __init__(self, time_unix: _Optional[float] = ..., what: _Optional[str] = ..., node: _Optional[str] = ...) -> None: ...

class ListDeviceEventsResponse(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[DeviceEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[DeviceEvent, _Mapping]]] = ...) -> None: ...

class CreateConsoleLoginRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ConsoleLogin(_message.Message):
    __slots__ = ("url", "expires_unix")
    URL_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_UNIX_FIELD_NUMBER: _ClassVar[int]
    url: str
    expires_unix: float
    def __init__(self, url: _Optional[str] = ..., expires_unix: _Optional[float] = ...) -> None: ...

class CreateEnrollmentsRequest(_message.Message):
    __slots__ = ("tenant", "device_id", "count", "prefix", "ttl_s")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    TTL_S_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    device_id: str
    count: int
    prefix: str
    ttl_s: float
    def __init__(self, tenant: _Optional[str] = ..., device_id: _Optional[str] = ..., count: _Optional[int] = ..., prefix: _Optional[str] = ..., ttl_s: _Optional[float] = ...) -> None: ...

class Enrollment(_message.Message):
    __slots__ = ("id", "tenant", "device_id", "code", "created_unix", "expires_unix", "created_by")
    ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_UNIX_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    id: str
    tenant: str
    device_id: str
    code: str
    created_unix: float
    expires_unix: float
    created_by: str
    def __init__(self, id: _Optional[str] = ..., tenant: _Optional[str] = ..., device_id: _Optional[str] = ..., code: _Optional[str] = ..., created_unix: _Optional[float] = ..., expires_unix: _Optional[float] = ..., created_by: _Optional[str] = ...) -> None: ...

class CreateEnrollmentsResponse(_message.Message):
    __slots__ = ("enrollments", "ca_fingerprint")
    ENROLLMENTS_FIELD_NUMBER: _ClassVar[int]
    CA_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    enrollments: _containers.RepeatedCompositeFieldContainer[Enrollment]
    ca_fingerprint: str
    def __init__(self, enrollments: _Optional[_Iterable[_Union[Enrollment, _Mapping]]] = ..., ca_fingerprint: _Optional[str] = ...) -> None: ...

class ListEnrollmentsRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class ListEnrollmentsResponse(_message.Message):
    __slots__ = ("enrollments",)
    ENROLLMENTS_FIELD_NUMBER: _ClassVar[int]
    enrollments: _containers.RepeatedCompositeFieldContainer[Enrollment]
    def __init__(self, enrollments: _Optional[_Iterable[_Union[Enrollment, _Mapping]]] = ...) -> None: ...

class CancelEnrollmentRequest(_message.Message):
    __slots__ = ("tenant", "id")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    id: str
    def __init__(self, tenant: _Optional[str] = ..., id: _Optional[str] = ...) -> None: ...

class ClaimCodeRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class ClaimCode(_message.Message):
    __slots__ = ("tenant", "enabled", "id", "code", "created_unix", "created_by", "ca_fingerprint")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    CA_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    enabled: bool
    id: str
    code: str
    created_unix: float
    created_by: str
    ca_fingerprint: str
    def __init__(self, tenant: _Optional[str] = ..., enabled: _Optional[bool] = ..., id: _Optional[str] = ..., code: _Optional[str] = ..., created_unix: _Optional[float] = ..., created_by: _Optional[str] = ..., ca_fingerprint: _Optional[str] = ...) -> None: ...

class PendingEnrollment(_message.Message):
    __slots__ = ("id", "tenant", "proposed_device_id", "key_fingerprint", "peer", "created_unix", "expires_unix", "state", "device_id", "decided_by", "proposed_id_known")
    ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    PROPOSED_DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    PEER_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_UNIX_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    DECIDED_BY_FIELD_NUMBER: _ClassVar[int]
    PROPOSED_ID_KNOWN_FIELD_NUMBER: _ClassVar[int]
    id: str
    tenant: str
    proposed_device_id: str
    key_fingerprint: str
    peer: str
    created_unix: float
    expires_unix: float
    state: str
    device_id: str
    decided_by: str
    proposed_id_known: bool
    def __init__(self, id: _Optional[str] = ..., tenant: _Optional[str] = ..., proposed_device_id: _Optional[str] = ..., key_fingerprint: _Optional[str] = ..., peer: _Optional[str] = ..., created_unix: _Optional[float] = ..., expires_unix: _Optional[float] = ..., state: _Optional[str] = ..., device_id: _Optional[str] = ..., decided_by: _Optional[str] = ..., proposed_id_known: _Optional[bool] = ...) -> None: ...

class ListPendingEnrollmentsResponse(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[PendingEnrollment]
    def __init__(self, requests: _Optional[_Iterable[_Union[PendingEnrollment, _Mapping]]] = ...) -> None: ...

class DecideEnrollmentRequest(_message.Message):
    __slots__ = ("tenant", "id", "device_id")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    id: str
    device_id: str
    def __init__(self, tenant: _Optional[str] = ..., id: _Optional[str] = ..., device_id: _Optional[str] = ...) -> None: ...

class Label(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: str
    def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class SetLabelsRequest(_message.Message):
    __slots__ = ("device", "set", "remove")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    SET_FIELD_NUMBER: _ClassVar[int]
    REMOVE_FIELD_NUMBER: _ClassVar[int]
    device: DeviceRef
    set: _containers.RepeatedCompositeFieldContainer[Label]
    remove: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, device: _Optional[_Union[DeviceRef, _Mapping]] = ..., set: _Optional[_Iterable[_Union[Label, _Mapping]]] = ..., remove: _Optional[_Iterable[str]] = ...) -> None: ...

class AnnounceRequest(_message.Message):
    __slots__ = ("tenant", "selector", "device_ids", "mode", "sound_name", "clip", "clip_name", "priority", "no_resume")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    DEVICE_IDS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    SOUND_NAME_FIELD_NUMBER: _ClassVar[int]
    CLIP_FIELD_NUMBER: _ClassVar[int]
    CLIP_NAME_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    NO_RESUME_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    selector: str
    device_ids: _containers.RepeatedScalarFieldContainer[str]
    mode: int
    sound_name: str
    clip: bytes
    clip_name: str
    priority: int
    no_resume: bool
    def __init__(self, tenant: _Optional[str] = ..., selector: _Optional[str] = ..., device_ids: _Optional[_Iterable[str]] = ..., mode: _Optional[int] = ..., sound_name: _Optional[str] = ..., clip: _Optional[bytes] = ..., clip_name: _Optional[str] = ..., priority: _Optional[int] = ..., no_resume: _Optional[bool] = ...) -> None: ...

class AnnounceResult(_message.Message):
    __slots__ = ("announcement_id", "start_unix", "sound", "targeted", "started", "offline", "refused")
    ANNOUNCEMENT_ID_FIELD_NUMBER: _ClassVar[int]
    START_UNIX_FIELD_NUMBER: _ClassVar[int]
    SOUND_FIELD_NUMBER: _ClassVar[int]
    TARGETED_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    OFFLINE_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    announcement_id: str
    start_unix: float
    sound: str
    targeted: int
    started: _containers.RepeatedScalarFieldContainer[str]
    offline: _containers.RepeatedScalarFieldContainer[str]
    refused: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, announcement_id: _Optional[str] = ..., start_unix: _Optional[float] = ..., sound: _Optional[str] = ..., targeted: _Optional[int] = ..., started: _Optional[_Iterable[str]] = ..., offline: _Optional[_Iterable[str]] = ..., refused: _Optional[_Iterable[str]] = ...) -> None: ...

class CreateScheduleRequest(_message.Message):
    __slots__ = ("tenant", "selector", "mode", "sound_name", "at", "cron", "time_zone", "priority", "no_resume")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    SOUND_NAME_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    CRON_FIELD_NUMBER: _ClassVar[int]
    TIME_ZONE_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    NO_RESUME_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    selector: str
    mode: int
    sound_name: str
    at: str
    cron: str
    time_zone: str
    priority: int
    no_resume: bool
    def __init__(self, tenant: _Optional[str] = ..., selector: _Optional[str] = ..., mode: _Optional[int] = ..., sound_name: _Optional[str] = ..., at: _Optional[str] = ..., cron: _Optional[str] = ..., time_zone: _Optional[str] = ..., priority: _Optional[int] = ..., no_resume: _Optional[bool] = ...) -> None: ...

class ScheduleRun(_message.Message):
    __slots__ = ("occurrence_unix", "ran_unix", "result", "node", "announcement_id", "targeted", "started", "offline", "refused", "missed", "message")
    OCCURRENCE_UNIX_FIELD_NUMBER: _ClassVar[int]
    RAN_UNIX_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    ANNOUNCEMENT_ID_FIELD_NUMBER: _ClassVar[int]
    TARGETED_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    OFFLINE_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    MISSED_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    occurrence_unix: float
    ran_unix: float
    result: str
    node: str
    announcement_id: str
    targeted: int
    started: int
    offline: int
    refused: int
    missed: int
    message: str
    def __init__(self, occurrence_unix: _Optional[float] = ..., ran_unix: _Optional[float] = ..., result: _Optional[str] = ..., node: _Optional[str] = ..., announcement_id: _Optional[str] = ..., targeted: _Optional[int] = ..., started: _Optional[int] = ..., offline: _Optional[int] = ..., refused: _Optional[int] = ..., missed: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class Schedule(_message.Message):
    __slots__ = ("id", "tenant", "selector", "sound", "at", "cron", "time_zone", "priority", "no_resume", "state", "next_runs_unix", "created_by", "created_unix", "recent_runs", "mode", "sound_name")
    ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    SOUND_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    CRON_FIELD_NUMBER: _ClassVar[int]
    TIME_ZONE_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    NO_RESUME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    NEXT_RUNS_UNIX_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_FIELD_NUMBER: _ClassVar[int]
    RECENT_RUNS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    SOUND_NAME_FIELD_NUMBER: _ClassVar[int]
    id: str
    tenant: str
    selector: str
    sound: str
    at: str
    cron: str
    time_zone: str
    priority: int
    no_resume: bool
    state: str
    next_runs_unix: _containers.RepeatedScalarFieldContainer[float]
    created_by: str
    created_unix: float
    recent_runs: _containers.RepeatedCompositeFieldContainer[ScheduleRun]
    mode: int
    sound_name: str
    def __init__(self, id: _Optional[str] = ..., tenant: _Optional[str] = ..., selector: _Optional[str] = ..., sound: _Optional[str] = ..., at: _Optional[str] = ..., cron: _Optional[str] = ..., time_zone: _Optional[str] = ..., priority: _Optional[int] = ..., no_resume: _Optional[bool] = ..., state: _Optional[str] = ..., next_runs_unix: _Optional[_Iterable[float]] = ..., created_by: _Optional[str] = ..., created_unix: _Optional[float] = ..., recent_runs: _Optional[_Iterable[_Union[ScheduleRun, _Mapping]]] = ..., mode: _Optional[int] = ..., sound_name: _Optional[str] = ...) -> None: ...

class ScheduleRef(_message.Message):
    __slots__ = ("tenant", "id")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    id: str
    def __init__(self, tenant: _Optional[str] = ..., id: _Optional[str] = ...) -> None: ...

class ListSchedulesRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class ListSchedulesResponse(_message.Message):
    __slots__ = ("schedules",)
    SCHEDULES_FIELD_NUMBER: _ClassVar[int]
    schedules: _containers.RepeatedCompositeFieldContainer[Schedule]
    def __init__(self, schedules: _Optional[_Iterable[_Union[Schedule, _Mapping]]] = ...) -> None: ...

class TalkStart(_message.Message):
    __slots__ = ("tenant", "selector", "device_ids", "priority", "no_resume", "sample_rate")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    DEVICE_IDS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    NO_RESUME_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    selector: str
    device_ids: _containers.RepeatedScalarFieldContainer[str]
    priority: int
    no_resume: bool
    sample_rate: int
    def __init__(self, tenant: _Optional[str] = ..., selector: _Optional[str] = ..., device_ids: _Optional[_Iterable[str]] = ..., priority: _Optional[int] = ..., no_resume: _Optional[bool] = ..., sample_rate: _Optional[int] = ...) -> None: ...

class TalkRequest(_message.Message):
    __slots__ = ("start", "pcm", "end")
    START_FIELD_NUMBER: _ClassVar[int]
    PCM_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    start: TalkStart
    pcm: bytes
    end: bool
    def __init__(self, start: _Optional[_Union[TalkStart, _Mapping]] = ..., pcm: _Optional[bytes] = ..., end: _Optional[bool] = ...) -> None: ...

class TalkResult(_message.Message):
    __slots__ = ("talk_id", "start_unix", "targeted", "started", "offline", "busy", "refused", "seconds", "frames", "ended")
    TALK_ID_FIELD_NUMBER: _ClassVar[int]
    START_UNIX_FIELD_NUMBER: _ClassVar[int]
    TARGETED_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    OFFLINE_FIELD_NUMBER: _ClassVar[int]
    BUSY_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    ENDED_FIELD_NUMBER: _ClassVar[int]
    talk_id: str
    start_unix: float
    targeted: int
    started: _containers.RepeatedScalarFieldContainer[str]
    offline: _containers.RepeatedScalarFieldContainer[str]
    busy: _containers.RepeatedScalarFieldContainer[str]
    refused: _containers.RepeatedScalarFieldContainer[str]
    seconds: float
    frames: int
    ended: str
    def __init__(self, talk_id: _Optional[str] = ..., start_unix: _Optional[float] = ..., targeted: _Optional[int] = ..., started: _Optional[_Iterable[str]] = ..., offline: _Optional[_Iterable[str]] = ..., busy: _Optional[_Iterable[str]] = ..., refused: _Optional[_Iterable[str]] = ..., seconds: _Optional[float] = ..., frames: _Optional[int] = ..., ended: _Optional[str] = ...) -> None: ...

class DeviceRenewal(_message.Message):
    __slots__ = ("cert_issued_unix", "cert_expires_unix", "renew_due_unix", "renews_in_days", "renewed_at_unix", "failed_at_unix", "failure", "overdue")
    CERT_ISSUED_UNIX_FIELD_NUMBER: _ClassVar[int]
    CERT_EXPIRES_UNIX_FIELD_NUMBER: _ClassVar[int]
    RENEW_DUE_UNIX_FIELD_NUMBER: _ClassVar[int]
    RENEWS_IN_DAYS_FIELD_NUMBER: _ClassVar[int]
    RENEWED_AT_UNIX_FIELD_NUMBER: _ClassVar[int]
    FAILED_AT_UNIX_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    OVERDUE_FIELD_NUMBER: _ClassVar[int]
    cert_issued_unix: float
    cert_expires_unix: float
    renew_due_unix: float
    renews_in_days: int
    renewed_at_unix: float
    failed_at_unix: float
    failure: str
    overdue: bool
    def __init__(self, cert_issued_unix: _Optional[float] = ..., cert_expires_unix: _Optional[float] = ..., renew_due_unix: _Optional[float] = ..., renews_in_days: _Optional[int] = ..., renewed_at_unix: _Optional[float] = ..., failed_at_unix: _Optional[float] = ..., failure: _Optional[str] = ..., overdue: _Optional[bool] = ...) -> None: ...
