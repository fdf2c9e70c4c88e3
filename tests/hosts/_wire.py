"""The switch between the test's network namespaces: a learning Ethernet switch in user space, with
netem-like impairments per port.

    python -m tests.hosts._wire PORT=NAMESPACE:TAPDEV ...

Each host namespace holds a TAP device; this process attaches to all of them (entering each namespace
just to open its device) and forwards frames between them. Why not veth + a bridge + `tc netem`: the
kernels this project runs on (CI's included) ship without `sch_netem`, classifiers or tc actions, so
delay, jitter and loss cannot be had in the kernel. A frame here is a real frame: TCP sees real loss,
real reordering and real retransmissions, as across a WAN.

Commands on stdin, one per line, each answered `ok` (or `error ...`) on stdout:

    impair PORT delay_ms=100 jitter_ms=20 loss=0.02   frames sent by PORT's host (like netem on its device)
    down PORT / up PORT                               drop every frame from and to PORT (a cut cable;
                                                      the hosts' devices stay up, their TCP sockets open)
    clear PORT                                        no impairment
    stats PORT                                        frames forwarded / dropped from PORT
"""

from __future__ import annotations

import ctypes
import fcntl
import heapq
import os
import random
import selectors
import struct
import sys
import time
from dataclasses import dataclass, field

_TUNSETIFF = 0x400454CA
_IFF_TAP = 0x0002
_IFF_NO_PI = 0x1000
_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def open_tap(namespace: str, dev: str) -> int:
    """An fd on TAP device `dev` of `namespace` (a persistent TAP made with `ip tuntap add`)."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
    try:
        _setns(target)
        try:
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
            fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH", dev.encode(), _IFF_TAP | _IFF_NO_PI))
        finally:
            _setns(home)
    finally:
        os.close(home)
        os.close(target)
    return fd


@dataclass
class Port:
    name: str
    fd: int
    delay: float = 0.0
    jitter: float = 0.0
    loss: float = 0.0
    down: bool = False
    forwarded: int = 0
    dropped: int = 0
    macs: set = field(default_factory=set)


class Switch:
    def __init__(self, ports: list[Port]) -> None:
        self.ports = {p.name: p for p in ports}
        self.by_fd = {p.fd: p for p in ports}
        self.mac_port: dict[bytes, Port] = {}
        self.pending: list[tuple[float, int, bytes, Port]] = []
        self.seq = 0
        self.rng = random.Random()

    def receive(self, src: Port, frame: bytes) -> None:
        if len(frame) < 14:
            return
        self.mac_port[frame[6:12]] = src
        if src.down or (src.loss and self.rng.random() < src.loss):
            src.dropped += 1
            return
        delay = src.delay + (self.rng.uniform(-src.jitter, src.jitter) if src.jitter else 0.0)
        if delay <= 0:
            self.deliver(src, frame)
            return
        self.seq += 1
        heapq.heappush(self.pending, (time.monotonic() + delay, self.seq, frame, src))

    def deliver(self, src: Port, frame: bytes) -> None:
        if src.down:  # cut while the frame was on the wire
            src.dropped += 1
            return
        dst = self.mac_port.get(frame[0:6])
        targets = [dst] if dst is not None and not (frame[0] & 1) else [p for p in self.ports.values() if p is not src]
        for port in targets:
            if port is src or port.down:
                continue
            try:
                os.write(port.fd, frame)
            except BlockingIOError:  # the host's queue is full: a real switch drops too
                src.dropped += 1
                continue
            except OSError:
                continue  # the device went away (teardown)
            src.forwarded += 1

    def due(self) -> float | None:
        now = time.monotonic()
        while self.pending and self.pending[0][0] <= now:
            _, _, frame, src = heapq.heappop(self.pending)
            self.deliver(src, frame)
        return max(0.0, self.pending[0][0] - now) if self.pending else None

    def command(self, line: str) -> str:
        words = line.split()
        if not words:
            return "error empty command"
        verb, args = words[0], words[1:]
        port = self.ports.get(args[0]) if args else None
        if port is None:
            return f"error unknown port {args[0] if args else ''!r}"
        if verb == "impair":
            opts = dict(a.split("=", 1) for a in args[1:])
            port.delay = float(opts.get("delay_ms", 0)) / 1000
            port.jitter = float(opts.get("jitter_ms", 0)) / 1000
            port.loss = float(opts.get("loss", 0))
        elif verb == "clear":
            port.delay = port.jitter = port.loss = 0.0
        elif verb in ("down", "up"):
            port.down = verb == "down"
        elif verb == "stats":
            return f"ok forwarded={port.forwarded} dropped={port.dropped} loss={port.loss:g} delay_ms={port.delay * 1000:g}"
        else:
            return f"error unknown command {verb!r}"
        return "ok"


def main(argv: list[str]) -> int:
    ports = []
    for spec in argv:
        name, _, where = spec.partition("=")
        namespace, _, dev = where.partition(":")
        ports.append(Port(name, open_tap(namespace, dev)))
    switch = Switch(ports)
    sel = selectors.DefaultSelector()
    for p in ports:
        sel.register(p.fd, selectors.EVENT_READ, p)
    os.set_blocking(0, False)
    sel.register(0, selectors.EVENT_READ, None)
    print("ready", flush=True)
    buf = b""
    while True:
        for key, _ in sel.select(switch.due()):
            port = key.data
            if port is None:
                chunk = os.read(0, 4096)
                if not chunk:
                    return 0  # the test harness is gone: so are we
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    print(switch.command(line.decode()), flush=True)
                continue
            for _ in range(64):
                try:
                    frame = os.read(port.fd, 65536)
                except BlockingIOError:
                    break
                except OSError:
                    sel.unregister(port.fd)
                    break
                switch.receive(port, frame)
        switch.due()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
