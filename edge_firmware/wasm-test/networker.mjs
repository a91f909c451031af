// The worker side of netbridge.mjs: real TCP sockets (node:net), one request at a time
// from the SharedArrayBuffer, each answered when done or when its timeout passes.
import net from "node:net";
import { workerData } from "node:worker_threads";

const sab = workerData;
const flag = new Int32Array(sab, 0, 2);
const area = new Uint8Array(sab, 8);
const enc = new TextEncoder();
const dec = new TextDecoder();
const socks = new Map(); // id -> {sock, buf: Buffer, eof, err, waiters: [fn]}
let next = 1;

function answer(value, error) {
  const b = enc.encode(JSON.stringify(error ? { error } : { value }));
  area.set(b);
  Atomics.store(flag, 1, b.length);
  Atomics.store(flag, 0, 2);
  Atomics.notify(flag, 0);
}

function kick(s) {
  const w = s.waiters;
  s.waiters = [];
  for (const f of w) f();
}

function withTimeout(ms, body) {
  // body(done) calls done(result) once; a timeout answers [110, null] instead.
  return new Promise((resolve) => {
    let over = false;
    const t = ms >= 0 ? setTimeout(() => { over = true; resolve([110, null]); }, ms) : null;
    body((r) => { if (!over) { if (t) clearTimeout(t); over = true; resolve(r); } });
  });
}

async function handle(req) {
  const s = socks.get(req.id);
  switch (req.op) {
    case "open": {
      const id = next++;
      socks.set(id, { sock: null, buf: Buffer.alloc(0), eof: false, err: 0, waiters: [] });
      return [0, id];
    }
    case "connect":
      return withTimeout(req.ms, (done) => {
        const sock = net.connect({ host: req.host, port: req.port });
        s.sock = sock;
        sock.on("connect", () => done([0, null]));
        sock.on("data", (d) => { s.buf = Buffer.concat([s.buf, d]); kick(s); });
        sock.on("end", () => { s.eof = true; kick(s); });
        sock.on("error", (e) => {
          s.err = e.code === "ECONNREFUSED" ? 111 : 104;
          done([s.err, null]);
          kick(s);
        });
        sock.on("close", () => { s.eof = true; kick(s); });
      });
    case "write":
      if (!s.sock || s.err || s.sock.destroyed) return [s.err || 32, null];
      return new Promise((resolve) => {
        s.sock.write(Buffer.from(req.hex, "hex"), (e) => resolve(e ? [32, null] : [0, null]));
      });
    case "read":
      // Up to n bytes: what is there (at least one), b"" at end of stream; 11 (EAGAIN)
      // at once when ms is 0 and nothing is there; 110 when the timeout passes.
      return withTimeout(req.ms === 0 ? -1 : req.ms, (done) => {
        const attempt = () => {
          if (s.buf.length) {
            const out = s.buf.subarray(0, req.n);
            s.buf = s.buf.subarray(out.length);
            done([0, out.toString("hex")]);
          } else if (s.eof || s.err) {
            done(s.err ? [s.err, null] : [0, ""]);
          } else if (req.ms === 0) {
            done([11, null]);
          } else {
            s.waiters.push(attempt);
          }
        };
        attempt();
      });
    case "close":
      if (s && s.sock) s.sock.destroy();
      socks.delete(req.id);
      return [0, null];
    default:
      throw new Error(`unknown op ${req.op}`);
  }
}

async function loop() {
  for (;;) {
    const v = Atomics.load(flag, 0);
    if (v !== 1) {
      // Wait for a change from the value just seen (a request posted in between is not
      // missed: the wait then returns at once).
      const w = Atomics.waitAsync(flag, 0, v);
      if (w.async) await w.value;
      continue;
    }
    const req = JSON.parse(dec.decode(area.slice(0, Atomics.load(flag, 1))));
    Atomics.store(flag, 0, 3); // being handled
    try {
      answer(await handle(req));
    } catch (e) {
      answer(null, String(e && e.message ? e.message : e));
    }
  }
}

// A pending Atomics.waitAsync does not keep a thread's event loop alive: without this
// timer the worker would exit whenever no socket is open, and the next request would
// never be answered. run.mjs terminates the worker at the end.
setInterval(() => {}, 1 << 30);
loop();
