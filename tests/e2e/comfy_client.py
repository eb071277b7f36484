"""Starting a real ComfyUI with the pack installed, and talking to its HTTP API (stdlib only)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def install_pack(custom_nodes: Path, name: str = "r3dp") -> Path:
    """Copy the pack as a user's ``git clone`` would have it: every tracked or untracked-but-not-ignored file."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO_ROOT,
                            check=True, capture_output=True).stdout.decode().split("\0")
    target = custom_nodes / name
    for relative in filter(None, listed):
        source = REPO_ROOT / relative
        if source.is_file():
            destination = target / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)
    return target


class ComfyServer:
    """``python main.py --cpu`` on a free 127.0.0.1 port with its own base directory (custom_nodes, models, input,
    output, user) so the user's ComfyUI installation is never touched."""

    def __init__(self, comfyui_dir: Path, python: str, base: Path, extra_model_paths: Path | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.base = base
        self.log_path = base / "comfyui.log"
        command = [python, str(comfyui_dir / "main.py"), "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
                   "--base-directory", str(base), "--disable-auto-launch"]
        if extra_model_paths is not None:
            command += ["--extra-model-paths-config", str(extra_model_paths)]
        self._log = open(self.log_path, "wb")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(command, cwd=comfyui_dir, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        self.client_id = uuid.uuid4().hex

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.process.returncode}:\n{self.log()[-4000:]}")
            try:
                self.get("/system_stats")
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(1)
        raise TimeoutError(f"ComfyUI did not answer within {timeout} s:\n{self.log()[-4000:]}")

    def request(self, method: str, route: str, body=None, timeout: float = 60):
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        request = urllib.request.Request(self.url + route, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = response.read()
        return json.loads(payload) if payload else None

    def get(self, route: str):
        return self.request("GET", route)

    def post(self, route: str, body):
        return self.request("POST", route, body)

    def queue(self, prompt: dict) -> str:
        """POST /prompt; raises with ComfyUI's validation report when the prompt is refused."""
        try:
            reply = self.post("/prompt", {"prompt": prompt, "client_id": self.client_id})
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"prompt refused: {exc.read().decode(errors='replace')}") from None
        return reply["prompt_id"]

    def wait(self, prompt_id: str, timeout: float) -> dict:
        """The history entry of a finished prompt; raises with the node error when execution failed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            history = self.get(f"/history/{prompt_id}")
            if prompt_id in history:
                entry = history[prompt_id]
                status = entry.get("status", {})
                if status.get("completed"):
                    return entry
                if status.get("status_str") == "error":
                    errors = [m for m in status.get("messages", []) if m[0] == "execution_error"]
                    raise AssertionError(f"prompt failed: {json.dumps(errors, indent=1)[:6000]}")
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI died:\n{self.log()[-4000:]}")
            time.sleep(1)
        self.post("/interrupt", {})
        raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout} s")

    def run(self, prompt: dict, timeout: float = 1800) -> dict:
        return self.wait(self.queue(prompt), timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
