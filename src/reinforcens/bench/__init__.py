"""The benchmark behind ``reinforcens bench``: epoch times of our methods against implicit's BPR,
evaluation time, and peak memory, on simulator presets.

The package has one module per job:

* :mod:`reinforcens.bench.cache`: simulate and prepare a preset once, in a cache folder;
* :mod:`reinforcens.bench.timing`: time epochs of our methods (the public training API) and of implicit;
* :mod:`reinforcens.bench.memory`: peak resident set size of prepare and training, in child processes;
* :mod:`reinforcens.bench.machine`: a description of the machine a result was measured on;
* :mod:`reinforcens.bench.report`: the ratios of a timing result, its Markdown table and JSON file.

It measures and reports only: times, ratios and memory. Whether those meet a project's acceptance
targets is stated in ``BENCHMARKS.md``, not here. The command line is :mod:`reinforcens.cli.bench`.
Heavy imports (the trainer, the data pipeline) happen inside the functions that need them, so importing
this package for its constants is cheap.
"""

from __future__ import annotations

from reinforcens.bench.cache import PREPARE_SETTINGS, default_cache, ensure_prepared, preset_paths
from reinforcens.bench.machine import machine_info
from reinforcens.bench.memory import run_memory
from reinforcens.bench.report import format_header, format_table, ratios, write_json
from reinforcens.bench.timing import METHODS, OUR_METHODS, OurMethod, build_method, run_timing

__all__ = [
    "METHODS",
    "OUR_METHODS",
    "PREPARE_SETTINGS",
    "OurMethod",
    "build_method",
    "default_cache",
    "ensure_prepared",
    "format_header",
    "format_table",
    "machine_info",
    "preset_paths",
    "ratios",
    "run_memory",
    "run_timing",
    "write_json",
]
