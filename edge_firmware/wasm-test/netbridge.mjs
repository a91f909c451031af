// Blocking TCP sockets for MicroPython on the WebAssembly port, under Node (CI only).
//
// The port has no socket module and runs on Node's main thread, whose event loop cannot
// turn while MicroPython code runs. So the sockets live in a worker thread (node:net),
// and the main thread waits for each answer with Atomics.wait on a SharedArrayBuffer:
// connect, read(n) and write block exactly as long as a board's would, within the
// timeout MicroPython set (none: forever). Data crosses as hex strings (the port converts
// str both ways). run.mjs registers `bridge()` as the Python module `jsnet`;
// wasm-test/jssocket.py turns it into MicroPython's socket API.
import { Worker } from "node:worker_threads";

const SIZE = 1 << 22; // request/answer area: 4 MiB of hex at most per call

export function bridge() {
  const sab = new SharedArrayBuffer(8 + SIZE);
  const flag = new Int32Array(sab, 0, 2); // [0]: 0 idle, 1 request, 2 answer; [1]: length
  const area = new Uint8Array(sab, 8);
  const worker = new Worker(new URL("./networker.mjs", import.meta.url), { workerData: sab });
  worker.unref();
  const enc = new TextEncoder();
  const dec = new TextDecoder();

  function call(req) {
    const b = enc.encode(JSON.stringify(req));
    area.set(b);
    Atomics.store(flag, 1, b.length);
    Atomics.store(flag, 0, 1);
    Atomics.notify(flag, 0);
    for (;;) {
      const v = Atomics.load(flag, 0);
      if (v === 2) break;
      Atomics.wait(flag, 0, v, 1000);
    }
    const ans = JSON.parse(dec.decode(area.slice(0, Atomics.load(flag, 1))));
    Atomics.store(flag, 0, 0);
    if (ans.error) throw new Error(ans.error);
    return ans.value;
  }

  return {
    // Each returns a JSON string "[errno, value]": errno 0 on success, else the OSError
    // number MicroPython would raise (110 timed out, 104 reset, 111 refused, 11 EAGAIN).
    open: () => JSON.stringify(call({ op: "open" })),
    connect: (id, host, port, ms) => JSON.stringify(call({ op: "connect", id, host, port, ms })),
    write: (id, hex) => JSON.stringify(call({ op: "write", id, hex })),
    read: (id, n, ms) => JSON.stringify(call({ op: "read", id, n, ms })),
    close: (id) => JSON.stringify(call({ op: "close", id })),
    stop: () => worker.terminate(),
  };
}
