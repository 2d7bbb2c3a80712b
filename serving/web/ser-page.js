// ser-page.js: the page at / (index.html). The microphone or a recording goes over ser-stream.js's
// socket; each event comes back as it happens: "speaking..." from speech_start to its utterance, the
// running utterance's interim result, and each finished utterance as an element of the list
// (data-event, data-label, data-start, data-end and every other plain key of the event, as it came)
// and a block of the timeline, coloured by its emotion. The results download as JSON lines (every
// event, as `client/infer.py --stream --json` prints them) and as WebVTT subtitles.

import { captureMicrophone, decodeFile, openStream, SAMPLE_RATE } from "./ser-stream.js";

const page = Object.fromEntries(["mic", "file", "drop", "key", "status", "speaking", "detail", "timeline",
  "utterances", "download-jsonl", "download-vtt"].map((id) => [id, document.getElementById(id)]));

let events = []; // the latest stream's events, as they came
let running = null; // { stream, microphone } while a stream is open

function say(status, { error = false, detail } = {}) {
  page.status.textContent = status;
  page.status.classList.toggle("error", error);
  if (detail !== undefined) page.detail.textContent = detail;
}

function seconds(value) {
  return `${value.toFixed(2)} s`;
}

function busy(source) {
  page.mic.disabled = source === "file";
  page.file.disabled = source !== null;
  page.mic.textContent = source === "microphone" ? "Stop the microphone" : "Start the microphone";
  page.mic.setAttribute("aria-pressed", String(source === "microphone"));
}

function reset() {
  events = [];
  page.utterances.replaceChildren();
  page.timeline.replaceChildren();
  page.speaking.hidden = true;
  page["download-jsonl"].disabled = page["download-vtt"].disabled = true;
}

/** An element for an event with an answer: its plain keys as data-* attributes, its label, times,
 * probabilities and transcript. */
function element(event) {
  const item = document.createElement("li");
  for (const [key, value] of Object.entries(event)) {
    if (value !== null && typeof value !== "object" && /^[a-z][a-z0-9_]*$/.test(key)) {
      item.setAttribute(`data-${key}`, String(value));
    }
  }
  item.className = `${event.event} label-${event.label}`;
  const heading = document.createElement("p");
  const label = document.createElement("strong");
  label.textContent = event.event === "interim" ? `${event.label} (so far)` : event.label;
  heading.append(`${seconds(event.start)} to ${seconds(event.end)}: `, label);
  const transcript = document.createElement("p");
  transcript.className = "transcript";
  transcript.textContent = event.transcript || "(no words)";
  const bars = document.createElement("div");
  bars.className = "probabilities";
  for (const [name, probability] of Object.entries(event.probabilities)) {
    const row = document.createElement("label");
    const meter = document.createElement("meter");
    Object.assign(meter, { min: 0, max: 1, value: probability });
    meter.className = `label-${name}`;
    row.append(`${name} `, meter, ` ${probability.toFixed(2)}`);
    bars.append(row);
  }
  item.append(heading, bars, transcript);
  return item;
}

/** The timeline: one block an utterance, placed by its times, coloured by its label. */
function drawTimeline() {
  const utterances = events.filter((event) => event.event === "utterance");
  const length = Math.max(1, ...events.map((event) => event.end ?? event.start));
  page.timeline.replaceChildren(...utterances.map((event) => {
    const block = document.createElement("div");
    block.className = `block label-${event.label}`;
    block.style.left = `${(100 * event.start) / length}%`;
    block.style.width = `${(100 * (event.end - event.start)) / length}%`;
    block.title = `${event.label} ${event.probabilities[event.label].toFixed(2)}: ${event.transcript}`;
    return block;
  }));
}

function onEvent(event) {
  events.push(event);
  const interim = page.utterances.querySelector("li.interim");
  if (event.event === "speech_start") {
    page.speaking.hidden = false;
  } else if (event.event === "interim") {
    const item = element(event);
    if (interim) interim.replaceWith(item);
    else page.utterances.append(item);
  } else if (event.event === "utterance") {
    page.speaking.hidden = true;
    interim?.remove();
    page.utterances.append(element(event));
    drawTimeline();
    page["download-jsonl"].disabled = page["download-vtt"].disabled = false;
  }
}

function finish(stream) {
  stream.finished.then(() => {
    running = null;
    busy(null);
    page.speaking.hidden = true;
    const count = events.filter((event) => event.event === "utterance").length;
    say("done", { detail: `${count} utterance${count === 1 ? "" : "s"}` });
  }, fail);
}

async function fail(error) {
  const microphone = running?.microphone;
  running = null;
  busy(null);
  page.speaking.hidden = true;
  if (microphone) await microphone.stop();
  say(error.message || String(error), { error: true });
}

async function startMicrophone() {
  reset();
  busy("microphone");
  say("listening", { detail: "" });
  const early = [];
  let stream = null;
  try {
    const microphone = await captureMicrophone((frame) => (stream ? stream.send(frame) : early.push(frame)));
    running = { microphone };
    stream = await openStream({ sampleRate: microphone.sampleRate, encoding: "pcm_s16le", mode: "live",
      key: page.key.value || undefined, onEvent });
    running.stream = stream;
    early.splice(0).forEach((frame) => stream.send(frame));
    finish(stream);
  } catch (error) {
    await fail(error);
  }
}

async function stopMicrophone() {
  const { microphone, stream } = running;
  page.mic.disabled = true;
  await microphone.stop();
  stream?.end(); // the server answers what is left; then "done"
}

async function sendRecording(file) {
  page.file.value = ""; // the same file chosen again is a new choice
  if (running || !file) return;
  reset();
  busy("file");
  say("listening", { detail: `${file.name}: decoding` });
  try {
    const samples = await decodeFile(file);
    const stream = await openStream({ sampleRate: SAMPLE_RATE, encoding: "f32le", mode: "file",
      key: page.key.value || undefined, onEvent });
    running = { stream };
    finish(stream);
    const total = seconds(samples.length / SAMPLE_RATE);
    await stream.sendAll(samples, SAMPLE_RATE, (sent) => {
      page.detail.textContent = `${file.name}: ${seconds(sent / SAMPLE_RATE)} of ${total} sent`;
    });
    stream.end();
  } catch (error) {
    await fail(error.name === "EncodingError" ? new Error(`${file.name}: the browser cannot decode it`) : error);
  }
}

function vttTime(value) {
  const milliseconds = Math.round(value * 1000);
  const pad = (number, width = 2) => String(number).padStart(width, "0");
  return `${pad(Math.floor(milliseconds / 3600000))}:${pad(Math.floor(milliseconds / 60000) % 60)}:`
    + `${pad(Math.floor(milliseconds / 1000) % 60)}.${pad(milliseconds % 1000, 3)}`;
}

// Text as a WebVTT cue carries it: &, < and > escaped (a transcript's <unk> is no tag), as client/timeline.py does.
const cueText = (text) => text.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;");

function subtitles() {
  const cues = events.filter((event) => event.event === "utterance").map((event, index) =>
    `${index + 1}\n${vttTime(event.start)} --> ${vttTime(event.end)}\n`
    + cueText(`[${event.label} ${event.probabilities[event.label].toFixed(2)}] ${event.transcript}`.trimEnd()));
  return `WEBVTT\n\n${cues.join("\n\n")}\n`;
}

function download(name, type, text) {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([text], { type }));
  link.download = name;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}

page.mic.addEventListener("click", () => (running?.microphone ? stopMicrophone() : startMicrophone()));
page.file.addEventListener("change", () => sendRecording(page.file.files[0]));
page.drop.addEventListener("dragover", (event) => {
  event.preventDefault();
  page.drop.classList.add("over");
});
page.drop.addEventListener("dragleave", () => page.drop.classList.remove("over"));
page.drop.addEventListener("drop", (event) => {
  event.preventDefault();
  page.drop.classList.remove("over");
  sendRecording(event.dataTransfer.files[0]);
});
page["download-jsonl"].addEventListener("click", () => download("emotions.jsonl", "application/x-ndjson",
  events.map((event) => JSON.stringify(event)).join("\n") + "\n"));
page["download-vtt"].addEventListener("click", () => download("emotions.vtt", "text/vtt", subtitles()));
