"""Saving and loading models: one .npz file, written atomically, read with checks."""

from __future__ import annotations

import json
import os
import tempfile
import zipfile

import numpy as np

from . import optimizers

FORMAT = "rnn_fast.model"
VERSION = 1


def save(path, config, params, optimizer):
    """Write config, parameters and optimizer state; replace ``path`` only when complete."""
    arrays = {f"param.{name}": value for name, value in params.items()}
    meta = {"format": FORMAT, "version": VERSION, "config": config, "optimizer": None}
    if optimizer is not None:
        meta["optimizer"] = {"config": optimizer.config(),
                             "step": int(optimizer.state["step"]) if optimizer.state else 0}
        if optimizer.state is not None:
            arrays["optimizer.slots"] = optimizer.state["slots"]
    arrays["meta"] = np.array(json.dumps(meta))

    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".rnn_fast-", suffix=".npz.tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def load(path):
    """Read (config, params, optimizer or None) from a file written by ``save``."""
    try:
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as f:
            arrays = {key: f[key] for key in f.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(f"{path} is not a readable rnn_fast model file ({exc})") from exc
    try:
        meta = json.loads(str(arrays.pop("meta")))
    except (KeyError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not an rnn_fast model file: no valid 'meta' entry") from exc
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not an rnn_fast model file (format {meta.get('format')!r})")
    if meta.get("version") != VERSION:
        raise ValueError(f"{path} has format version {meta.get('version')}; this rnn_fast "
                         f"reads version {VERSION}")
    params = {key.split(".", 1)[1]: value for key, value in arrays.items()
              if key.startswith("param.")}
    optimizer = None
    if meta["optimizer"] is not None:
        optimizer = optimizers.from_config(meta["optimizer"]["config"])
        if "optimizer.slots" in arrays:
            optimizer.state = {"step": int(meta["optimizer"]["step"]),
                               "slots": np.array(arrays["optimizer.slots"])}
    return meta["config"], params, optimizer
