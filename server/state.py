"""`AppState`: what every handler shares, built by the lifespan in `server/app.py`."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import tornado.websocket

from files.areas import FileAreas
from kernels.pool import KernelPool
from kernels.registry import SessionRegistry
from transcript.store.base import Store
from transcript.transcript import Transcript

from .auth import Authenticator
from .config import Settings
from .janitor import Janitor
from .metrics import Metrics
from .origins import Origins
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
    origins: Origins = field(default_factory=Origins)
    replicas: Replicas | None = None  # with replicas sharing a MongoDB
    sockets: set[tornado.websocket.WebSocketHandler] = field(default_factory=set)  # open ones
    sockets_closed: asyncio.Event = field(default_factory=asyncio.Event)  # set when none
    metrics: Metrics = field(init=False)

    def __post_init__(self) -> None:
        self.metrics = Metrics(self)

    @property
    def draining(self) -> bool:
        return self.registry.draining

    def socket_opened(self, socket: tornado.websocket.WebSocketHandler) -> None:
        self.sockets.add(socket)
        self.sockets_closed.clear()

    def socket_closed(self, socket: tornado.websocket.WebSocketHandler) -> None:
        self.sockets.discard(socket)
        if not self.sockets:
            self.sockets_closed.set()
