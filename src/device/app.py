"""The Pi client: buttons and LEDs on GPIO, playback, and the connection kept alive.

Connect (BUTTON_1) toggles power: on = the connection loop runs; off = all
streams closed, sound silenced, LEDs off. Mode/Stop/Play go to the server
only while connected; pressed while disconnected they are not queued (led_1
blinks red once instead). led_0 is the power LED; led_1 shows the link
(blinking amber while connecting, the server's colour while connected, off
otherwise); the server's SETs drive led_1..led_5 and never led_0.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from auth.device_credentials import DeviceCredentials
from comms.audio_format import FRAME_MS
from comms.gen.session_pb2 import CreateSessionResponse
from comms.tasks import cancel_and_wait
from device.audio_sink import AudioSink
from device.backoff import Backoff
from device.client import DeviceClient
from device.connection import ConnectionManager, LinkState
from device.gpio import HOLD, PRESS, RELEASE, Board
from device.playback import JitterPlayer, PacedOutput
from device.renewal import CertificateFiles, RenewalPolicy, Renewer
from device.settings import DeviceSettings

log = logging.getLogger(__name__)

CONNECT, MODE, STOP, PLAY = 0, 1, 2, 3
POWER_LED = 0x40FF4060  # led_0: dim green, device on
CONNECTING_LED = 0xFFA00080  # led_1 blink while (re)connecting
REJECTED_LED = 0xFF000080  # led_1 flash: a press while disconnected was not sent
BLINK_S = 0.25
FLASH_S = 0.15
INTERRUPTING = (STOP, PLAY)  # an acked press of these ends the running sound now


class DeviceApp:
    def __init__(
        self,
        settings: DeviceSettings,
        credentials: DeviceCredentials,
        sink: AudioSink,
        *,
        pin_factory: Any = None,
        backoff: Backoff | None = None,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self.settings = settings
        self.credentials = credentials
        self.sink = sink
        self.player = JitterPlayer(
            max(1, settings.jitter_ms // FRAME_MS), max(1, settings.max_behind_ms // FRAME_MS)
        )
        self.output = PacedOutput(self.player, sink)
        self.backoff = backoff or Backoff(
            settings.backoff_base_s, settings.backoff_cap_s, settings.backoff_stable_s
        )
        self._pin_factory = pin_factory
        self._sleep = sleep
        self.board: Board | None = None
        self.manager: ConnectionManager | None = None
        self.link = LinkState.BACKOFF
        self.link_history: list[LinkState] = []
        self.powered = False
        self.sent: list[tuple[int, int, bool, float]] = []  # (button, type, ack, when acked) per event
        self.dropped_presses = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._link_task: asyncio.Task[None] | None = None
        self._renew_task: asyncio.Task[None] | None = None
        self.files = CertificateFiles(settings.cert, settings.key, settings.ca)  # type: ignore[arg-type]
        self.renewer: Renewer | None = None
        self.stopped = asyncio.Event()  # the client cannot go on (``exit_line`` says why)
        self.exit_line: str | None = None
        self._blink_task: asyncio.Task[None] | None = None

    # --- lifecycle ---

    async def start(self, power_on: bool = True) -> None:
        loop = asyncio.get_running_loop()
        self.board = Board(
            self.settings.button_pins,
            self.settings.led_pins,
            self._on_button,
            loop,
            pin_factory=self._pin_factory,
            hold_time_s=self.settings.hold_time_s,
        )
        self.output.start()
        log.info(
            "device.identity",
            extra={"tenant": self.credentials.identity.tenant, "device": self.credentials.identity.device_id},
        )
        if power_on:
            await self.power(True)

    async def close(self) -> None:
        await self.power(False)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.output.close()
        if self.board is not None:
            self.board.close()

    async def power(self, on: bool) -> None:
        if on == self.powered:
            return
        self.powered = on
        assert self.board is not None
        if on:
            self.board.set_led(0, POWER_LED)
            self.manager = ConnectionManager(
                self._make_client,
                self.backoff,
                self._on_link,
                self.settings.revoked_retry_s,
                self.settings.clone_retry_s,
                sleep=self._sleep,
            )
            self._link_task = asyncio.create_task(self.manager.run(), name="connection")
            self.renewer = Renewer(
                self.files,
                self.credentials,
                self.settings.trust_domain,
                RenewalPolicy(
                    self.settings.renew_fraction, self.settings.renew_jitter, self.settings.renew_retry_s
                ),
                self._make_client,
                self._renewed,
                self._expired,
            )
            self._renew_task = asyncio.create_task(self.renewer.run(self.manager), name="renewal")
            log.info("device.power_on")
            return
        await cancel_and_wait(self._renew_task)
        self._renew_task = None
        await cancel_and_wait(self._link_task)
        self._link_task = None
        self._stop_blink()
        self.player.silence_now()
        self.board.all_off()
        self.link = LinkState.BACKOFF
        log.info("device.power_off")

    def _make_client(
        self, credentials: DeviceCredentials | None = None, resume: CreateSessionResponse | None = None
    ) -> DeviceClient:
        """A connection with the current pair; a renewal's: with the new pair, resuming the session."""
        return DeviceClient(
            self.settings.server,
            (credentials or self.credentials).tls,
            self.sink,
            on_leds=self._on_server_leds,
            server_name=self.settings.server_name,
            audio=self.player,
            max_frame_ms=self.settings.max_frame_ms,
            resume=resume,
        )

    def _renewed(self, credentials: DeviceCredentials) -> None:
        self.credentials = credentials  # every later reconnect uses the new pair

    def _expired(self, line: str) -> None:
        self.exit_line = line
        self.stopped.set()

    # --- link indication ---

    def _on_link(self, state: LinkState, client: DeviceClient | None) -> None:
        self.link = state
        self.link_history.append(state)
        assert self.board is not None
        if state == LinkState.CONNECTING:
            self._start_blink()
            return
        self._stop_blink()
        if state == LinkState.CONNECTED and client is not None:
            client.view.leds[0] = POWER_LED
            self.board.set_led(1, client.view.leds[1])
        else:
            self.player.silence_now()
            for index in range(1, 6):
                self.board.set_led(index, 0)

    def _start_blink(self) -> None:
        if self._blink_task is None:
            self._blink_task = asyncio.create_task(self._blink(), name="led1-blink")

    def _stop_blink(self) -> None:
        if self._blink_task is not None:
            self._blink_task.cancel()
            self._blink_task = None

    async def _blink(self) -> None:
        assert self.board is not None
        lit = False
        while True:
            lit = not lit
            self.board.set_led(1, CONNECTING_LED if lit else 0)
            await asyncio.sleep(BLINK_S)

    def _on_server_leds(self, leds: list[int]) -> None:
        if self.board is None:
            return
        for index in range(1, 6):  # led_0 is ours
            self.board.set_led(index, leds[index])

    # --- buttons ---

    def _on_button(self, index: int, kind: int) -> None:
        if index == CONNECT:
            if kind == PRESS:
                self._spawn(self.power(not self.powered))
            return
        client = self.manager.client if self.manager else None
        if kind not in (PRESS, HOLD, RELEASE):
            return
        if client is None or self.link != LinkState.CONNECTED:
            if kind == PRESS:
                self.dropped_presses += 1
                self._spawn(self._flash_rejected())
            return
        assert self.board is not None
        client.view.buttons = self.board.button_states()
        self._spawn(self._send(client, index, kind))

    async def _send(self, client: DeviceClient, index: int, kind: int) -> None:
        playing = self.player.generation if self.player.playing else None
        try:
            response = await client.press(index, kind, timeout=self.settings.ack_timeout_s)
        except TimeoutError:
            log.warning(
                "device.ack_timeout", extra={"button": index, "timeout_s": self.settings.ack_timeout_s}
            )
            client.closed.set()  # the connection loop reconnects
            return
        except Exception as exc:  # the stream broke: the connection loop handles it
            log.info("device.event_not_sent", extra={"button": index, "error": type(exc).__name__})
            return
        self.sent.append((index, kind, response.ack, time.monotonic()))
        if response.ack and kind == PRESS and index in INTERRUPTING and playing is not None:
            self.player.interrupt(playing)

    async def _flash_rejected(self) -> None:
        assert self.board is not None
        previous = self.board.led_rgba(1)
        self.board.set_led(1, REJECTED_LED)
        await asyncio.sleep(FLASH_S)
        if self.link != LinkState.CONNECTING:
            self.board.set_led(1, previous)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
