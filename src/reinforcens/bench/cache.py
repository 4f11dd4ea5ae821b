"""The preset cache: each simulator preset is simulated and prepared once, into a cache folder.

The folder of a preset and seed is ``CACHE/PRESET-seedSEED`` with the simulation in ``sim/`` and the
prepared dataset in ``prep/``. A cached simulation made with other preset settings, or a dataset
prepared by an earlier version of the package, is made again.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from reinforcens.bench.console import note

#: prepare settings per simulator preset: (min_sessions, list_length)
PREPARE_SETTINGS: dict[str, tuple[int, int]] = {
    "tiny": (4, 40),
    "small": (6, 160),
    "zhihu": (6, 160),
    "beibei": (4, 40),
}


def default_cache() -> Path:
    """The default cache folder.

    Returns
    -------
    Path
        ``$XDG_CACHE_HOME/reinforcens/bench`` (``~/.cache/reinforcens/bench`` by default).
    """
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "reinforcens" / "bench"


def preset_paths(preset: str, cache: Path, seed: int) -> tuple[Path, Path]:
    """The folders of a preset in the cache.

    Parameters
    ----------
    preset
        A simulator preset (a key of :data:`PREPARE_SETTINGS`).
    cache
        The cache folder.
    seed
        The simulation seed.

    Returns
    -------
    tuple of Path
        The simulation folder and the prepared-dataset folder.
    """
    base = cache / f"{preset}-seed{seed}"
    return base / "sim", base / "prep"


def prepare_command(preset: str, sim_dir: Path, out: Path) -> list[str]:
    """The ``reinforcens prepare`` command line of a preset, run with this interpreter.

    Parameters
    ----------
    preset
        A simulator preset (a key of :data:`PREPARE_SETTINGS`).
    sim_dir
        The preset's simulation folder (holding ``log.parquet``).
    out
        The folder to prepare into (overwritten).

    Returns
    -------
    list of str
        The command's arguments, for :mod:`subprocess`.
    """
    min_sessions, list_length = PREPARE_SETTINGS[preset]
    return [
        sys.executable,
        "-m",
        "reinforcens",
        "prepare",
        "--input",
        str(sim_dir / "log.parquet"),
        "--out",
        str(out),
        "--min-sessions",
        str(min_sessions),
        "--list-length",
        str(list_length),
        "--force",
    ]


def ensure_prepared(preset: str, cache: Path, seed: int = 0, quiet: bool = False) -> Path:
    """Simulate and prepare ``preset`` unless the cache holds it already.

    Parameters
    ----------
    preset
        A simulator preset (a key of :data:`PREPARE_SETTINGS`).
    cache
        The cache folder.
    seed
        The simulation and preparation seed.
    quiet
        Print no progress on stderr.

    Returns
    -------
    Path
        The prepared dataset's folder.
    """
    from reinforcens.data.formats import read_log
    from reinforcens.data.prepared import is_current_prepared_dir, is_prepared_dir, prepare, save_prepared
    from reinforcens.data.simulate import PRESETS, read_metadata, write_simulation

    sim_dir, prep_dir = preset_paths(preset, cache, seed)
    meta = read_metadata(sim_dir)
    current = PRESETS[preset].model_dump(mode="json")
    if meta is not None and meta.get("config") != current:
        note(f"the cached {preset!r} simulation was made with other settings: regenerating", quiet)
        shutil.rmtree(prep_dir, ignore_errors=True)
        meta = None
    if meta is None:
        note(f"simulating preset {preset!r} into {sim_dir} (once)", quiet)
        write_simulation(sim_dir, preset, seed)
    if is_prepared_dir(prep_dir) and not is_current_prepared_dir(prep_dir):
        note(f"the cached {preset!r} dataset was prepared by an earlier version: preparing it again", quiet)
        shutil.rmtree(prep_dir)
    if not is_prepared_dir(prep_dir):
        note(f"preparing {preset!r} into {prep_dir} (once)", quiet)
        min_sessions, list_length = PREPARE_SETTINGS[preset]
        data = prepare(
            read_log(sim_dir / "log.parquet", "table"),
            min_sessions=min_sessions,
            list_length=list_length,
            seed=seed,
        )
        save_prepared(
            data, prep_dir, force=True, extra_files={"ground_truth.npz": sim_dir / "ground_truth.npz"}
        )
    return prep_dir
