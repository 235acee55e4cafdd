"""The allowlist: which packages a session may ask for (their dependencies come with them).

One requirement name a line (`#` starts a comment); names compare as PEP 503 normalises
them, so `scikit_image`, `Scikit-Image` and `scikit-image` are one package.
"""

from __future__ import annotations

from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from .errors import PackageRefused

DEFAULT = Path(__file__).with_name("allowlist.txt")


class Allowlist:
    def __init__(self, names: set[str], source: str) -> None:
        self.names = {canonicalize_name(n) for n in names}
        self.source = source

    @classmethod
    def read(cls, path: Path | None = None) -> Allowlist:
        path = path or DEFAULT
        names = set()
        for line in path.read_text().splitlines():
            name = line.split("#", 1)[0].strip()
            if name:
                names.add(name)
        return cls(names, str(path))

    def check(self, requirements: list[str]) -> list[Requirement]:
        """The requirements, parsed; PackageRefused naming the first one not allowed."""
        parsed = []
        for text in requirements:
            try:
                requirement = Requirement(text)
            except InvalidRequirement as exc:
                raise PackageRefused(f"{text[:80]!r} is not a requirement: {exc}") from None
            if requirement.url:
                raise PackageRefused(f"{requirement.name}: installs from a URL are not allowed")
            if canonicalize_name(requirement.name) not in self.names:
                raise PackageRefused(
                    f"{requirement.name!r} is not on this server's package allowlist; an "
                    f"operator allows it by adding its name to {self.source} "
                    "(--package-allowlist)"
                )
            parsed.append(requirement)
        return parsed
