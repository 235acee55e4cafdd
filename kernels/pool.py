"""`KernelPool`: the only creator and destroyer of kernels, with warm spares.

The pool keeps `warm_size` started, idle kernels; a session claims one (the launcher gives it
the user's work dir, the kernel changes into it) so a new user's first result does not wait
for a kernel start. Spares are refilled one at a time in the background. A `BootGate` bounds
how many kernels start at once, sessions' starts first.

Each spare then imports the `preload` modules (`kernels/preload.py`) in one silent execution,
still under its boot slot (it is CPU of the same kind). A claim never waits for it: it takes
a spare whose preload is done if there is one, else the oldest, and the user's first
execution queues behind the rest of the preload in the kernel, which is never later than a
kernel start would be. A kernel started for a waiting user (no spare left) is not preloaded:
its user imports what they need and no more.

A spare (its start and its preload) runs at the lowest CPU priority until it is claimed,
where the server may set it (as root): refills never slow anyone's code. A kernel started for
a waiting user runs at the sessions' priority: raised above them (nice -5, in effect once
autogroups were set too), the last users of a burst of twenty were ready no sooner (p95 3.18
against 3.18 s, eight runs each) and the first users' executions waited twice as long (p95 30
against 15 ms); a kernel start's CPU is the same whoever gets it first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from collections import deque
from pathlib import Path

from .boot_gate import BACKGROUND, URGENT, BootGate
from .errors import KernelStartFailed
from .kernel import DEFAULT_MAX_MESSAGE_BYTES, Kernel, KernelExit
from .launcher import Launcher
from .preload import preload_code
from .stats import KernelStats

log = logging.getLogger(__name__)

# A spare's nice until it is claimed, relative to the server's own (which sessions' kernels
# keep). It takes only CPU nobody else wants: its start and preload are ~1 s of CPU, and at
# +5 they still slowed a new user's first plots by half.
SPARE_NICE = 19


class KernelPool:
    """Starts, hands out and stops every kernel of this server."""

    def __init__(
        self,
        launcher: Launcher,
        runtime_root: Path,
        warm_size: int = 2,
        start_timeout: float = 60,
        refill_delay: float = 0.5,
        max_starting: int = 0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        preload: tuple[str, ...] = (),
    ) -> None:
        self.launcher = launcher
        self.runtime_root = runtime_root
        self.warm_size = warm_size
        self.start_timeout = start_timeout
        self.max_message_bytes = max_message_bytes
        self._warm: deque[Kernel] = deque()
        self._live: set[Kernel] = set()
        self._preload_code = preload_code(preload) if preload else None
        self._preloading: set[Kernel] = set()  # spares whose preload has not ended
        self._refill_task: asyncio.Task[None] | None = None
        self._refill_wanted = asyncio.Event()
        self._closed = False
        # A spare's start takes ~0.5 s of CPU; while spares remain, let a new user's first
        # executions have the cores before booting its replacement.
        self.refill_delay = refill_delay
        self.boot_gate = BootGate(max_starting or (os.cpu_count() or 1) + 1)
        self.stats = KernelStats()  # every session of this pool counts here too
        self.starting = 0  # kernels booting now
        self.prioritize = os.geteuid() == 0  # only root may give a priority back
        self.base_nice = os.getpriority(os.PRIO_PROCESS, 0)

    async def start(self) -> None:
        """Clear leftovers of an earlier run and begin filling the warm pool."""
        if self.runtime_root.exists():
            await asyncio.to_thread(shutil.rmtree, self.runtime_root, True)
        self.runtime_root.mkdir(parents=True, mode=0o711)
        self._refill_task = asyncio.get_running_loop().create_task(
            self._refill(), name="pool-refill"
        )
        self._refill_wanted.set()

    def status(self) -> dict[str, int]:
        return {
            "warm": len(self._warm),
            "warm_target": self.warm_size,
            "live": len(self._live),
        }

    async def wait_warm(self, timeout: float = 60) -> None:
        """Until the warm pool is full and preloaded (tests and benchmarks use it)."""
        async with asyncio.timeout(timeout):
            while len(self._warm) < self.warm_size or self._preloading & set(self._warm):
                await asyncio.sleep(0.02)

    async def take(self, work_dir: Path, attempts: int = 3) -> Kernel:
        """A running kernel working in `work_dir`: a warm spare if any, else a new one.

        The kernel's `chdir` into the work dir is sent, not awaited: the kernel handles
        shell requests in order, so it runs before anything the user sends next, and the
        user's first result does not wait a round trip for it. Its reply is checked in the
        background; a kernel that fails it is killed, which the session reports as a death.
        """
        for attempt in range(1, attempts + 1):
            kernel = await self._next_kernel()
            try:
                path = await self.launcher.claim(kernel.slot, work_dir)
            except (TimeoutError, KernelStartFailed, OSError) as exc:
                log.warning(
                    "kernel %s failed its claim (attempt %d): %r", kernel.id[:12], attempt, exc
                )
                await self.discard(kernel)
                if attempt == attempts:
                    raise KernelStartFailed(f"no kernel could be claimed: {exc!r}") from exc
                continue
            except BaseException:
                await self.discard(kernel)
                raise
            kernel.work_path = path
            if self.prioritize:
                kernel.renice(self.base_nice)  # a spare's priority is a session's from now on
            msg_id = kernel.execute(f"__import__('os').chdir({path!r})", silent=True)
            queue = kernel.listen(msg_id)
            asyncio.get_running_loop().create_task(
                self._check_claim(kernel, msg_id, queue), name="claim-check"
            )
            return kernel
        raise AssertionError("unreachable")

    async def _check_claim(self, kernel: Kernel, msg_id: str, queue: asyncio.Queue) -> None:
        reply = None
        try:
            async with asyncio.timeout(self.start_timeout):
                while reply is None:
                    item = await queue.get()
                    if isinstance(item, KernelExit):
                        return
                    if isinstance(item, tuple) and item[0] == "shell":
                        reply = item[1]["content"]
        except TimeoutError:
            pass
        finally:
            kernel.unlisten(msg_id)
        if reply is not None and reply.get("status") == "ok":
            return
        log.error(
            "kernel %s could not enter its work dir (%s); killing it",
            kernel.id[:12],
            reply and reply.get("evalue"),
        )
        kernel.kill()

    async def _next_kernel(self) -> Kernel:
        if self._closed:
            raise KernelStartFailed("server is shutting down")
        if kernel := await self._pop_warm():
            return kernel
        async with self.boot_gate.slot(URGENT):
            # A refill may have finished while this start waited for its turn.
            return await self._pop_warm() or await self._start_one()

    async def _pop_warm(self) -> Kernel | None:
        """A live warm kernel, if there is one (dead ones are dropped), preloaded ones first;
        asks for a refill."""
        self._refill_wanted.set()
        for dead in [k for k in self._warm if not k.alive]:
            await self.discard(dead)
        ready = [k for k in self._warm if k not in self._preloading]
        if not self._warm:
            return None
        kernel = ready[0] if ready else self._warm[0]
        self._warm.remove(kernel)
        return kernel

    async def discard(self, kernel: Kernel) -> None:
        """Stop `kernel` and forget it."""
        self._live.discard(kernel)
        with contextlib.suppress(ValueError):
            self._warm.remove(kernel)
        await kernel.stop()

    async def close(self) -> None:
        """Stop every kernel this pool started."""
        self._closed = True
        if self._refill_task is not None:
            self._refill_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refill_task
        kernels = list(self._live)
        self._live.clear()
        self._warm.clear()
        await asyncio.gather(*(k.stop() for k in kernels), return_exceptions=True)
        await asyncio.to_thread(shutil.rmtree, self.runtime_root, True)

    async def _start_one(self, nice: int = 0) -> Kernel:
        """Start a kernel; the caller holds a `boot_gate` slot. `nice`: its priority, relative
        to the server's, until it is claimed (a spare)."""
        if self._closed:
            raise KernelStartFailed("server is shutting down")
        self.runtime_root.mkdir(parents=True, exist_ok=True)
        nice = min(19, self.base_nice + nice) if self.prioritize and nice else 0
        self.starting += 1
        try:
            kernel = await Kernel.start(
                self.launcher, self.runtime_root, self.start_timeout, self.max_message_bytes, nice
            )
        finally:
            self.starting -= 1
        self.stats.kernels_started += 1
        if self._closed:
            await kernel.stop(grace=0)
            raise KernelStartFailed("server is shutting down")
        self._live.add(kernel)
        return kernel

    async def _refill(self) -> None:
        failures = 0
        while True:
            await self._refill_wanted.wait()
            self._refill_wanted.clear()
            if self._warm and self.refill_delay:
                await asyncio.sleep(self.refill_delay)
            while len(self._warm) < self.warm_size and not self._closed:
                try:
                    async with self.boot_gate.slot(BACKGROUND):
                        kernel = await self._start_one(SPARE_NICE)
                        self._warm.append(kernel)  # claimable from now on, preloaded or not
                        asyncio.get_running_loop().create_task(
                            self._forget_when_dead(kernel), name="warm-watch"
                        )
                        await self._preload(kernel)
                except KernelStartFailed as exc:
                    failures += 1
                    log.error("warm kernel failed to start (%d in a row): %s", failures, exc)
                    await asyncio.sleep(min(30, 2**failures))
                    continue
                failures = 0

    async def _preload(self, kernel: Kernel) -> None:
        """Run the preload on a spare and wait for its end; a failure is logged, never
        raised: the kernel is used as it is."""
        if self._preload_code is None:
            return
        self._preloading.add(kernel)
        msg_id = kernel.execute(self._preload_code, silent=True)
        queue = kernel.listen(msg_id)
        started = asyncio.get_running_loop().time()
        reply = None
        try:
            async with asyncio.timeout(self.start_timeout):
                while reply is None:
                    item = await queue.get()
                    if isinstance(item, KernelExit):
                        return  # the warm watch or its session deals with a death
                    if isinstance(item, tuple) and item[0] == "shell":
                        reply = item[1]["content"]
        except TimeoutError:
            log.error(
                "kernel %s: preload still running after %.0f s", kernel.id[:12], self.start_timeout
            )
            return
        finally:
            kernel.unlisten(msg_id)
            self._preloading.discard(kernel)
        took = asyncio.get_running_loop().time() - started
        if isinstance(reply, dict) and reply.get("status") == "ok":
            log.debug("kernel %s preloaded in %.2f s", kernel.id[:12], took)
        else:
            evalue = reply.get("evalue") if isinstance(reply, dict) else reply
            log.error("kernel %s: preload failed, kernel used as is: %s", kernel.id[:12], evalue)

    async def _forget_when_dead(self, kernel: Kernel) -> None:
        await kernel.exited
        if kernel in self._warm:
            log.warning("warm kernel %s died; replacing it", kernel.id[:12])
            await self.discard(kernel)
            self._refill_wanted.set()
