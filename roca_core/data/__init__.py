"""Data of roca: CAD libraries and databases, the synthetic scene renderer and the loader.

* :mod:`.cad_library` - procedural CAD models (the embedded default library);
* :mod:`.cad_folder` - user mesh folders with a manifest;
* :mod:`.cad_database` - voxel grids, ids, symmetries, embeddings, per-class faiss lookup;
* :mod:`.dataset_writer` / :mod:`.renderer` / :mod:`.scene_sampler` - `roca-make-dataset`;
* :mod:`.loader` - :class:`RocaDataset` for synthetic and ScanNet25k/Scan2CAD data.

Submodules are imported on demand (the renderer needs OpenGL, the loader torch).
"""
