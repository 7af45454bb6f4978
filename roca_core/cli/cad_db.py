"""`roca-cad-db`: build and inspect CAD databases (no retraining needed for new meshes).

    roca-cad-db build --meshes DIR --out DB [--checkpoint C]   # a folder of your meshes
    roca-cad-db build --meshes embedded --out DB [--checkpoint C]  # the procedural library
    roca-cad-db embed DB --checkpoint C                         # (re)embed with a checkpoint
    roca-cad-db info DB

The mesh folder format (manifest with class / id / symmetry per file) is described in
:mod:`roca_core.data.cad_folder`; the database format in :mod:`roca_core.data.cad_database`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from roca_core.classes import CLASS_NAMES


def _build(args: argparse.Namespace) -> int:
    from roca_core.data.cad_database import build_database_from_models, embed_database
    from roca_core.data.cad_folder import export_canonical_meshes, load_cad_folder
    from roca_core.data.cad_library import embedded_cad_library_dir, load_library

    class_names = tuple(args.classes.split(",")) if args.classes else CLASS_NAMES
    if args.meshes == "embedded":
        models = load_library(embedded_cad_library_dir(args.seed, args.variants))
    else:
        result = load_cad_folder(args.meshes, class_names)
        models = result.models
        if result.skipped:
            print(f"skipped {len(result.skipped)} mesh(es):", file=sys.stderr)
            for file, reason in result.skipped:
                print(f"  {file}: {reason}", file=sys.stderr)
    if not models:
        print(f"error: no usable meshes in {args.meshes}", file=sys.stderr)
        return 2
    out = Path(args.out)
    export_canonical_meshes(models, out / "meshes")
    db = build_database_from_models(models, class_names)
    if args.checkpoint:
        fp = embed_database(db, args.checkpoint, device=args.device)
        print(f"embedded {len(db)} models with checkpoint {args.checkpoint} (fingerprint {fp})")
    db.save(out)
    print(f"wrote {out}: {db}")
    return 0


def _embed(args: argparse.Namespace) -> int:
    from roca_core.data.cad_database import CadDatabase, embed_database

    db = CadDatabase.load(args.db)
    fp = embed_database(db, args.checkpoint, device=args.device)
    db.save(args.db)
    print(f"embedded {len(db)} models (fingerprint {fp}) into {args.db}")
    return 0


def _info(args: argparse.Namespace) -> int:
    from roca_core.data.cad_database import CadDatabase

    db = CadDatabase.load(args.db)
    print(f"CAD database {args.db} (format version {db.FORMAT_VERSION})")
    print(f"  models: {len(db)}")
    for cls, n in db.class_counts().items():
        print(f"    {cls:10s} {n}")
    if db.embeddings is None:
        print("  embeddings: none (build with --checkpoint or run `roca-cad-db embed`)")
    else:
        print(f"  embeddings: {db.embeddings.shape[1]}-d, source {db.embedding_source}")
    if args.verbose:
        for i, cid in enumerate(db.ids):
            print(f"  {cid:24s} {db.model_classes[i]:10s} {db.symmetries[i].tag:22s} "
                  f"{int(db.voxels[i].sum()):5d} cells  {db.mesh_paths[i]}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="roca-cad-db", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="voxelise a mesh folder (or the embedded library) into a database")
    b.add_argument("--meshes", required=True, help="mesh folder with a manifest, or 'embedded'")
    b.add_argument("--out", required=True, help="database directory to write")
    b.add_argument("--checkpoint", help="trained checkpoint whose CAD encoder embeds the grids")
    b.add_argument("--device", default="cpu")
    b.add_argument("--classes", help="comma-separated class list (default: the 9 ROCA classes)")
    b.add_argument("--seed", type=int, default=0, help="seed of the embedded library")
    b.add_argument("--variants", type=int, default=6, help="models per class of the embedded library")
    e = sub.add_parser("embed", help="(re)compute embeddings of an existing database")
    e.add_argument("db")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--device", default="cpu")
    i = sub.add_parser("info", help="summarise a database")
    i.add_argument("db")
    i.add_argument("-v", "--verbose", action="store_true", help="list every model")
    args = p.parse_args(argv)
    try:
        return {"build": _build, "embed": _embed, "info": _info}[args.command](args)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
