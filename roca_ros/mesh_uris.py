"""Mesh URIs that RViz can load where it runs, not only on the node's machine.

A ``file://`` URI into the node's cache (``~/.cache/roca/cad_library/...``) means nothing to
RViz on a laptop, in a container or under another user. Two ways out:

* ``mesh_uri_prefix``: ``URI_PREFIX`` or ``LOCAL_DIR=URI_PREFIX``. A mesh under ``LOCAL_DIR``
  (by default the folder that holds all of the database's meshes) is published as
  ``URI_PREFIX/<path relative to LOCAL_DIR>``, e.g. ``package://my_cad/meshes/chair/chair_000.obj``
  for meshes installed in a package's share directory, or ``http://robot:8000/chair/chair_000.obj``
  for a folder served over HTTP (RViz's resource_retriever loads both).
* Meshes that already lie in an installed package's share directory
  (``<prefix>/share/<package>/...``, as the ament index knows it) are published as
  ``package://<package>/...`` without any setting.

Everything else stays ``file://``.
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Optional, Sequence
from urllib.parse import quote


class MeshUriError(ValueError):
    """A mesh_uri_prefix that cannot be used; the message says why."""


def parse_prefix(value: str) -> tuple[Optional[str], str]:
    """``mesh_uri_prefix`` -> (local directory or None for "the meshes' folder", URI prefix)."""
    local, _, prefix = value.rpartition("=") if "=" in value else ("", "", value)
    if "://" not in prefix:
        raise MeshUriError(f"mesh_uri_prefix {value!r} needs a URI prefix with a scheme "
                           "(package://PKG/DIR, http://HOST/DIR, file:///DIR)")
    if "=" in value and not os.path.isabs(local):
        raise MeshUriError(f"mesh_uri_prefix {value!r}: the local directory before '=' must be absolute")
    return (local or None), prefix.rstrip("/")


@lru_cache(maxsize=4096)
def package_uri(path: str) -> Optional[str]:
    """``package://PKG/REST`` when ``path`` lies in the share directory of an installed package PKG."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    except ImportError:
        return None
    parts = Path(path).parts
    for i in range(len(parts) - 2, 0, -1):
        if parts[i] != "share":
            continue
        package = parts[i + 1]
        try:
            share = Path(get_package_share_directory(package)).resolve()
        except (PackageNotFoundError, ValueError, LookupError):
            continue
        if share == Path(*parts[: i + 2]):
            rest = Path(*parts[i + 2:]).as_posix() if len(parts) > i + 2 else ""
            return f"package://{package}/{quote(rest)}"
    return None


class MeshUris:
    """Callable: local mesh path -> the URI to publish (see the module docstring)."""

    def __init__(self, prefix: str = "", mesh_paths: Sequence[str] = ()) -> None:
        self._local: Optional[Path] = None
        self._prefix = ""
        if prefix:
            local, self._prefix = parse_prefix(prefix)
            if local is None:
                resolved = [str(Path(p).expanduser().resolve()) for p in mesh_paths if p]
                local = os.path.commonpath([os.path.dirname(p) for p in resolved]) if resolved else "/"
            self._local = Path(local).expanduser().resolve()
        self._cache: dict[str, str] = {}

    def __call__(self, path: Optional[str]) -> str:
        if not path:
            return ""
        uri = self._cache.get(path)
        if uri is None:
            uri = self._cache[path] = self._uri(Path(path).expanduser().resolve())
        return uri

    def _uri(self, resolved: Path) -> str:
        if self._local is not None:
            try:
                relative = resolved.relative_to(self._local)
            except ValueError:
                pass
            else:
                return f"{self._prefix}/{quote(relative.as_posix())}"
        return package_uri(str(resolved)) or resolved.as_uri()
