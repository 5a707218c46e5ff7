"""Saving and loading models: one .npz file, written atomically, read with checks."""

from __future__ import annotations

import json
import os
import secrets
import stat
import zipfile

import numpy as np

from . import optimizers

FORMAT = "rnn_fast.model"
ZIP_MAGIC = b"PK\x03\x04"  # the first bytes of every .npz (a zip archive)
VERSION = 1


class _NotNpz(Exception):
    """The file does not start like a zip archive."""


def save(path, config, params, optimizer, cell="elman", extra_meta=None, extra_arrays=None):
    """Write the cell, config, parameters and optimizer state; replace ``path`` only when
    complete.

    ``extra_meta`` (JSON-able) and ``extra_arrays`` go in beside them (a checkpoint's fit
    state: ``load`` ignores them, ``load_fit_state`` reads them back)."""
    arrays = {f"param.{name}": value for name, value in params.items()}
    arrays.update(extra_arrays or {})
    meta = {"format": FORMAT, "version": VERSION, "cell": cell, "config": config,
            "optimizer": None, **(extra_meta or {})}
    if optimizer is not None:
        meta["optimizer"] = {"config": optimizer.config(),
                             "step": int(optimizer.state["step"]) if optimizer.state else 0}
        if optimizer.state is not None:
            arrays["optimizer.slots"] = optimizer.state["slots"]
    arrays["meta"] = np.array(json.dumps(meta))

    target = destination(path)
    fd, tmp = _create_beside(target, path)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        _copy_mode(target, tmp)
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise


def destination(path):
    """The file that saving to ``path`` writes: ``path`` itself, or the file a symbolic
    link there leads to (a link stays a link, as with ``open(path, "wb")``).

    Refuses, touching nothing, a path that exists and is not a regular file (a
    directory, a device such as /dev/null, a fifo, a socket): the file is written beside
    it and renamed over it, which would replace such a thing instead of writing to it.
    """
    given = os.fspath(path)
    target = os.path.realpath(given)  # every link followed, also in the directories
    kind = not_a_regular_file(target, given)
    if kind is not None:
        link = f" (a link to {target})" if target != os.path.abspath(given) else ""
        raise ValueError(f"cannot save to {given}{link}: it is {kind}; a model is written "
                         "to a regular file or a new path")
    return target


def not_a_regular_file(target, given):
    """What ``target`` (a path with no links left) is, if it exists and is not a regular
    file: "a directory", "a character device", ...; None for a file or a new path.
    Errors name ``given``, the path the user gave."""
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        return None
    except OSError as exc:  # a loop of links, a directory that is not one, no permission
        raise OSError(exc.errno, f"cannot write {os.fspath(given)}: {exc.strerror}") from None
    kinds = {stat.S_ISREG: None, stat.S_ISDIR: "a directory", stat.S_ISCHR: "a character device",
             stat.S_ISBLK: "a block device", stat.S_ISFIFO: "a fifo", stat.S_ISSOCK: "a socket"}
    return next((kind for test, kind in kinds.items() if test(mode)), "not a regular file")


def _create_beside(path, given):
    """A new file in ``path``'s directory (so renaming it over ``path`` is atomic), made
    with the permissions a plain ``open(path, "wb")`` would give (mkstemp's are 0o600).
    Errors name ``given``, the path the caller gave."""
    directory, name = os.path.split(path)
    for _ in range(100):
        tmp = os.path.join(directory, f".rnn_fast-{name}-{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue
        except OSError as exc:  # the message would name the temporary file
            raise type(exc)(exc.errno, f"cannot write {os.fspath(given)}: {exc.strerror}"
                            ) from None
    raise FileExistsError(f"could not create a temporary file beside {os.fspath(given)}")


def _copy_mode(path, tmp):
    """Keep the permissions of the file being replaced, as overwriting it in place would."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    os.chmod(tmp, mode & 0o7777)


def load(path, check_config):
    """Read (cell, config, params, optimizer or None) from a file written by ``save``.

    ``cell`` is "elman" for files written before the gated cells (they have no entry).
    ``check_config(path, cell, config)`` raises ValueError unless the cell is one the
    caller knows and the config a dict of its constructor's arguments (with a dtype).

    Anything but a complete, compatible file raises ValueError naming it (a missing file:
    FileNotFoundError); none of the messages suggests unpickling. The model's
    constructor then checks the parameters' shapes.
    """
    try:
        with open(path, "rb") as fh:
            if fh.read(len(ZIP_MAGIC)) != ZIP_MAGIC:  # np.load would read other formats,
                raise _NotNpz  # and advise unpickling some: a model is always an .npz
            fh.seek(0)
            with np.load(fh, allow_pickle=False) as f:
                arrays = {key: f[key] for key in f.files}
    except _NotNpz:
        raise ValueError(f"{path} is not a readable rnn_fast model file (not an .npz "
                         "archive)") from None
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, NotImplementedError,
            RuntimeError) as exc:  # zipfile's errors for damaged flags: the last two
        if isinstance(exc, FileNotFoundError):
            raise
        if "pickle" in str(exc):  # an object array inside: never advise loading it unsafely
            raise ValueError(f"{path} is not an rnn_fast model file (it holds Python "
                             "objects, which rnn_fast never writes)") from None
        raise ValueError(f"{path} is not a readable rnn_fast model file ({exc})") from exc
    try:
        meta = json.loads(str(arrays.pop("meta")))
    except (KeyError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not an rnn_fast model file: no valid 'meta' entry") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise ValueError(f"{path} is not an rnn_fast model file (format {found!r})")
    if meta.get("version") != VERSION:
        raise ValueError(f"{path} has format version {meta.get('version')}; this rnn_fast "
                         f"reads version {VERSION}")
    cell = meta.get("cell", "elman")
    config = meta.get("config")
    check_config(path, cell, config)
    params = {key.split(".", 1)[1]: value for key, value in arrays.items()
              if key.startswith("param.")}
    for name, value in params.items():
        if value.dtype != np.dtype(config["dtype"]):
            raise ValueError(f"{path}: parameter {name} is stored as {value.dtype}, but the "
                             f"model's dtype is {config['dtype']}")
    if "optimizer" not in meta:
        raise ValueError(f"{path} is damaged: it has no 'optimizer' entry")
    return cell, config, params, _load_optimizer(path, meta["optimizer"], arrays, config)


def load_fit_state(path):
    """A checkpoint's fit state: (the JSON entry "fit" or None, its "fit." arrays)."""
    with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as f:
        meta = json.loads(str(f["meta"]))
        arrays = {key: f[key] for key in f.files if key.startswith("fit.")}
    return meta.get("fit"), arrays


def _load_optimizer(path, saved, arrays, config):
    """The optimizer with its state, None if the model had none."""
    if saved is None:
        return None
    try:
        step = saved["step"]
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step {step!r} is not a count")
        optimizer = optimizers.from_config(saved["config"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"{path} holds a damaged optimizer entry ({exc!r})") from exc
    if "optimizer.slots" not in arrays:
        if step:
            raise ValueError(f"{path} says the optimizer took {step} steps but holds no state")
        return optimizer
    slots = np.array(arrays["optimizer.slots"])
    if slots.dtype != np.dtype(config["dtype"]) or slots.ndim != 2 or not np.all(
            np.isfinite(slots)):
        raise ValueError(f"{path} holds a damaged optimizer state ({slots.dtype}, shape "
                         f"{slots.shape}; expected finite {config['dtype']} of 2 dimensions)")
    optimizer.state = {"step": step, "slots": slots}
    return optimizer
