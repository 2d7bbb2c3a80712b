// ser-stream.js: live speech emotion from the ser-triton edge's WebSocket, as a plain ES module.
//
//   import { openStream, captureMicrophone } from "/ser-stream.js";
//   const stream = await openStream({ encoding: "pcm_s16le", sampleRate: 16000, onEvent: console.log });
//   const microphone = await captureMicrophone((frame) => stream.send(frame));
//   ...; await microphone.stop(); stream.end(); await stream.finished;
//
// The protocol (docs/streaming.md; its schema is /ser-stream.schema.json): the socket is /v1/stream
// with the subprotocol ser.v1; the client sends a start message (JSON), binary frames of audio in
// the start's encoding, then {"type": "end"}; the server sends each event as JSON ({"event":
// "speech_start" | "interim" | "utterance", "start", "end", ...}, passed on here as they come, with
// whatever keys they carry), then {"event": "end"} and a normal close. A failure is an error event
// {"event": "error", "code", "message"} and a close: `finished` rejects with a StreamError.

export const PATH = "/v1/stream";
export const SUBPROTOCOL = "ser.v1";
export const KEY_PREFIX = "ser.key.";
export const SAMPLE_RATE = 16000;
const MOST_UNSENT_BYTES = 1 << 20; // a file's frames wait while the browser holds this much unsent

export class StreamError extends Error {
  constructor(code, message) {
    super(message);
    this.name = "StreamError";
    this.code = code;
  }
}

/** The socket's address on the edge that served `base` (this page): ws://host/v1/stream, or wss://. */
export function streamURL(base = globalThis.location) {
  const url = new URL(PATH, base);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}

/** A client key as a subprotocol (browsers set no headers on a WebSocket): the prefix and its base64url. */
export function keyProtocol(key) {
  return KEY_PREFIX + btoa(key).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

/** Why a socket closed before it opened: the edge says it to a plain request (a missing key: 401). */
async function refusal(url, key) {
  const address = new URL(url);
  address.protocol = address.protocol === "wss:" ? "https:" : "http:";
  try {
    const answer = await fetch(address, { headers: key ? { Authorization: `Bearer ${key}` } : {} });
    const text = await answer.text();
    let said = text.trim();
    try {
      said = JSON.parse(text).error || said;
    } catch {
      // not JSON: the text as it is
    }
    if (answer.status === 401) return new StreamError("unauthorized", said);
    return new StreamError("refused", `the socket could not open (HTTP ${answer.status}: ${said.slice(0, 200)})`);
  } catch {
    return new StreamError("unreachable", `no server answers at ${address.host}`);
  }
}

/** Little-endian bytes of float samples in [-1, 1], in the start message's encoding. */
export function encode(samples, encoding) {
  const width = encoding === "f32le" ? 4 : 2;
  const view = new DataView(new ArrayBuffer(samples.length * width));
  for (let i = 0; i < samples.length; i++) {
    if (width === 4) view.setFloat32(4 * i, samples[i], true);
    else view.setInt16(2 * i, Math.max(-32768, Math.min(32767, Math.round(samples[i] * 32768))), true);
  }
  return view.buffer;
}

class Stream {
  constructor(socket, encoding, finished) {
    this.socket = socket;
    this.encoding = encoding;
    this.finished = finished;
  }

  /** Send float samples (a Float32Array) as one frame. */
  send(samples) {
    if (this.socket.readyState === WebSocket.OPEN) this.socket.send(encode(samples, this.encoding));
  }

  /** Send a whole recording in frames of `frameSamples`, waiting while the browser holds too much unsent;
   * `progress(sent)` after each frame. */
  async sendAll(samples, frameSamples, progress = () => {}) {
    for (let first = 0; first < samples.length; first += frameSamples) {
      while (this.socket.bufferedAmount > MOST_UNSENT_BYTES && this.socket.readyState === WebSocket.OPEN) {
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      if (this.socket.readyState !== WebSocket.OPEN) return;
      this.send(samples.subarray(first, first + frameSamples));
      progress(Math.min(first + frameSamples, samples.length));
    }
  }

  /** No more audio: the server answers what is left, then `finished` resolves. */
  end() {
    if (this.socket.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify({ type: "end" }));
  }

  close() {
    this.socket.close();
  }
}

/** Open a stream: resolves once the socket is open and the start message sent. `onEvent(event)` gets
 * every event as it comes; the stream's `finished` resolves after the last, or rejects with a StreamError. */
export async function openStream({ url = streamURL(), sampleRate = SAMPLE_RATE, encoding = "f32le", mode = "live",
  segmentation, key, onEvent = () => {} } = {}) {
  const socket = new WebSocket(url, key ? [SUBPROTOCOL, keyProtocol(key)] : [SUBPROTOCOL]);
  socket.binaryType = "arraybuffer";
  let opened = false;
  let failure = null;
  let ended = false;
  let settle;
  const finished = new Promise((resolve, reject) => { settle = { resolve, reject }; });
  finished.catch(() => {}); // the caller may look later; no unhandled rejection meanwhile
  socket.addEventListener("message", (message) => {
    if (typeof message.data !== "string") return;
    const event = JSON.parse(message.data);
    if (event.event === "error") failure = new StreamError(event.code, event.message);
    else if (event.event === "end") ended = true;
    else onEvent(event);
  });
  socket.addEventListener("close", async (close) => {
    if (ended) settle.resolve();
    else if (failure) settle.reject(failure);
    else if (!opened) settle.reject(await refusal(url, key));
    else settle.reject(new StreamError("closed", `the connection closed (${close.code}) before the stream ended`));
  });
  await new Promise((resolve, reject) => {
    socket.addEventListener("open", resolve, { once: true });
    finished.catch(reject);
  });
  opened = true;
  const start = { type: "start", sample_rate: sampleRate, encoding, channels: 1, mode };
  if (segmentation) start.segmentation = segmentation;
  socket.send(JSON.stringify(start));
  return new Stream(socket, encoding, finished);
}

/** A recording (WAV, FLAC, MP3, OGG: whatever the browser decodes) as mono float samples at 16 kHz:
 * decoded and resampled by an OfflineAudioContext, its channels mixed down by rendering it as one. */
export async function decodeFile(file) {
  const decoded = await new OfflineAudioContext(1, 1, SAMPLE_RATE).decodeAudioData(await file.arrayBuffer());
  if (decoded.numberOfChannels === 1) return decoded.getChannelData(0);
  const context = new OfflineAudioContext(1, decoded.length, SAMPLE_RATE);
  const source = context.createBufferSource();
  source.buffer = decoded;
  source.connect(context.destination);
  source.start();
  return (await context.startRendering()).getChannelData(0);
}

/** The microphone, at 16 kHz (the AudioContext resamples it), in frames of `frameSeconds`:
 * `onFrame(samples)` for each. Resolves to { sampleRate, stop() }. */
export async function captureMicrophone(onFrame, { frameSeconds = 0.1 } = {}) {
  const media = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
  });
  const context = new AudioContext({ sampleRate: SAMPLE_RATE });
  await context.audioWorklet.addModule(new URL("ser-stream-worklet.js", import.meta.url));
  const source = context.createMediaStreamSource(media);
  const capture = new AudioWorkletNode(context, "ser-capture", {
    processorOptions: { frameSamples: Math.round(frameSeconds * context.sampleRate) },
  });
  capture.port.onmessage = (message) => onFrame(message.data);
  source.connect(capture).connect(context.destination); // it outputs silence; connected, it is always run
  await context.resume();
  return {
    sampleRate: context.sampleRate,
    async stop() {
      capture.port.onmessage = null;
      source.disconnect();
      media.getTracks().forEach((track) => track.stop());
      await context.close();
    },
  };
}
