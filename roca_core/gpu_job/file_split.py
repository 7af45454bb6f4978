"""Split a file into parts no larger than a limit, and join them back with a checksum.

The GPU machine returns only files of at most 16 MB, and a model can be larger. Parts are
byte ranges (``NAME.part000``, ...), so ``cat NAME.part* > NAME`` also joins them; the
manifest ``NAME.parts.json`` holds the sizes and SHA-256 sums that :func:`join` checks::

    python -m roca_core.gpu_job.file_split join OUT/model/roca_gpu.safetensors.parts.json
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

MANIFEST_SUFFIX = ".parts.json"
_CHUNK = 1 << 20


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def split_file(path: "str | Path", out_dir: "str | Path", max_bytes: int) -> Path:
    """Copy ``path`` into ``out_dir`` as parts of at most ``max_bytes`` (one part when it
    fits, under its own name); -> the manifest path."""
    path, out_dir = Path(path), Path(out_dir)
    if max_bytes < 1:
        raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
    out_dir.mkdir(parents=True, exist_ok=True)
    size = path.stat().st_size
    parts = []
    if size <= max_bytes:
        shutil.copyfile(path, out_dir / path.name)
        parts.append({"name": path.name, "size": size, "sha256": _sha256(out_dir / path.name)})
    else:
        with open(path, "rb") as src:
            index = 0
            while True:
                data = src.read(max_bytes)
                if not data:
                    break
                name = f"{path.name}.part{index:03d}"
                (out_dir / name).write_bytes(data)
                parts.append({"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
                index += 1
    manifest = {"file": path.name, "size": size, "sha256": _sha256(path), "parts": parts,
                "join": f"python -m roca_core.gpu_job.file_split join {path.name}{MANIFEST_SUFFIX}"}
    out = out_dir / f"{path.name}{MANIFEST_SUFFIX}"
    out.write_text(json.dumps(manifest, indent=1))
    return out


def join_file(manifest_path: "str | Path", out: "str | Path | None" = None) -> Path:
    """Rebuild the file a manifest describes (next to it unless ``out``); checks every sum."""
    manifest_path = Path(manifest_path)
    m = json.loads(manifest_path.read_text())
    base = manifest_path.parent
    out = Path(out) if out is not None else base / m["file"]
    if len(m["parts"]) == 1 and m["parts"][0]["name"] == m["file"] and out == base / m["file"]:
        target = out  # stored whole: only verify
    else:
        tmp = out.with_name(out.name + ".joining")
        with open(tmp, "wb") as dst:
            for part in m["parts"]:
                data = (base / part["name"]).read_bytes()
                if len(data) != part["size"] or hashlib.sha256(data).hexdigest() != part["sha256"]:
                    tmp.unlink(missing_ok=True)
                    raise ValueError(f"part {part['name']} is damaged (size or SHA-256 differs)")
                dst.write(data)
        tmp.replace(out)
        target = out
    if target.stat().st_size != m["size"] or _sha256(target) != m["sha256"]:
        raise ValueError(f"{target}: size or SHA-256 differs from {manifest_path.name}")
    return target


def main(argv: "list[str] | None" = None) -> int:
    p = argparse.ArgumentParser(description="split a file into parts / join them (checked)")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("split")
    s.add_argument("file")
    s.add_argument("out_dir")
    s.add_argument("--max-mb", type=float, default=15.0)
    j = sub.add_parser("join")
    j.add_argument("manifest")
    j.add_argument("--out", default=None)
    args = p.parse_args(argv)
    try:
        if args.cmd == "split":
            print(split_file(args.file, args.out_dir, int(args.max_mb * 2 ** 20)))
        else:
            print(join_file(args.manifest, args.out))
    except (OSError, ValueError, KeyError) as exc:
        print(f"file_split: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
