"""Simulated Windows servers in a child process, and an exporter config to scrape them.

``WindowsHosts`` runs ``tests.exporter.targets.winrm.wsman_server`` as a
program: ``hosts`` WS-Man listeners over HTTPS (certificates from a throwaway
CA), Basic authentication. Its CPU is its own, apart from the exporter's. The
exporter config it writes has the ``windows`` auth (Basic over HTTPS, the CA as
``ca_file``, loopback only) for ``/winrm?auth=windows``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.exporter.certs import CertificateAuthority

USERNAME = "CORP\\monitor"
PASSWORD = "simulated-host-password"


class WindowsHosts:
    def __init__(self, directory: Path, hosts: int = 1, receive_delay: float = 0.0) -> None:
        self.directory = directory
        self.hosts = hosts
        self.receive_delay = receive_delay
        self.config = directory / "exporter.yml"
        self.targets: list[str] = []
        self._process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        ca = CertificateAuthority(self.directory)
        pair = ca.server("wsman")
        # A list of argv items, never a shell: the password is test data.
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.exporter.targets.winrm.wsman_server",
                f"--hosts={self.hosts}",
                f"--cert={pair.cert}",
                f"--key={pair.key}",
                f"--username={USERNAME}",
                f"--password={PASSWORD}",
                f"--receive-delay={self.receive_delay}",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[2],
        )
        assert self._process.stdout is not None
        ports = json.loads(self._process.stdout.readline())
        self.targets = [f"127.0.0.1:{port}" for port in ports]
        self.config.write_text(
            json.dumps(  # JSON is valid YAML
                {
                    "auths": {
                        "windows": {
                            "type": "winrm",
                            "username": USERNAME,
                            "password": PASSWORD,
                            "transport": "basic",
                            "https": True,
                            "ca_file": str(ca.pair.cert),
                            "allowed_targets": ["127.0.0.1"],
                        }
                    }
                }
            )
        )

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        assert process.stdin is not None
        process.stdin.close()  # the server's signal to stop
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
