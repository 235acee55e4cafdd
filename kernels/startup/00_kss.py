# Kernel start-up code, run in every kernel by IPython's `exec_files`, in the user namespace.
#
# Defines exactly two names for the user's code:
#   load_file(name, **kwargs)  a DataFrame for CSV/TSV/Excel/JSON/Parquet, a str for text,
#                              a PIL image for images; the type comes from the extension and
#                              the first bytes; kwargs go to the pandas reader.
#   FILES                      the session's files in the current directory, re-read on
#                              every access (the kernel may chdir into its work dir later).
#
# Everything else lives inside `_kss_install`, so no helper or import is left behind; there
# is deliberately no module docstring (it would overwrite the namespace's `__doc__`) and no
# `from __future__` import (it would leave `annotations` behind). pandas and PIL are imported
# on first use so kernel start stays fast.


def _kss_install():
    import csv
    import json
    import os
    import zipfile

    max_listed = 10_000
    head_bytes = 64 * 1024
    image_exts = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".ico"}
    excel_exts = {".xlsx", ".xlsm", ".xls"}
    parquet_exts = {".parquet", ".pq"}
    text_exts = {".txt", ".md", ".log", ".py", ".html", ".xml", ".yaml", ".yml", ".ini", ".sql"}
    image_magic = (
        b"\x89PNG\r\n\x1a\n",
        b"\xff\xd8\xff",
        b"GIF87a",
        b"GIF89a",
        b"BM",
        b"II*\x00",
        b"MM\x00*",
    )

    def list_names(top):
        names = []
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            rel = os.path.relpath(dirpath, top)
            for entry in filenames:
                if entry.startswith("."):
                    continue
                path = os.path.join(dirpath, entry)
                if os.path.islink(path) or not os.path.isfile(path):
                    continue
                names.append(entry if rel == "." else os.path.join(rel, entry))
                if len(names) >= max_listed:
                    return sorted(names)
        return sorted(names)

    def human(size):
        for unit in ("B", "KB", "MB", "GB"):
            if size < 1024 or unit == "GB":
                return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
            size /= 1024
        return str(size)

    class Files:
        """The session's files (names relative to the current directory), read afresh on
        every access. Load one with `load_file(name)`."""

        def _names(self):
            return list_names(os.getcwd())

        def __iter__(self):
            return iter(self._names())

        def __len__(self):
            return len(self._names())

        def __getitem__(self, index):
            return self._names()[index]

        def __contains__(self, name):
            return os.fspath(name) in self._names()

        def __eq__(self, other):
            return (
                self._names() == list(other) if isinstance(other, list | tuple) else NotImplemented
            )

        __hash__ = None

        def __repr__(self):
            cwd = os.getcwd()
            names = self._names()
            if not names:
                return f"FILES: no files in {cwd} yet"
            sizes = {}
            for name in names:
                try:
                    sizes[name] = human(os.path.getsize(os.path.join(cwd, name)))
                except OSError:
                    sizes[name] = "?"
            width = max(len(n) for n in names)
            lines = [f"  {n.ljust(width)}  {sizes[n]:>9}" for n in names]
            noun = "file" if len(names) == 1 else "files"
            return "\n".join([f"FILES: {len(names)} {noun} in {cwd}", *lines])

        def _repr_pretty_(self, printer, cycle):
            printer.text(repr(self))

    def read_head(path):
        with open(path, "rb") as f:
            return f.read(head_bytes)

    def encoding_of(head):
        if head.startswith(b"\xef\xbb\xbf"):
            return "utf-8-sig"
        if head.startswith((b"\xff\xfe", b"\xfe\xff")):
            return "utf-16"
        try:
            head.decode("utf-8")  # a cut multi-byte sequence at the end is still UTF-8
        except UnicodeDecodeError as exc:
            if exc.start < len(head) - 3:
                try:
                    head.decode("cp1252")
                except UnicodeDecodeError:
                    return "latin-1"
                return "cp1252"
        return "utf-8"

    def is_text(head):
        return b"\x00" not in head or head.startswith((b"\xff\xfe", b"\xfe\xff"))

    def is_excel_zip(path):
        try:
            with zipfile.ZipFile(path) as z:
                return any(n.startswith("xl/") for n in z.namelist())
        except (zipfile.BadZipFile, OSError):
            return False

    def delimiter(text):
        lines = [line for line in text.splitlines()[:20] if line.strip()]
        if not lines:
            return ","
        counts = {d: lines[0].count(d) for d in (",", "\t", ";", "|")}
        best = max(counts, key=counts.get)
        return best if counts[best] else ","

    def looks_tabular(text):
        try:
            dialect = csv.Sniffer().sniff(text[:8192], delimiters=",\t;|")
        except csv.Error:
            return False
        lines = [line for line in text.splitlines()[:20] if line.strip()]
        counts = {line.count(dialect.delimiter) for line in lines}
        return len(lines) >= 2 and len(counts) == 1 and counts != {0}

    def kind_of(path, head):
        ext = os.path.splitext(path)[1].lower()
        if head.startswith(b"PAR1"):
            return "parquet"
        if head.startswith(b"PK\x03\x04") and (ext in excel_exts or is_excel_zip(path)):
            return "excel"
        if head.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
            return "excel"
        if head.startswith(image_magic) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
            return "image"
        if ext in parquet_exts:
            return "parquet"
        if ext in excel_exts:
            return "excel"
        if ext in image_exts:
            return "image"
        if not is_text(head):
            return None
        if ext == ".csv":
            return "csv"
        if ext in (".tsv", ".tab"):
            return "tsv"
        if ext == ".json":
            return "json"
        if ext in (".jsonl", ".ndjson"):
            return "jsonl"
        if ext in text_exts:
            return "text"
        text = head.decode(encoding_of(head), errors="replace").lstrip()
        if text.startswith(("{", "[")):
            try:
                json.loads(text)
                return "json"
            except ValueError:
                pass
        return "csv" if looks_tabular(text) else "text"

    def read_json(path, encoding, kwargs):
        import pandas as pd

        try:
            return pd.read_json(path, encoding=encoding, **kwargs)
        except ValueError:
            if kwargs:
                raise
        # Not a table as it stands (a dict of scalars, nested records): flatten it.
        with open(path, encoding=encoding) as f:
            data = json.load(f)
        return pd.json_normalize(data if isinstance(data, list) else [data])

    def load_file(name, **kwargs):
        """Load a file of the session: a pandas DataFrame for CSV/TSV/Excel/JSON/Parquet,
        text for text files, a PIL image for images. Extra keyword arguments go to the
        pandas reader (e.g. `sheet_name=`, `sep=`). The type is detected from the file's
        extension and its first bytes. `FILES` lists what there is."""
        path = os.fspath(name)
        if not os.path.isfile(path):
            known = ", ".join(list_names(os.getcwd())[:20]) or "none"
            raise FileNotFoundError(f"no file {path!r} in {os.getcwd()} (files: {known})")
        head = read_head(path)
        kind = kind_of(path, head)
        if kind is None:
            raise ValueError(
                f"load_file does not know how to load {path!r} (binary, unknown type); "
                f"read its bytes with open({path!r}, 'rb')"
            )
        if kind == "image":
            from PIL import Image

            image = Image.open(path)
            image.load()
            return image
        if kind in ("csv", "tsv", "text", "json", "jsonl"):
            encoding = encoding_of(head)
        if kind == "text":
            with open(path, encoding=encoding, errors="replace") as f:
                return f.read()
        import pandas as pd

        if kind == "parquet":
            return pd.read_parquet(path, **kwargs)
        if kind == "excel":
            return pd.read_excel(path, **kwargs)
        if kind == "json":
            return read_json(path, encoding, kwargs)
        if kind == "jsonl":
            return pd.read_json(path, lines=True, encoding=encoding, **kwargs)
        sample = head.decode(encoding, errors="replace")
        options = {"sep": "\t" if kind == "tsv" else delimiter(sample), "encoding": encoding}
        options.update(kwargs)
        return pd.read_csv(path, **options)

    load_file.__qualname__ = "load_file"
    Files.__qualname__ = Files.__name__ = "Files"
    return load_file, Files()


load_file, FILES = _kss_install()
del _kss_install
