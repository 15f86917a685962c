#!/usr/bin/env node
// A tiny, dependency-free HTTP server answering StepFun-shaped image responses as fast as Node can,
// so that a Python client's own ceiling (not the server's) is what a benchmark measures.
//
//   node benchmarks/fastserver.js [--port N] [--mode small|large] [--delay-ms N]
//
// - Listens on 127.0.0.1, port from --port or $PORT (default 0: any free port). The port is printed
//   as the first line of stdout (then "ready").
// - POST /v1/images/generations and POST /v1/images/image2image: reads the whole request body, then
//   answers {"created": <int>, "data": [{"b64_json": "<PNG base64>", "seed": <the request's seed,
//   else 1>, "finish_reason": "success"}]} with an x-trace-id header (after --delay-ms if given).
//   Mode "small": a 64x64 PNG (a few hundred bytes of base64); "large": a 1024x1024 RGB PNG of
//   low-entropy noise, made at start with zlib, about 2 MB of base64; both are real decodable PNGs.
// - GET /stats: {"requests", "in_flight", "max_in_flight", "mean_in_flight" (time-weighted, from the
//   first request to the last answer), "connections" (open now), "max_connections", "accepted"
//   (connections opened), "cpu_seconds" (the server's CPU time since it started), "mode", "png_bytes",
//   "b64_chars"}; POST /stats/reset zeroes the counters
//   (the maxima restart from the current values).
// - Keep-alive on. Exits when its stdin closes (the parent died or closed the pipe), on SIGTERM and
//   on SIGINT, so no server is left running.
"use strict";

const http = require("http");
const zlib = require("zlib");

function option(name, fallback) {
  const index = process.argv.indexOf(`--${name}`);
  if (index >= 0 && index + 1 < process.argv.length) return process.argv[index + 1];
  const prefixed = process.argv.find((arg) => arg.startsWith(`--${name}=`));
  if (prefixed) return prefixed.slice(name.length + 3);
  return fallback;
}

const port = Number(option("port", process.env.PORT || "0"));
const mode = option("mode", process.env.FASTSERVER_MODE || "small");
const delayMs = Number(option("delay-ms", process.env.FASTSERVER_DELAY_MS || "0"));
if (mode !== "small" && mode !== "large") {
  process.stderr.write(`fastserver: unknown mode ${mode} (small or large)\n`);
  process.exit(2);
}

// --- a real PNG ---------------------------------------------------------------------------------

const CRC_TABLE = new Int32Array(256);
for (let n = 0; n < 256; n++) {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  CRC_TABLE[n] = c;
}

function crc32(buffers) {
  let c = -1;
  for (const buffer of buffers) {
    for (let i = 0; i < buffer.length; i++) c = CRC_TABLE[(c ^ buffer[i]) & 0xff] ^ (c >>> 8);
  }
  return (c ^ -1) >>> 0;
}

function chunk(type, data) {
  const kind = Buffer.from(type, "latin1");
  const length = Buffer.alloc(4);
  length.writeUInt32BE(data.length);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32([kind, data]));
  return Buffer.concat([length, kind, data, crc]);
}

function png(width, height, pixel, deflateOptions) {
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header[8] = 8; // bit depth
  header[9] = 2; // RGB
  const stride = width * 3 + 1;
  const raw = Buffer.alloc(stride * height);
  for (let y = 0; y < height; y++) {
    raw[y * stride] = 0; // filter: none
    for (let x = 0; x < width; x++) {
      const at = y * stride + 1 + x * 3;
      const [r, g, b] = pixel(x, y);
      raw[at] = r;
      raw[at + 1] = g;
      raw[at + 2] = b;
    }
  }
  const signature = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  return Buffer.concat([
    signature,
    chunk("IHDR", header),
    chunk("IDAT", zlib.deflateSync(raw, deflateOptions)),
    chunk("IEND", Buffer.alloc(0)),
  ]);
}

function makeImage() {
  if (mode === "small") {
    // Bands of colour: compresses to a few hundred bytes.
    return png(64, 64, (x, y) => [(x >> 3) * 32, (y >> 3) * 32, 128], { level: 9 });
  }
  // Deterministic noise with 4 bits of entropy a byte (xorshift32), Huffman coding only (fast at
  // start): compresses to about half of the 3 MB of raw pixels, so the base64 is about 2 MB.
  let state = 0x9e3779b9;
  const next = () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) & 0x0f;
  };
  return png(1024, 1024, () => [next() * 16, next() * 16, next() * 16], {
    level: 1,
    strategy: zlib.constants.Z_HUFFMAN_ONLY,
  });
}

const image = makeImage();
const b64 = Buffer.from(image.toString("base64"), "latin1");
const HEAD = Buffer.from('{"created": ', "latin1");
const MIDDLE = Buffer.from(', "data": [{"b64_json": "', "latin1");
const SEED = Buffer.from('", "seed": ', "latin1");
const TAIL = Buffer.from(', "finish_reason": "success"}]}', "latin1");
const CREATED = Math.floor(Date.now() / 1000);

// --- the server ---------------------------------------------------------------------------------

const stats = { requests: 0, in_flight: 0, max_in_flight: 0, connections: 0, max_connections: 0, accepted: 0 };
let traceCounter = 0;
// The time-weighted mean of requests received and not yet answered, from the first request's
// arrival to the last answer's end (since the last reset). With --delay-ms it is the concurrency
// a client keeps up; without, it is mostly this server's own backlog.
const busy = { area: 0, last: 0, first: null, end: null };

function inFlightChanged(delta) {
  const now = performance.now();
  if (busy.first === null) busy.first = now;
  else busy.area += stats.in_flight * (now - busy.last);
  busy.last = now;
  stats.in_flight += delta;
  if (delta < 0) busy.end = now;
}

function meanInFlight() {
  if (busy.first === null || busy.end === null || busy.end <= busy.first) return 0;
  return Math.round((busy.area / (busy.end - busy.first)) * 100) / 100;
}

function snapshot() {
  const cpu = process.cpuUsage();
  return {
    ...stats,
    mean_in_flight: meanInFlight(),
    cpu_seconds: (cpu.user + cpu.system) / 1e6,
    mode,
    png_bytes: image.length,
    b64_chars: b64.length,
  };
}

function seedOf(body) {
  try {
    const seed = JSON.parse(body).seed;
    return Number.isSafeInteger(seed) ? seed : 1;
  } catch {
    return 1;
  }
}

function answerImage(res, seed) {
  const created = Buffer.from(String(CREATED), "latin1");
  const seedText = Buffer.from(String(seed), "latin1");
  const length = HEAD.length + created.length + MIDDLE.length + b64.length + SEED.length + seedText.length + TAIL.length;
  traceCounter += 1;
  res.writeHead(200, {
    "Content-Type": "application/json",
    "Content-Length": length,
    "x-trace-id": `fast${traceCounter.toString(16).padStart(12, "0")}`,
  });
  res.cork();
  res.write(HEAD);
  res.write(created);
  res.write(MIDDLE);
  res.write(b64);
  res.write(SEED);
  res.write(seedText);
  res.end(TAIL);
  res.uncork();
}

function answerJson(res, status, value) {
  const body = Buffer.from(JSON.stringify(value));
  res.writeHead(status, { "Content-Type": "application/json", "Content-Length": body.length });
  res.end(body);
}

const IMAGE_PATHS = new Set(["/v1/images/generations", "/v1/images/image2image"]);

const server = http.createServer((req, res) => {
  const path = req.url.split("?", 1)[0];
  if (req.method === "GET" && path === "/stats") {
    req.resume();
    answerJson(res, 200, snapshot());
    return;
  }
  if (req.method === "POST" && path === "/stats/reset") {
    req.resume();
    Object.assign(stats, { requests: 0, accepted: 0, max_in_flight: stats.in_flight, max_connections: stats.connections });
    Object.assign(busy, { area: 0, last: performance.now(), first: null, end: null });
    answerJson(res, 200, snapshot());
    return;
  }
  if (req.method !== "POST" || !IMAGE_PATHS.has(path)) {
    req.resume();
    answerJson(res, 404, { error: { message: `no route ${req.method} ${path}`, type: "not_found" } });
    return;
  }
  stats.requests += 1;
  inFlightChanged(1);
  if (stats.in_flight > stats.max_in_flight) stats.max_in_flight = stats.in_flight;
  let done = false;
  const finish = () => {
    if (!done) {
      done = true;
      inFlightChanged(-1);
    }
  };
  res.on("finish", finish);
  res.on("close", finish);
  const parts = [];
  req.on("data", (part) => parts.push(part));
  req.on("end", () => {
    const seed = seedOf(Buffer.concat(parts).toString("utf8"));
    if (delayMs > 0) setTimeout(() => answerImage(res, seed), delayMs);
    else answerImage(res, seed);
  });
});

server.keepAliveTimeout = 120000;
server.headersTimeout = 125000;
server.requestTimeout = 0;
server.maxRequestsPerSocket = 0;
server.on("connection", (socket) => {
  socket.setNoDelay(true);
  stats.connections += 1;
  stats.accepted += 1;
  if (stats.connections > stats.max_connections) stats.max_connections = stats.connections;
  socket.on("close", () => {
    stats.connections -= 1;
  });
});

function stop() {
  process.exit(0);
}
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
// The parent holds our stdin: when it exits (even killed), the pipe closes and so do we.
process.stdin.on("end", stop);
process.stdin.on("close", stop);
process.stdin.on("error", stop);
process.stdin.resume();

server.listen({ host: "127.0.0.1", port, backlog: 4096 }, () => {
  process.stdout.write(`${server.address().port}\n`);
  process.stdout.write(`ready ${mode} png=${image.length} b64=${b64.length} delay_ms=${delayMs}\n`);
});
