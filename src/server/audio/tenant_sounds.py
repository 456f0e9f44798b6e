"""Each tenant's own sounds: uploaded once, encoded once, played by that tenant's devices everywhere.

``UploadSound`` hands the file here: it must decode (any format libsndfile
reads), stay within the size and duration limits, and is then encoded at every
packet duration in use and stored content-addressed (``sound:<sha256>-<bitrate>``)
in the shared store; the tenant's table ``sounds:<tenant>`` maps the mode to it.
A bad file changes nothing.

``clip`` is what a Play asks for: it reads the tenant's table (bounded in time;
the last answer is kept for when the store is away), so every replica plays an
upload from the next Play, without a restart or a message. Clips are cached
per node, the built-in library is the fallback for every mode.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import struct
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass

import numpy as np
import opuslib
import soundfile

from comms.audio_format import CHANNELS, FRAME_DURATIONS_MS, FRAME_MS, SAMPLE_RATE, samples_per_frame
from server.audio.library import AudioLibrary, Clip, ContentError, Encoding, playable
from server.audio.opus import Int16Pcm, encode, packed, unpacked
from server.state.shared_data import SharedData

log = logging.getLogger(__name__)

BLOB_FORMAT = b"TSOUND1\n"
_HEADER = struct.Struct("<HI")  # frame ms, packet count
TABLE_READ_S = 0.25  # a Play never waits longer than this for the store; the last answer is used
BLOB_READ_S = 5.0
CACHED_CLIPS = 16
MIN_RATE, MAX_RATE = 8_000, 384_000  # sample rates an upload may have (Hz): telephone to studio
MAX_CHANNELS = 8
MIN_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000  # one frame at 48 kHz: anything shorter is no sound
MAX_NAME = 200  # a sound's name is its file name, kept to this length at upload
UNREADABLE_TEXT = "not a readable audio file (use WAV, FLAC, Ogg Vorbis/Opus or MP3)"


class SoundRejected(ValueError):
    """An upload that cannot be used; the message says why (INVALID_ARGUMENT)."""


@dataclass(frozen=True)
class SoundInfo:
    tenant: str
    mode: int
    source: str  # "builtin" or "uploaded"
    length_s: float
    filename: str = ""
    sha256: str = ""
    uploaded_at: float = 0.0
    uploaded_by: str = ""
    blob: str = ""

    def encode(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def decode(cls, raw: str) -> SoundInfo:
        data = json.loads(raw)
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass(frozen=True)
class SoundChoice:
    """A sound chosen once (by the node that took an announcement) and played alike everywhere:
    an upload's stored blob, or the built-in sound of ``mode`` when ``blob`` is empty."""

    tenant: str
    mode: int
    blob: str = ""
    label: str = ""  # in words: "mode 2 (built-in)", "chime.wav"

    def to_data(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_data(cls, data: dict[str, object]) -> SoundChoice:
        return cls(str(data["tenant"]), int(str(data["mode"])), str(data["blob"]), str(data["label"]))


def decode_upload(data: bytes, max_seconds: float) -> Int16Pcm:
    """The file as 48 kHz mono PCM, or ``SoundRejected`` with the reason in our own words.

    The header is checked before anything is decoded (a 2 GHz "sample rate" would otherwise
    pass the length check and resample to nothing), and the result after resampling.
    """
    if not data:
        raise SoundRejected("the file is empty")
    try:
        info = soundfile.info(io.BytesIO(data))
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError):
        raise SoundRejected(UNREADABLE_TEXT) from None
    check_header(info.samplerate, info.channels, info.frames, max_seconds)
    try:
        samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError, MemoryError):
        raise SoundRejected(UNREADABLE_TEXT) from None
    try:
        pcm = playable(samples, rate)
    except ContentError as exc:
        raise SoundRejected(str(exc)) from None
    if len(pcm) < MIN_SAMPLES:
        raise SoundRejected("the file holds less than one audio frame once converted to 48 kHz")
    return pcm


def check_header(rate: int, channels: int, frames: int, max_seconds: float) -> None:
    """What the file says it holds, refused before decoding when it cannot be a sound we play."""
    if not MIN_RATE <= rate <= MAX_RATE:
        raise SoundRejected(f"the sample rate {rate} Hz is outside {MIN_RATE}..{MAX_RATE} Hz")
    if not 1 <= channels <= MAX_CHANNELS:
        raise SoundRejected(f"the file has {channels} channels; at most {MAX_CHANNELS}")
    if frames <= 0:
        raise SoundRejected("the file holds no audio samples")
    if frames / rate > max_seconds:
        raise SoundRejected(f"the sound is {frames / rate:.0f} s long; at most {max_seconds:.0f} s")


def encode_blob(pcm: Int16Pcm, bitrate: int) -> bytes:
    """Every packet duration in use, length-prefixed: what the store keeps."""
    parts = [BLOB_FORMAT]
    for frame_ms in FRAME_DURATIONS_MS:
        packets = encode(pcm, bitrate, samples_per_frame(frame_ms))
        parts += [_HEADER.pack(frame_ms, len(packets)), packed(packets)]
    return b"".join(parts)


def clip_from_blob(name: str, blob: bytes, bitrate: int) -> Clip:
    """A playable clip from a stored blob; the PCM (for fade-outs) is decoded from its 20 ms packets."""
    if not blob.startswith(BLOB_FORMAT):
        raise ValueError("not a stored sound")
    pos, encodings = len(BLOB_FORMAT), {}
    while pos < len(blob):
        frame_ms, count = _HEADER.unpack_from(blob, pos)
        packets, pos = unpacked(blob, pos + _HEADER.size, count)
        encodings[frame_ms] = Encoding(frame_ms, tuple(packets))
    decoder = opuslib.Decoder(SAMPLE_RATE, CHANNELS)
    spf = samples_per_frame(FRAME_MS)
    pcm = np.frombuffer(
        b"".join(decoder.decode(p, spf) for p in encodings[FRAME_MS].packets), dtype=np.int16
    ).copy()
    return Clip(name, "uploaded", pcm, encodings, bitrate)


def sounds_table(tenant: str) -> str:
    return f"sounds:{tenant}"


class TenantSounds:
    def __init__(
        self,
        data: SharedData,
        library: AudioLibrary,
        bitrate: int,
        max_bytes: int,
        max_seconds: float,
    ) -> None:
        self._data = data
        self.library = library
        self._bitrate = bitrate
        self.max_bytes = max_bytes
        self._max_seconds = max_seconds
        self._tables: dict[str, dict[int, SoundInfo]] = {}  # last answer per tenant
        self._clips: OrderedDict[str, Clip] = OrderedDict()
        self._loading: dict[str, asyncio.Future[Clip]] = {}

    @property
    def mode_count(self) -> int:
        return len(self.library.clips)

    def builtin(self, tenant: str, mode: int) -> SoundInfo:
        return SoundInfo(tenant, mode, "builtin", round(self.library.clip_for(mode).duration, 3))

    async def table(self, tenant: str) -> dict[int, SoundInfo]:
        """The tenant's uploaded sounds by mode, from the store (raises if it is down)."""
        rows = await self._data.entries(sounds_table(tenant))
        table = {int(mode): SoundInfo.decode(raw) for mode, raw in rows.items()}
        self._tables[tenant] = table
        return table

    async def list(self, tenant: str) -> list[SoundInfo]:
        table = await self.table(tenant)
        return [table.get(mode) or self.builtin(tenant, mode) for mode in range(self.mode_count)]

    def check_mode(self, mode: int) -> None:
        if not 0 <= mode < self.mode_count:
            raise SoundRejected(f"mode {mode} is outside 0..{self.mode_count - 1}")

    async def upload(self, tenant: str, mode: int, filename: str, data: bytes, uploaded_by: str) -> SoundInfo:
        """Validate, encode once (content-addressed), store, and make it the tenant's sound for ``mode``."""
        self.check_mode(mode)
        digest, blob_key, length_s = await self._stored(data, self.max_bytes)
        info = SoundInfo(
            tenant,
            mode,
            "uploaded",
            length_s,
            filename[:MAX_NAME],
            digest,
            time.time(),
            uploaded_by,
            blob_key,
        )
        await self._data.set_entry(sounds_table(tenant), str(mode), info.encode())
        self._tables.setdefault(tenant, {})[mode] = info
        log.info(
            "sounds.uploaded",
            extra={
                "tenant": tenant,
                "mode": mode,
                "sound_file": info.filename,
                "sha256": digest,
                "length_s": info.length_s,
                "bytes": len(data),
                "uploaded_by": uploaded_by,
            },
        )
        return info

    async def clip_for_call(self, tenant: str, filename: str, data: bytes, max_bytes: int) -> SoundChoice:
        """A sound file sent with an announcement: checked as an upload is, stored (content-addressed:
        the same file sent again is stored once) so every node plays the same blob, but no mode's
        sound changes."""
        digest, blob_key, length_s = await self._stored(data, min(max_bytes, self.max_bytes))
        label = (filename or "clip")[:MAX_NAME]
        log.info(
            "sounds.clip_stored",
            extra={"tenant": tenant, "sound_file": label, "sha256": digest, "length_s": length_s},
        )
        return SoundChoice(tenant, 0, blob_key, label)

    async def _stored(self, data: bytes, max_bytes: int) -> tuple[str, str, float]:
        """Decode ``data`` (``SoundRejected`` in our words if it is no sound), encode it once and
        store the blob; its sha256, blob key and length in seconds."""
        if len(data) > max_bytes:
            raise SoundRejected(f"the file is {len(data)} bytes; at most {max_bytes}")
        digest = hashlib.sha256(data).hexdigest()
        blob_key = f"sound:{digest}-{self._bitrate}"
        pcm = await asyncio.to_thread(decode_upload, data, self._max_seconds)
        if await self._data.get_blob(blob_key) is None:
            blob = await asyncio.to_thread(encode_blob, pcm, self._bitrate)
            await self._data.put_blob(blob_key, blob)
        return digest, blob_key, round(len(pcm) / SAMPLE_RATE, 3)

    async def reset(self, tenant: str, mode: int) -> SoundInfo:
        self.check_mode(mode)
        await self._data.set_entry(sounds_table(tenant), str(mode), None)
        self._tables.get(tenant, {}).pop(mode, None)
        log.info("sounds.reset", extra={"tenant": tenant, "mode": mode})
        return self.builtin(tenant, mode)

    async def choose(self, tenant: str, mode: int | None = None, name: str = "") -> SoundChoice:
        """The tenant's sound of ``mode``, or its upload named ``name`` (the file name, with or
        without its extension); ``SoundRejected`` or ``LookupError`` saying why not."""
        table = await self.table(tenant)
        if mode is not None:
            self.check_mode(mode)
            info = table.get(mode)
            if info is None:
                return SoundChoice(tenant, mode, "", f"mode {mode} (built-in)")
            return SoundChoice(tenant, mode, info.blob, f"mode {mode} ({info.filename})")
        if not 1 <= len(name) <= MAX_NAME:
            raise SoundRejected(f"a sound name is 1..{MAX_NAME} characters")
        named = [i for m, i in sorted(table.items()) if name in (i.filename, i.filename.rsplit(".", 1)[0])]
        if not named:
            uploads = ", ".join(sorted({i.filename for i in table.values()})) or "none yet"
            raise LookupError(f"no uploaded sound is named {name!r} (uploads: {uploads[:200]})")
        if len(named) > 1:
            modes = ", ".join(str(i.mode) for i in named)
            raise SoundRejected(f"the uploads of modes {modes} are all named {name!r}: choose a mode instead")
        return SoundChoice(tenant, named[0].mode, named[0].blob, named[0].filename)

    async def clip_of(self, choice: SoundChoice) -> Clip:
        """The clip of a choice made by ``choose`` (on this node or another); raises if the stored
        sound cannot be read."""
        if not choice.blob:
            return self.library.clip_for(choice.mode)
        info = SoundInfo(choice.tenant, choice.mode, "uploaded", 0.0, choice.label, blob=choice.blob)
        return await self._clip(info)

    async def clip(self, tenant: str, mode: int) -> Clip:
        """What a Play of ``mode`` sounds like for ``tenant`` right now (never raises)."""
        mode %= self.mode_count
        try:
            async with asyncio.timeout(TABLE_READ_S):
                table = await self.table(tenant)
        except Exception as exc:
            table = self._tables.get(tenant, {})
            log.warning("sounds.table_unavailable", extra={"tenant": tenant, "error": type(exc).__name__})
        info = table.get(mode)
        if info is None:
            return self.library.clip_for(mode)
        try:
            return await self._clip(info)
        except Exception as exc:
            log.error(
                "sounds.unplayable",
                extra={"tenant": tenant, "mode": mode, "blob": info.blob, "error": f"{exc}"[:200]},
            )
            return self.library.clip_for(mode)

    async def _clip(self, info: SoundInfo) -> Clip:
        cached = self._clips.get(info.blob)
        if cached is not None:
            self._clips.move_to_end(info.blob)
            return cached
        loading = self._loading.get(info.blob)
        if loading is None:  # one load per blob, however many devices press Play at once
            loading = self._loading[info.blob] = asyncio.ensure_future(self._load(info))
            loading.add_done_callback(lambda _: self._loading.pop(info.blob, None))
        return await asyncio.shield(loading)

    async def _load(self, info: SoundInfo) -> Clip:
        async with asyncio.timeout(BLOB_READ_S):
            blob = await self._data.get_blob(info.blob)
        if blob is None:
            raise LookupError("stored sound is missing")
        clip = await asyncio.to_thread(clip_from_blob, f"{info.tenant}/mode-{info.mode}", blob, self._bitrate)
        self._clips[info.blob] = clip
        while len(self._clips) > CACHED_CLIPS:
            self._clips.popitem(last=False)
        return clip
