"""Secret values: encryption at rest (Fernet, authenticated) and masking in text.

The key comes from ``ORCH_SECRET_KEY`` or, failing that, a key file generated in the data dir
with mode 0600. Plain secret values exist only in memory, in the container's environment.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from orchestrator.errors import OrchestratorError

MASK = "***"
KEY_FILE = "secret-key"


def load_or_create_key(data_dir: Path, configured: str | None) -> bytes:
    """The configured key, else the data dir's key file, created (0600) on first use."""
    if configured:
        return configured.encode()
    path = data_dir / KEY_FILE
    if path.exists():
        return path.read_bytes().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key)
    return key


class SecretBox:
    """Encrypts and decrypts a job's secret env (a name -> value mapping)."""

    def __init__(self, key: bytes) -> None:
        try:
            self._fernet = Fernet(key)
        except ValueError as exc:
            raise OrchestratorError(
                "ORCH_SECRET_KEY is not a valid key: it must be 32 url-safe base64-encoded bytes"
            ) from exc

    def encrypt(self, values: dict[str, str]) -> str:
        """Ciphertext of the mapping."""
        return self._fernet.encrypt(json.dumps(values).encode()).decode()

    def decrypt(self, ciphertext: str) -> dict[str, str]:
        """The mapping back; a wrong key is an error that names no value."""
        try:
            return dict(json.loads(self._fernet.decrypt(ciphertext.encode())))
        except InvalidToken as exc:
            raise OrchestratorError("secret values cannot be decrypted with this key") from exc


def mask(text: str, secret_values: Iterable[str]) -> str:
    """``text`` with every occurrence of a secret value replaced by ``***``."""
    for value in sorted({v for v in secret_values if v}, key=len, reverse=True):
        text = text.replace(value, MASK)
    return text
