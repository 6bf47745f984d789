"""Launch ``vllm serve`` with the LoRA arguments of one profiling run, wait until it answers, stop it.

Why a separate process: vLLM owns the GPU for its lifetime and a run's server arguments (A_max, S_max, ...)
are fixed at start-up, so each configuration gets a fresh server, as in the recorded corpus. Its stdout and
stderr go to ``server_out.log`` / ``server_err.log`` in the run folder (the names the corpus uses), so a
failed start is classified with the replay ingest's own failure signatures and the KV capacity and model
memory are read from the startup lines with its parser (``kv_capacity`` table).

Only this module needs vLLM and a GPU; ``check_environment`` stops early with a message naming what is
missing (the ``vllm`` package, ``nvidia-smi``, a visible CUDA GPU).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from adaptwin.profiling.prometheus import fetch_text

VLLM_PIN = "vllm==0.8.5"
#: The server logs in a run folder (the corpus's names): stderr, stdout.
LOG_NAMES = ("server_err.log", "server_out.log")


class ProfilingUnavailable(RuntimeError):
    """vLLM or a GPU is missing on this machine: the ``vllm`` backend cannot run here."""


class ServerStartError(RuntimeError):
    """The server exited or did not answer in time; ``log_texts`` holds its logs for classification."""

    def __init__(self, message: str, log_texts: dict[str, str]) -> None:
        super().__init__(message)
        self.log_texts = log_texts


def vllm_installed() -> bool:
    """Whether the ``vllm`` package is importable (without importing it: that takes seconds)."""
    return importlib.util.find_spec("vllm") is not None


def gpu_problem() -> str | None:
    """None when ``nvidia-smi -L`` lists a GPU, else what is missing."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return "`nvidia-smi` is not on PATH (no NVIDIA driver / CUDA GPU on this machine)"
    try:
        done = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`nvidia-smi -L` failed: {exc}"
    if done.returncode != 0 or "GPU" not in done.stdout:
        return f"`nvidia-smi -L` lists no CUDA GPU (exit {done.returncode}: {(done.stderr or done.stdout).strip()[:200]})"
    return None


def check_environment() -> None:
    """Raise ``ProfilingUnavailable`` naming every missing piece (package, GPU); return if all is there."""
    missing = []
    if not vllm_installed():
        missing.append(
            f"the `vllm` Python package is not installed (`pip install .[gpu]` installs {VLLM_PIN})"
        )
    if problem := gpu_problem():
        missing.append(problem)
    if missing:
        raise ProfilingUnavailable(
            "measurements backend 'vllm' needs vLLM and a CUDA GPU: "
            + "; ".join(missing)
            + ". Use `backend: replay` in params.yaml to ingest the recorded measurements instead."
        )


def vllm_version() -> str | None:
    """Version of the installed vLLM (from package metadata), or None."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vllm")
    except PackageNotFoundError:
        return None


@dataclass
class ServerArgs:
    """The ``vllm serve`` arguments of one run. ``max_loras`` None serves the base model without LoRA."""

    model: str
    max_loras: int | None
    max_cpu_loras: int | None
    max_lora_rank: int | None
    max_num_seqs: int
    host: str = "127.0.0.1"
    port: int = 8000
    gpu_memory_utilization: float = 0.9
    seed: int = 0
    enable_prefix_caching: bool = False
    extra_args: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        """Where the server answers."""
        return f"http://{self.host}:{self.port}"


def vllm_executable() -> str:
    """The ``vllm`` console script of this environment (beside the interpreter), else the one on PATH."""
    local = Path(sys.executable).with_name("vllm")
    return str(local) if local.exists() else "vllm"


def build_command(
    args: ServerArgs, lora_modules: dict[str, str | os.PathLike], executable: str = "vllm"
) -> list[str]:
    """The ``vllm serve`` command line: serving options, then ``--enable-lora`` and one ``name=path`` per adapter."""
    cmd = [
        executable,
        "serve",
        args.model,
        "--host",
        args.host,
        "--port",
        str(args.port),
        "--seed",
        str(args.seed),
        "--gpu-memory-utilization",
        str(args.gpu_memory_utilization),
        "--max-num-seqs",
        str(args.max_num_seqs),
        "--disable-log-requests",
        "--enable-prefix-caching" if args.enable_prefix_caching else "--no-enable-prefix-caching",
    ]
    if args.max_loras:
        cmd += ["--enable-lora", "--max-loras", str(args.max_loras)]
        if args.max_cpu_loras is not None:
            cmd += ["--max-cpu-loras", str(args.max_cpu_loras)]
        if args.max_lora_rank is not None:
            cmd += ["--max-lora-rank", str(args.max_lora_rank)]
        if lora_modules:
            cmd += ["--lora-modules", *(f"{name}={os.fspath(path)}" for name, path in lora_modules.items())]
    return cmd + list(args.extra_args)


class VllmServer:
    """One ``vllm serve`` process in its own process group; a context manager that waits for readiness."""

    def __init__(
        self,
        command: list[str],
        base_url: str,
        log_dir: Path,
        ready_timeout_s: float = 1200.0,
        poll_s: float = 2.0,
    ) -> None:
        self.command, self.base_url, self.log_dir = command, base_url, Path(log_dir)
        self.ready_timeout_s, self.poll_s = ready_timeout_s, poll_s
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> VllmServer:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start the process, logs into ``server_out.log`` / ``server_err.log``.

        Refuses when something already listens on the port: the corpus's loading-overhead runs measured a
        sibling job's server that way (data card 6)."""
        url = urlsplit(self.base_url)
        if port_in_use(url.hostname or "127.0.0.1", url.port or 80):
            message = f"{url.netloc}: address already in use (another server listens there; not started)"
            raise ServerStartError(message, {"harness": message})
        self.log_dir.mkdir(parents=True, exist_ok=True)
        (self.log_dir / "server_command.txt").write_text(" ".join(self.command) + "\n")
        with (
            open(self.log_dir / "server_out.log", "wb") as out,
            open(self.log_dir / "server_err.log", "wb") as err,
        ):
            self.process = subprocess.Popen(self.command, stdout=out, stderr=err, start_new_session=True)

    def wait_ready(self) -> list[str]:
        """Poll ``/health`` then ``/v1/models`` until they answer; return the model ids the server lists."""
        deadline = time.monotonic() + self.ready_timeout_s
        for _ in range(int(self.ready_timeout_s / self.poll_s) + 2):
            if self.process is not None and self.process.poll() is not None:
                raise ServerStartError(
                    f"vllm serve exited with code {self.process.returncode}", self.log_texts()
                )
            try:
                fetch_text(self.base_url + "/health", timeout_s=5.0)
                return list_models(self.base_url)
            except OSError:
                pass
            if time.monotonic() > deadline:
                break
            time.sleep(self.poll_s)
        raise ServerStartError(
            f"Server did not start on time ({self.ready_timeout_s:.0f} s)", self.log_texts()
        )

    def stop(self, grace_s: float = 30.0) -> None:
        """SIGINT the server's process group, then SIGKILL after ``grace_s``."""
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGINT, grace_s), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(proc.pid, sig)
                proc.wait(timeout=wait)
                return
            except (ProcessLookupError, subprocess.TimeoutExpired):
                continue

    def log_texts(self) -> dict[str, str]:
        """``{file name: text}`` of the server logs (for failure classification); "" for a missing file."""
        return {name: "" for name in LOG_NAMES} | read_logs(self.log_dir)


def read_logs(log_dir: str | os.PathLike) -> dict[str, str]:
    """``{file name: text}`` of the server logs that exist in ``log_dir`` (``server_err.log`` first)."""
    texts = {}
    for name in LOG_NAMES:
        path = Path(log_dir) / name
        if path.exists():
            texts[name] = path.read_text(errors="replace")
    return texts


def port_in_use(host: str, port: int) -> bool:
    """Whether a TCP server accepts connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) == 0


def list_models(base_url: str) -> list[str]:
    """Model ids served (``GET /v1/models``): the base model and every registered adapter."""
    data = json.loads(fetch_text(base_url + "/v1/models", timeout_s=10.0))
    return [m["id"] for m in data.get("data", [])]
