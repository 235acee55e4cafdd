"""`AppState`: what every handler shares, built by the lifespan in `server/app.py`."""

from __future__ import annotations

from dataclasses import dataclass

from files.areas import FileAreas
from kernels.pool import KernelPool
from kernels.registry import SessionRegistry
from transcript.store.base import Store
from transcript.transcript import Transcript

from .auth import Authenticator
from .config import Settings
from .janitor import Janitor
from .replicas import Replicas


@dataclass
class AppState:
    settings: Settings
    auth: Authenticator
    store: Store
    pool: KernelPool
    registry: SessionRegistry
    transcript: Transcript
    files: FileAreas
    janitor: Janitor
    replicas: Replicas | None = None  # with replicas sharing a MongoDB
