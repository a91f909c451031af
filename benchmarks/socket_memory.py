"""Kernel memory per idle TCP connection: what a broker holding N edges costs the kernel,
for the 10,000-edge estimate in docs/performance.md.

    python benchmarks/socket_memory.py [--connections 4000]

Opens N loopback connections to an asyncio server in this process (so both ends count: the
figure per edge is half the per-connection figure) and prints the change of the kernel's
slab memory and of /proc/net/sockstat's TCP counters against the same readings taken just
before, in the same run. Idle sockets with empty buffers: a round's bytes in flight come on
top (socket buffers, counted in sockstat's ``mem`` pages).
"""

from __future__ import annotations

import argparse
import asyncio
import resource

from rich.progress import Progress


def meminfo_kib() -> dict[str, int]:
    out: dict[str, int] = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, value = line.split(":")
            out[key] = int(value.split()[0])
    return out


def tcp_sockstat() -> str:
    with open("/proc/net/sockstat") as f:
        return next(line.strip() for line in f if line.startswith("TCP:"))


async def main(n: int) -> None:
    held: list[asyncio.StreamWriter] = []
    all_accepted = asyncio.Event()

    async def accepted(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        held.append(w)
        if len(held) == n:
            all_accepted.set()

    server = await asyncio.start_server(accepted, "127.0.0.1", 0, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    before, stat_before = meminfo_kib(), tcp_sockstat()
    clients: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    with Progress() as progress:
        task = progress.add_task("connections", total=n)
        while len(clients) < n:
            k = min(500, n - len(clients))
            clients += await asyncio.gather(*[asyncio.open_connection("127.0.0.1", port)
                                              for _ in range(k)])
            progress.update(task, completed=len(clients))
    await all_accepted.wait()
    await asyncio.sleep(1.0)
    after, stat_after = meminfo_kib(), tcp_sockstat()
    print(f"{n} idle loopback connections ({2 * n} sockets)")
    for key in ("Slab", "SUnreclaim"):
        delta = after[key] - before[key]
        print(f"  {key:<10} +{delta / 1024:.1f} MiB = {delta / (2 * n):.2f} KiB per socket")
    print(f"  before: {stat_before}\n  after:  {stat_after}")
    for _r, w in clients:
        w.close()
    for w in held:
        w.close()
    server.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--connections", type=int, default=4000)
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    most = (hard - 64) // 2
    if args.connections > most:
        ap.error(f"--connections: at most {most} here (two descriptors each, hard limit {hard})")
    asyncio.run(main(args.connections))
