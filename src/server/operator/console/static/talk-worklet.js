// Push-to-talk: the microphone as 20 ms frames of 48 kHz mono int16 (960 samples), posted to the page.
// Runs in the AudioWorkletGlobalScope (its own script: the console's CSP allows no inline script).
// A context at another rate is resampled here (linear interpolation between input samples).
"use strict";
const RATE = 48000;
const FRAME = 960;

class TalkFrames extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = sampleRate / RATE; // input samples per output sample
    this.t = 0; // position of the next output sample, in input samples from this block's start
    this.prev = 0; // the last input sample of the block before
    this.frame = new Int16Array(FRAME);
    this.fill = 0;
  }

  push(value) {
    const clipped = Math.max(-1, Math.min(1, value));
    this.frame[this.fill++] = Math.round(clipped * 32767);
    if (this.fill === FRAME) {
      const out = this.frame;
      this.port.postMessage(out.buffer, [out.buffer]);
      this.frame = new Int16Array(FRAME);
      this.fill = 0;
    }
  }

  process(inputs) {
    const input = inputs[0];
    if (!input || input.length === 0) return true;
    const n = input[0].length;
    const mono = new Float32Array(n);
    for (const channel of input) for (let i = 0; i < n; i++) mono[i] += channel[i] / input.length;
    if (this.step === 1) {
      for (let i = 0; i < n; i++) this.push(mono[i]);
      return true;
    }
    while (this.t <= n - 1) {
      const i = Math.floor(this.t);
      const f = this.t - i;
      const a = i < 0 ? this.prev : mono[i];
      const b = mono[i + 1];
      this.push(a + (b - a) * f);
      this.t += this.step;
    }
    this.t -= n;
    this.prev = mono[n - 1];
    return true;
  }
}

registerProcessor("talk-frames", TalkFrames);
