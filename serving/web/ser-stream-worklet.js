// ser-stream-worklet.js: the microphone's samples in frames of a fixed size, for ser-stream.js.
// It runs in the AudioWorklet (the audio thread): each 128-sample block is mixed down to mono and
// added to the frame; a full frame goes to the page (its port), which sends it on the socket. A block
// without input (a microphone that stopped) counts as silence, so the stream stays alive.

class Capture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.frame = new Float32Array(options.processorOptions.frameSamples);
    this.filled = 0;
  }

  process(inputs) {
    const channels = inputs[0];
    const length = channels.length ? channels[0].length : 128;
    for (let i = 0; i < length; i++) {
      let sum = 0;
      for (const channel of channels) sum += channel[i];
      this.frame[this.filled++] = channels.length ? sum / channels.length : 0;
      if (this.filled === this.frame.length) {
        this.port.postMessage(this.frame.slice());
        this.filled = 0;
      }
    }
    return true;
  }
}

registerProcessor("ser-capture", Capture);
