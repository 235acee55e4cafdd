# Runs inside a kernel, never imported by the server: `kernels/hibernate.py` sends this
# source in a silent execute, run by `exec` in a namespace of its own, so it leaves no name
# in the user's namespace. `PARAMS` is set in that namespace; it then calls `save` or
# `restore`, which report through one display_data message of `REPORT_MIME` (a user's
# patched `sys.stdout` cannot swallow it).
#
# A snapshot is a directory: `manifest.json` (written last, so a snapshot cut short has
# none) and each variable's pickle in parts no larger than `part_bytes` (the kernel's
# largest-file rlimit would refuse one big file). One variable at a time, so an object that
# cannot be saved loses only itself, with the reason. Modules are recorded as imports.
# Functions defined in the session are pickled without their globals and come back bound
# to the user's namespace, as they were: a function that reads `df` does not drag a copy of
# `df` into its pickle, and sees the restored `df`, not a stale one.

import io
import json
import os
import pickle
import shutil
import sys
import time
import types

REPORT_MIME = "application/vnd.kss.snapshot+json"
MANIFEST = "manifest.json"
USER_NS = "user-namespace"  # the persistent id of the user's namespace in a pickle
SKIP = frozenset({"In", "Out", "get_ipython", "exit", "quit", "load_file", "FILES"})


class TooLarge(Exception):
    pass


class TimeCap(Exception):
    pass


class PartWriter:
    """A write-only file over `<stem>.<n>` parts of `part_bytes`, bounded in bytes and time."""

    def __init__(self, directory, stem, part_bytes, budget, deadline):
        self.directory = directory
        self.stem = stem
        self.part_bytes = part_bytes
        self.budget = budget
        self.deadline = deadline
        self.size = 0
        self.parts = 0
        self._file = None
        self._room = 0

    def write(self, data):
        view = memoryview(data).cast("B")  # pickle hands large buffers over as PickleBuffer
        size = len(view)
        if self.size + size > self.budget:
            raise TooLarge
        if time.monotonic() > self.deadline:
            raise TimeCap
        while view:
            if self._room == 0:
                self._next_part()
            n = self._file.write(view[: self._room])
            view = view[n:]
            self._room -= n
            self.size += n
        return size

    def _next_part(self):
        if self._file is not None:
            self._file.close()
        path = os.path.join(self.directory, f"{self.stem}.{self.parts}")
        self._file = open(path, "wb")
        self.parts += 1
        self._room = self.part_bytes

    def close(self):
        if self._file is not None:
            self._file.close()
            self._file = None

    def discard(self):
        self.close()
        for n in range(self.parts):
            try:
                os.unlink(os.path.join(self.directory, f"{self.stem}.{n}"))
            except OSError:
                pass


class PartReader(io.RawIOBase):
    """The parts of one variable read back as one stream."""

    def __init__(self, directory, stem, parts):
        self.paths = [os.path.join(directory, f"{stem}.{n}") for n in range(parts)]
        self._file = None

    def readable(self):
        return True

    def readinto(self, buffer):
        while True:
            if self._file is None:
                if not self.paths:
                    return 0
                self._file = open(self.paths.pop(0), "rb")
            n = self._file.readinto(buffer)
            if n:
                return n
            self._file.close()
            self._file = None

    def close(self):
        if self._file is not None:
            self._file.close()
            self._file = None
        super().close()


def unsaveable(value):
    """Why `value` cannot outlive its kernel, for kinds known up front; else None."""
    import socket
    import threading

    if isinstance(value, io.IOBase):
        return "open file"
    if isinstance(value, types.GeneratorType | types.AsyncGeneratorType):
        return "generator"
    if isinstance(value, types.CoroutineType):
        return "coroutine"
    if isinstance(value, socket.socket):
        return "socket"
    if isinstance(value, threading.Thread):
        return "thread"
    return None


def reason(exc):
    """A short reason from a failed pickle."""
    if isinstance(exc, TooLarge):
        return "too large"
    if isinstance(exc, TimeCap):
        return "time cap"
    if isinstance(exc, MemoryError):
        return "out of memory"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    text = str(exc)
    for needle, why in (
        ("_io.", "holds an open file"),
        ("generator", "holds a generator"),
        ("socket", "holds a socket"),
        ("lock", "holds a lock"),
    ):
        if needle in text:
            return why
    return f"cannot be saved: {type(exc).__name__}: {text}"[:200]


def report(body):
    from IPython.display import publish_display_data

    publish_display_data({REPORT_MIME: body})


def make_pickler(file, ns):
    import cloudpickle

    class Pickler(cloudpickle.Pickler):
        def persistent_id(self, obj):
            return USER_NS if obj is ns else None

        def reducer_override(self, obj):
            if isinstance(obj, types.FunctionType) and obj.__globals__ is ns:
                attrs = {
                    "__qualname__": obj.__qualname__,
                    "__kwdefaults__": obj.__kwdefaults__,
                    "__doc__": obj.__doc__,
                    "__annotations__": obj.__annotations__,
                    "__module__": obj.__module__,
                }
                args = (obj.__code__, ns, obj.__name__, obj.__defaults__, obj.__closure__)
                return types.FunctionType, args, (obj.__dict__ or None, attrs)
            return super().reducer_override(obj)

    return Pickler(file, protocol=5)


def make_unpickler(file, ns):
    class Unpickler(pickle.Unpickler):
        def persistent_load(self, pid):
            if pid == USER_NS:
                return ns
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")

    return Unpickler(file)


def importable(module):
    import importlib.util

    name = getattr(module, "__name__", None)
    if not isinstance(name, str) or name == "__main__" or sys.modules.get(name) is not module:
        return None
    try:
        return name if importlib.util.find_spec(name) is not None else None
    except (ImportError, ValueError):
        return None


def save(params):
    from IPython import get_ipython

    shell = get_ipython()
    ns = shell.user_global_ns
    hidden = shell.user_ns_hidden
    directory = params["dir"]
    started = time.monotonic()
    deadline = started + params["seconds"]
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory, exist_ok=True)
    variables, imports, lost = [], {}, []
    used = 0
    for n, (name, value) in enumerate(list(shell.user_ns.items())):
        if name.startswith("_") or name in SKIP:
            continue
        if name in hidden and hidden[name] is value:
            continue  # put there by IPython or the start-up code, not by the user
        if isinstance(value, types.ModuleType):
            module = importable(value)
            if module is None:
                lost.append({"name": name, "why": "module that cannot be imported again"})
            else:
                imports[name] = module
            continue
        why = unsaveable(value)
        if why is None and time.monotonic() > deadline:
            why = "time cap"
        if why is not None:
            lost.append({"name": name, "why": why})
            continue
        writer = PartWriter(
            directory, f"v{n}", params["part_bytes"], params["max_bytes"] - used, deadline
        )
        try:
            make_pickler(writer, ns).dump(value)
            writer.close()
        except Exception as exc:
            writer.discard()
            lost.append({"name": name, "why": reason(exc)})
            continue
        used += writer.size
        variables.append({"name": name, "stem": f"v{n}", "parts": writer.parts})
    manifest = {"version": 1, "variables": variables, "imports": imports, "lost": lost}
    temp = os.path.join(directory, MANIFEST + ".part")
    with open(temp, "w") as f:
        json.dump(manifest, f)
    os.replace(temp, os.path.join(directory, MANIFEST))
    report(
        {
            "saved": [v["name"] for v in variables],
            "imports": sorted(imports),
            "lost": lost,
            "bytes": used,
            "seconds": round(time.monotonic() - started, 3),
        }
    )


def restore(params):
    import importlib

    from IPython import get_ipython

    shell = get_ipython()
    ns = shell.user_global_ns
    directory = params["dir"]
    started = time.monotonic()
    deadline = started + params["seconds"]
    with open(os.path.join(directory, MANIFEST)) as f:
        manifest = json.load(f)
    imports, variables = manifest["imports"], manifest["variables"]
    report({"plan": [*imports, *(v["name"] for v in variables)]})
    restored, lost = [], list(manifest["lost"])
    for name, module in imports.items():
        try:
            shell.user_ns[name] = importlib.import_module(module)
            restored.append(name)
        except Exception as exc:
            lost.append({"name": name, "why": f"import failed: {type(exc).__name__}: {exc}"})
    for variable in variables:
        name = variable["name"]
        if time.monotonic() > deadline:
            lost.append({"name": name, "why": "time cap"})
            continue
        reader = io.BufferedReader(PartReader(directory, variable["stem"], variable["parts"]))
        try:
            shell.user_ns[name] = make_unpickler(reader, ns).load()
            restored.append(name)
        except Exception as exc:
            lost.append({"name": name, "why": f"restore failed: {type(exc).__name__}: {exc}"})
        finally:
            reader.close()
    shutil.rmtree(directory, ignore_errors=True)
    report(
        {
            "restored": restored,
            "lost": [{"name": str(x["name"]), "why": str(x["why"])[:200]} for x in lost],
            "seconds": round(time.monotonic() - started, 3),
        }
    )
