"""Deleting a loaded BATCH file the way it was read.

The loaders read a BATCH file through `batch_config.storage`, whose `params` carry an object
store's credentials and endpoint (MinIO, R2). A file deleted through a bare URL lost them: the
delete failed after the commit, and every re-run loaded the batch again and failed the same way.
"""

from __future__ import annotations

import typing as t

import fsspec

if t.TYPE_CHECKING:
    from singer_sdk.helpers._batch import StorageTarget


def delete_batch_file(url: str, storage: StorageTarget | None) -> None:
    """Delete one BATCH file with the storage settings it was read with (if any)."""
    params = (storage.params if storage is not None else None) or {}
    fs, path = fsspec.core.url_to_fs(url, **params)
    fs.rm(path)
