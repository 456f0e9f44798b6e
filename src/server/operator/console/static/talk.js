// Push-to-talk: hold the Talk button, the microphone goes to the targeted devices live.
// getUserMedia -> an AudioWorklet (talk-worklet.js: 20 ms 48 kHz mono int16 frames) -> a WebSocket
// on this console's origin (/talk, the session cookie and the CSRF token checked before the upgrade).
// Releasing the button sends "end"; the server answers with the outcome and closes.
"use strict";
(function () {
  const button = document.querySelector("[data-talk]");
  if (!button) return;
  const status = document.querySelector("[data-talk-status]");
  let current = null;

  function say(text) {
    status.textContent = text;
  }

  function counts(m) {
    return m.started + " started, " + m.busy + " busy, " + m.offline + " offline" +
      (m.refused ? ", " + m.refused + " refused" : "");
  }

  function stopCapture(talk) {
    if (talk.stream) talk.stream.getTracks().forEach(function (track) { track.stop(); });
    if (talk.context) talk.context.close();
    talk.stream = talk.context = null;
  }

  async function begin(event) {
    if (event) event.preventDefault();
    if (current) return;
    const talk = current = { released: false };
    button.setAttribute("aria-pressed", "true");
    button.classList.add("talking");
    say("Connecting…");
    try {
      talk.stream = await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
      });
      talk.context = new AudioContext({ sampleRate: 48000, latencyHint: "interactive" });
      await talk.context.audioWorklet.addModule(button.dataset.worklet);
    } catch (error) {
      say("No microphone: " + error.message);
      stopCapture(talk);
      finish(talk);
      return;
    }
    const url = new URL(button.dataset.talk, window.location.href);
    url.protocol = window.location.protocol === "https:" ? "wss:" : "ws:";
    const socket = talk.socket = new WebSocket(url);
    socket.binaryType = "arraybuffer";
    socket.onopen = function () {
      if (talk.released) { socket.send("end"); return; }
      const source = talk.context.createMediaStreamSource(talk.stream);
      const frames = new AudioWorkletNode(talk.context, "talk-frames");
      const mute = talk.context.createGain();
      mute.gain.value = 0; // the graph pulls the worklet; nothing is heard here
      frames.port.onmessage = function (message) {
        if (socket.readyState === WebSocket.OPEN && !talk.released) socket.send(message.data);
      };
      source.connect(frames);
      frames.connect(mute).connect(talk.context.destination);
      say("Talking…");
    };
    socket.onmessage = function (message) {
      const m = JSON.parse(message.data);
      if (m.type === "started") say((talk.released ? "Ending… " : "Talking: ") + counts(m));
      else if (m.type === "ended") say("Talk ended (" + m.ended + ", " + m.seconds + " s): " + counts(m));
      else if (m.type === "refused") say("Refused (" + m.status + "): " + m.message);
    };
    socket.onclose = function (event) {
      stopCapture(talk);
      if (event.code !== 1000 && !status.textContent.startsWith("Refused") && event.reason) {
        say("Talk ended: " + event.reason);
      }
      finish(talk);
    };
  }

  function release(event) {
    if (event) event.preventDefault();
    const talk = current;
    if (!talk || talk.released) return;
    talk.released = true;
    stopCapture(talk);
    if (talk.socket && talk.socket.readyState === WebSocket.OPEN) talk.socket.send("end");
    button.setAttribute("aria-pressed", "false");
    button.classList.remove("talking");
  }

  function finish(talk) {
    if (current === talk) current = null;
    button.setAttribute("aria-pressed", "false");
    button.classList.remove("talking");
  }

  button.addEventListener("pointerdown", begin);
  button.addEventListener("pointerup", release);
  button.addEventListener("pointerleave", release);
  button.addEventListener("pointercancel", release);
  button.addEventListener("keydown", function (event) {
    if ((event.key === " " || event.key === "Enter") && !event.repeat) begin(event);
  });
  button.addEventListener("keyup", function (event) {
    if (event.key === " " || event.key === "Enter") release(event);
  });
  window.addEventListener("pagehide", function () { release(); });
})();
