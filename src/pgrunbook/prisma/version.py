"""Which Prisma version the project runs, read from its files (no Node, no network).

Order, most exact first: ``node_modules/prisma/package.json`` (what ``npx prisma`` runs), then the lock
file (``package-lock.json``, ``pnpm-lock.yaml``, ``yarn.lock``: what CI installs), then the version range
in ``package.json`` (its lowest version). ``prisma`` is looked for first, then ``@prisma/client`` (they are
released together). Folders are searched from the project root upwards, as Node resolves packages, so a
monorepo's root lock file is found from an app's folder.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Found:
    """One value and where it came from, e.g. ``prisma.config.ts: migrations.path``."""

    value: str
    source: str


PACKAGES = ("prisma", "@prisma/client")


def detect_prisma_version(root: Path) -> Found | None:
    """The version and the file it came from, e.g. Found("7.4.2", "package-lock.json"); None when unknown."""
    for folder in (root, *root.parents):
        for reader in (_node_modules, _package_lock, _pnpm_lock, _yarn_lock, _package_json):
            found = reader(folder)
            if found is not None:
                return Found(found.value, found.source.replace(f"{root}/", ""))
        if (folder / ".git").exists():
            break
    return None


def json_object(path: Path) -> dict | None:
    """A JSON file's top-level object (package.json, a lock file), or None when it cannot be read, is
    not JSON or is not an object: the project files are read as Prisma's tools would, never trusted."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _node_modules(folder: Path) -> Found | None:
    for name in PACKAGES:
        path = folder / "node_modules" / name / "package.json"
        data = json_object(path)
        if data and isinstance(data.get("version"), str):
            return Found(data["version"], str(path))
    return None


def _package_lock(folder: Path) -> Found | None:
    path = folder / "package-lock.json"
    data = json_object(path)
    if not data:
        return None
    packages = data.get("packages") or {}
    for name in PACKAGES:
        entry = packages.get(f"node_modules/{name}") or (data.get("dependencies") or {}).get(name)
        if isinstance(entry, dict) and isinstance(entry.get("version"), str):
            return Found(entry["version"], str(path))
    return None


def _pnpm_patterns(quoted: str) -> list[str]:
    # importers: '.': devDependencies: prisma: {specifier: ^7.4.0, version: 7.4.2(typescript@5.6.3)}
    return [
        rf"^\s+'?{quoted}'?:\s*\n\s+specifier:[^\n]*\n\s+version:\s*'?(\d+\.\d+\.\d+[^\s('\"]*)",
        rf"^\s+/?'?{quoted}@(\d+\.\d+\.\d+[^\s('\":]*)",
    ]


def _yarn_patterns(quoted: str) -> list[str]:
    return [rf'^"?{quoted}@[^\n]*:\n(?:\s+[^\n]*\n)*?\s+version:?\s+"?(\d+\.\d+\.\d+[^"\s]*)']


def _text_lock(path: Path, patterns: Callable[[str], list[str]]) -> Found | None:
    """The first Prisma package's version that one of ``patterns`` (given the escaped package name)
    finds in the lock file at ``path``; None when the file is missing or names none."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return None
    for name in PACKAGES:
        for pattern in patterns(re.escape(name)):
            if m := re.search(pattern, text, re.M):
                return Found(m.group(1), str(path))
    return None


def _pnpm_lock(folder: Path) -> Found | None:
    return _text_lock(folder / "pnpm-lock.yaml", _pnpm_patterns)


def _yarn_lock(folder: Path) -> Found | None:
    return _text_lock(folder / "yarn.lock", _yarn_patterns)


def _package_json(folder: Path) -> Found | None:
    path = folder / "package.json"
    data = json_object(path)
    if not data:
        return None
    for name in PACKAGES:
        for section in ("dependencies", "devDependencies"):
            spec = (data.get(section) or {}).get(name)
            if isinstance(spec, str) and re.search(r"\d", spec) and not spec.startswith(("file:", "link:", "git")):
                m = re.search(r"\d+(?:\.\d+){0,2}", spec)
                if m:
                    parts = ([*m.group().split("."), "0", "0"])[:3]
                    return Found(".".join(parts), f"{path} ({section}.{name} {spec!r}, lowest version of the range)")
    return None
