"""A small fake OpenAI-compatible server on loopback, so the client, poller, runner and writers are tested in
CI without vLLM or a GPU.

It streams ``max_tokens`` tokens as server-sent events over HTTP/1.1 chunked transfer coding (as vLLM's
uvicorn server does): the first after ``ttft_s``, the next ones every ``itl_s`` (deterministic sleeps), then a
``usage`` chunk and ``data: [DONE]``. ``GET /v1/models`` lists the base model and the adapters; ``GET /metrics``
serves vLLM's metric names in Prometheus text format, formatting floats like ``prometheus_client`` does, so a
counter at or above 1e6 is printed in scientific notation (``1.000012e+06``) -- the corpus's overflow bug.
``vllm:request_success_total`` has one series per ``finished_reason``; ``stop`` comes first and stays 0 with
``ignore_eos``, as in the vLLM 0.8.5 runs of the corpus. ``GET /version`` answers like vLLM's (0.8.5 by
default).

``python -m adaptwin.profiling.fake --port N ...`` runs it as a process that first prints vLLM 0.8.5's
startup lines ('Model loading took X GiB ...', 'GPU KV cache size: N tokens') to stdout, so the real
launcher (``server.VllmServer``) and the ``kv_capacity`` writer can be exercised without a GPU.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def go_float(value: float) -> str:
    """Format like ``prometheus_client.utils.floatToGoString``: ``1234567.0`` -> ``1.234567e+06``."""
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    text = repr(float(value))
    dot = text.find(".")
    if value > 0 and dot > 6:
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+0{dot - 1}"
    return text


@dataclass
class FakeState:
    """Server-side counters (guarded by ``lock``)."""

    prompt_tokens: float = 0.0
    generation_tokens: float = 0.0
    running: int = 0
    success: dict[str, int] = field(default_factory=lambda: {"stop": 0, "length": 0, "abort": 0})
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Httpd(ThreadingHTTPServer):
    """``ThreadingHTTPServer`` with a deep accept backlog.

    The default backlog of 5 overflows when a benchmark opens all its streams at once (plus the metrics
    poller); Linux then drops the SYN and the client retries after a full second, which skews timings and
    starves the poller. uvicorn, which vLLM uses, listens with a backlog of 2048.
    """

    request_queue_size = 2048
    daemon_threads = True


class FakeOpenAIServer:
    """Threaded fake server on ``127.0.0.1`` (port 0 = a free port); use as a context manager."""

    def __init__(
        self,
        model: str = "fake-base",
        adapters: tuple[str, ...] = (),
        ttft_s: float = 0.05,
        itl_s: float = 0.01,
        prompt_tokens_start: float = 999_000.0,
        port: int = 0,
        version: str = "0.8.5",
    ) -> None:
        self.model, self.adapters, self.version = model, tuple(adapters), version
        self.ttft_s, self.itl_s = ttft_s, itl_s
        self.state = FakeState(prompt_tokens=prompt_tokens_start)
        self.httpd = _Httpd(("127.0.0.1", port), _handler(self))
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def start(self) -> FakeOpenAIServer:
        """Serve in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def metrics_text(self) -> str:
        """The current ``/metrics`` body."""
        s = self.state
        with s.lock:
            lines = [
                "# HELP vllm:num_requests_running Number of requests in model execution batches.",
                "# TYPE vllm:num_requests_running gauge",
                f'vllm:num_requests_running{{model_name="{self.model}"}} {go_float(s.running)}',
                "# TYPE vllm:num_requests_waiting gauge",
                f'vllm:num_requests_waiting{{model_name="{self.model}"}} 0.0',
                "# TYPE vllm:gpu_cache_usage_perc gauge",
                f'vllm:gpu_cache_usage_perc{{model_name="{self.model}"}} {go_float(min(1.0, s.running / 100))}',
                "# TYPE vllm:num_preemptions_total counter",
                f'vllm:num_preemptions_total{{model_name="{self.model}"}} 0.0',
                "# TYPE vllm:prompt_tokens_total counter",
                f'vllm:prompt_tokens_total{{model_name="{self.model}"}} {go_float(s.prompt_tokens)}',
                "# TYPE vllm:generation_tokens_total counter",
                f'vllm:generation_tokens_total{{model_name="{self.model}"}} {go_float(s.generation_tokens)}',
                "# TYPE vllm:request_success_total counter",
            ]
            lines += [
                f'vllm:request_success_total{{finished_reason="{reason}",model_name="{self.model}"}} {go_float(n)}'
                for reason, n in s.success.items()
            ]
        return "\n".join(lines) + "\n"

    def models_body(self) -> dict[str, Any]:
        """The ``/v1/models`` listing: base model first, then the adapters with their parent."""
        data = [{"id": self.model, "object": "model", "root": self.model, "parent": None}]
        data += [{"id": a, "object": "model", "root": a, "parent": self.model} for a in self.adapters]
        return {"object": "list", "data": data}


def _handler(server: FakeOpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # keep test output quiet
            pass

        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            if self.path.rstrip("/") == "/metrics":
                self._send(200, server.metrics_text(), "text/plain; version=0.0.4")
            elif self.path == "/v1/models":
                self._send(200, json.dumps(server.models_body()), "application/json")
            elif self.path == "/version":
                self._send(200, json.dumps({"version": server.version}), "application/json")
            elif self.path == "/health":
                self._send(200, "", "text/plain")
            else:
                self._send(404, json.dumps({"error": "not found"}), "application/json")

        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            if self.path != "/v1/completions" or not body.get("stream"):
                self._send(404, json.dumps({"error": "only streaming /v1/completions"}), "application/json")
            elif body.get("model") not in (server.model, *server.adapters):
                self._send(
                    404,
                    json.dumps({"error": f"model {body.get('model')!r} does not exist"}),
                    "application/json",
                )
            else:
                self._stream(body)

        def _send(self, status: int, text: str, content_type: str) -> None:
            data = text.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _chunk(self, payload: dict | str) -> None:
            text = payload if isinstance(payload, str) else json.dumps(payload)
            data = f"data: {text}\n\n".encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        def _stream(self, body: dict) -> None:
            prompt = body.get("prompt") or ""
            n_prompt = len(prompt) if isinstance(prompt, list) else len(str(prompt).split())
            n_out = int(body.get("max_tokens") or 16)
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            with server.state.lock:
                server.state.running += 1
                server.state.prompt_tokens += n_prompt
            try:
                self._tokens(body["model"], n_out)
                usage = {
                    "prompt_tokens": n_prompt,
                    "completion_tokens": n_out,
                    "total_tokens": n_prompt + n_out,
                }
                self._chunk({"id": "cmpl-fake", "object": "text_completion", "choices": [], "usage": usage})
                self._chunk("[DONE]")
                self.wfile.write(b"0\r\n\r\n")
                self._finish("length", n_out)
            except OSError:  # client went away (window end): counted as abort
                self._finish("abort", 0)
                self.close_connection = True

        def _tokens(self, model: str, n_out: int) -> None:
            time.sleep(server.ttft_s)
            for i in range(n_out):
                if i:
                    time.sleep(server.itl_s)
                reason = "length" if i == n_out - 1 else None
                choice = {"index": 0, "text": f" t{i}", "logprobs": None, "finish_reason": reason}
                self._chunk(
                    {"id": "cmpl-fake", "object": "text_completion", "model": model, "choices": [choice]}
                )

        def _finish(self, reason: str, tokens: int) -> None:
            with server.state.lock:
                server.state.running -= 1
                server.state.success[reason] += 1
                server.state.generation_tokens += tokens

    return Handler


def startup_lines(model: str, kv_tokens: int, model_memory_gib: float, model_loading_s: float) -> list[str]:
    """vLLM 0.8.5's startup lines that ``kv_capacity`` is read from (as in the corpus's server_out.log)."""
    return [
        f"INFO 01-01 00:00:00 [api_server.py:1046] vLLM API server version fake (model {model})",
        f"INFO 01-01 00:00:01 [gpu_model_runner.py:1347] Model loading took {model_memory_gib:.4f} GiB and "
        f"{model_loading_s:.6f} seconds",
        f"INFO 01-01 00:00:02 [kv_cache_utils.py:634] GPU KV cache size: {kv_tokens:,} tokens",
    ]


def main(argv: list[str] | None = None) -> int:
    """Serve the fake on ``127.0.0.1:--port`` until SIGINT/SIGTERM, after printing vLLM's startup lines."""
    p = argparse.ArgumentParser(prog="python -m adaptwin.profiling.fake", description=main.__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--model", default="fake-base")
    p.add_argument("--adapters", nargs="*", default=[])
    p.add_argument("--ttft-s", type=float, default=0.05)
    p.add_argument("--itl-s", type=float, default=0.01)
    p.add_argument("--kv-tokens", type=int, default=100_000)
    p.add_argument("--model-memory-gib", type=float, default=1.0)
    p.add_argument("--model-loading-s", type=float, default=0.5)
    args = p.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    for line in startup_lines(args.model, args.kv_tokens, args.model_memory_gib, args.model_loading_s):
        print(line, flush=True)
    fake = FakeOpenAIServer(args.model, tuple(args.adapters), args.ttft_s, args.itl_s, port=args.port)
    with fake:
        while not stop.wait(0.2):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
