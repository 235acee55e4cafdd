# Kernel start-up code (see 00_kss.py): where output goes, and how much of it is kept.
#
# 1. A thread's output belongs to the execution that started the thread. ipykernel keeps
#    the request an output answers (its "parent") in a ContextVar; a new thread starts with
#    an empty context, so its prints would go to whichever execution runs at that moment.
#    Every thread now runs in a copy of its starter's context, and every task handed to a
#    thread pool in a copy of its submitter's: output made later still names its execution,
#    and the server files it there as late output.
# 2. Text written to stdout/stderr past the server's output cap for one execution (plus a
#    margin, so the server still sees the cut and marks it) is dropped here, before ipykernel
#    buffers it: a print loop cannot fill the kernel's memory with output nobody receives.
#
# Like 00_kss.py it leaves no name behind in the user's namespace.


def _kss_route_outputs():
    import contextvars
    import os
    import sys
    import threading
    from concurrent.futures import ThreadPoolExecutor

    thread_start = threading.Thread.start

    def start(self):
        context = contextvars.copy_context()
        run = self.run
        self.run = lambda: context.run(run)
        return thread_start(self)

    start.__doc__ = thread_start.__doc__
    threading.Thread.start = start

    pool_submit = ThreadPoolExecutor.submit

    def submit(self, fn, /, *args, **kwargs):
        return pool_submit(self, contextvars.copy_context().run, fn, *args, **kwargs)

    submit.__doc__ = pool_submit.__doc__
    ThreadPoolExecutor.submit = submit

    cap = int(os.environ.get("KSS_OUTPUT_CAP_BYTES") or 0)
    if cap <= 0:
        return
    allowance = cap + 64 * 1024
    written = {}  # execution (parent msg_id) -> characters written, the latest few kept
    lock = threading.Lock()

    def capped(stream):
        write = stream.write

        def capped_write(text):
            if not isinstance(text, str):
                return write(text)
            parent = stream.parent_header
            key = parent.get("msg_id", "") if isinstance(parent, dict) else ""
            with lock:
                used = written.pop(key, 0)  # re-inserted last: the newest are kept
                written[key] = used + len(text)
                if len(written) > 64:
                    del written[next(iter(written))]
            room = allowance - used
            if room <= 0:
                return len(text)
            if len(text) > room:
                write(text[:room])
                return len(text)
            return write(text)

        return capped_write

    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "parent_header"):
            stream.write = capped(stream)


_kss_route_outputs()
del _kss_route_outputs
