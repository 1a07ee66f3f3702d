"""The engine's signing key: from ENGINE_KEYPAIR, or made once and kept under the data dir."""

import json
import os
from pathlib import Path

from solders.keypair import Keypair

from shared.settings import Settings


def load_keypair(settings: Settings) -> Keypair:
    """The keypair every worker signs with (base58 secret in the env, or a solana-keygen file).

    The file is created with O_EXCL, so workers starting together agree on one key.
    """
    if settings.engine_keypair:
        return Keypair.from_base58_string(settings.engine_keypair)
    path = Path(settings.data_dir) / "engine-keypair.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read(path)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(list(bytes(Keypair()))))
    return _read(path)


def _read(path: Path) -> Keypair:
    # A concurrent creator may not have finished writing; the file is tiny, so wait it out.
    for _ in range(100):
        text = path.read_text()
        if text.endswith("]"):
            return Keypair.from_bytes(bytes(json.loads(text)))
        os.sched_yield()
    raise RuntimeError(f"{path} is not a keypair file")
