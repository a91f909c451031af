// Runs MicroPython code on the official MicroPython WebAssembly port (npm package
// @micropython/micropython-webassembly-pyscript, pinned in package.json) under Node.
//
//   node run.mjs --heap 65536 --put HOST_DIR:/fw ... --plan plan.json --out OUT_DIR [--net]
//
// --net gives MicroPython real, blocking TCP sockets (netbridge.mjs, jssocket.py).
// Copies each HOST_DIR into the port's virtual filesystem, runs the plan's steps (a JSON
// list of Python sources, one top-level call each, or {"call": "module.function"} steps,
// see below), then copies the virtual /out folder to OUT_DIR and writes
// OUT_DIR/result.json: stdout, the GC heap total after each step (read inside the step,
// before any collection), and any error.
//
// This port grows its GC heap instead of collecting inside a call (MICROPY_GC_SPLIT_HEAP_AUTO):
// a step that needs more than --heap bytes, live objects and garbage together, shows as a
// heap total above the initial one. That is a stricter cap than a board's, whose GC runs
// whenever the heap fills. Seen here: garbage stays across steps until a top-level
// gc.collect(), so plans collect between steps, and call steps collect after each call.
import fs from "node:fs";
import path from "node:path";
import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript";

function args(argv) {
  const a = { heap: 65536, put: [], plan: null, out: null, net: false };
  for (let i = 2; i < argv.length; i++) {
    const k = argv[i], v = argv[i + 1];
    if (k === "--net") { a.net = true; }
    else if (k === "--heap") { a.heap = parseInt(v, 10); i++; }
    else if (k === "--put") { a.put.push(v); i++; }
    else if (k === "--plan") { a.plan = v; i++; }
    else if (k === "--out") { a.out = v; i++; }
    else throw new Error(`unknown argument ${k}`);
  }
  if (!a.plan || !a.out) throw new Error("--plan and --out are required");
  return a;
}

function mkdirs(FS, dir) {
  let cur = "";
  for (const part of dir.split("/").filter(Boolean)) {
    cur += "/" + part;
    try { FS.mkdir(cur); } catch (e) { /* exists */ }
  }
}

function copyIn(FS, host, vdir) {
  mkdirs(FS, vdir);
  for (const name of fs.readdirSync(host)) {
    const p = path.join(host, name);
    const st = fs.statSync(p);
    if (st.isDirectory()) copyIn(FS, p, `${vdir}/${name}`);
    else if (st.isFile()) FS.writeFile(`${vdir}/${name}`, fs.readFileSync(p));
  }
}

function copyOut(FS, vdir, host) {
  fs.mkdirSync(host, { recursive: true });
  let names = [];
  try { names = FS.readdir(vdir); } catch (e) { return; }
  for (const name of names) {
    if (name === "." || name === "..") continue;
    fs.writeFileSync(path.join(host, name), FS.readFile(`${vdir}/${name}`));
  }
}

const a = args(process.argv);
const plan = JSON.parse(fs.readFileSync(a.plan, "utf8"));
let stdout = "";
const mp = await loadMicroPython({
  heapsize: a.heap,
  linebuffer: true,
  // FOG_WASM_ECHO=1: also echo MicroPython's output as it comes (debugging a hang).
  stdout: (line) => { stdout += line + "\n"; if (process.env.FOG_WASM_ECHO) console.error(line); },
  stderr: (line) => { stdout += line + "\n"; if (process.env.FOG_WASM_ECHO) console.error(line); },
});
// --net: blocking TCP sockets for MicroPython (netbridge.mjs), as the JS module `jsnet`.
let net = null;
if (a.net) {
  const { bridge } = await import("./netbridge.mjs");
  net = bridge();
  mp.registerJsModule("jsnet", net);
}
for (const spec of a.put) {
  const i = spec.lastIndexOf(":");
  copyIn(mp.FS, spec.slice(0, i), spec.slice(i + 1));
}
mkdirs(mp.FS, "/out");
// The heap the port has before any step; gc.mem_free() also counts what it could grow by.
mp.runPython("import gc\n_fog_base = gc.mem_free() + gc.mem_alloc()");
const base = mp.globals.get("_fog_base");
const steps = [];
let error = null;
const t0 = Date.now();
// A step is Python source, or {"call": "module.function"}: that function called from
// JavaScript again and again, one top-level call each, while it returns true (a generator
// resumed piece by piece), with a collection after each call; no source is compiled
// in between, so the heap each call needs is the firmware's. Such a step reports the
// largest heap total and allocation of its calls, and the most that stayed live after
// a call's collection (`live`).
const gcmod = mp.pyimport("gc");
for (const [i, item] of plan.entries()) {
  const t = Date.now();
  let total = 0, alloc = 0, calls = 0, grewAt = null, live = 0;
  try {
    if (typeof item === "string") {
      mp.runPython(item + "\n_fog_total = gc.mem_free() + gc.mem_alloc()\n_fog_alloc = gc.mem_alloc()");
      total = mp.globals.get("_fog_total");
      alloc = mp.globals.get("_fog_alloc");
      calls = 1;
    } else {
      const [mod, fn] = item.call.split(".");
      const f = mp.pyimport(mod)[fn];
      let more = true;
      while (more) {
        more = f();
        const used = gcmod.mem_alloc();
        const size = gcmod.mem_free() + used;
        if (grewAt === null && size > base) grewAt = calls;
        total = Math.max(total, size);
        alloc = Math.max(alloc, used);
        calls++;
        gcmod.collect();
        live = Math.max(live, gcmod.mem_alloc());
      }
    }
  } catch (e) {
    error = `step ${i}${calls ? ` (call ${calls + 1})` : ""}: ${e.message ?? e}`;
    break;
  }
  const step = { step: i, total, alloc, ms: Date.now() - t, calls, grew_at: grewAt, live };
  steps.push(step);
}
copyOut(mp.FS, "/out", a.out);
const result = { heap: a.heap, base, steps, error, stdout, ms: Date.now() - t0,
                 version: mp.pyimport("sys").version };
fs.writeFileSync(path.join(a.out, "result.json"), JSON.stringify(result, null, 1));
if (net) net.stop();
process.exit(error ? 1 : 0);
