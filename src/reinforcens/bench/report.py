"""The benchmark's report: the ratios of a timing result, a Markdown table of a timing or memory result,
its header line, and its JSON file.

The report states measurements only (times, ratios, memory); it judges none of them against a target.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: the base methods every other method's time is divided by, in ``ratios``
BASES = ("implicit", "bpr")
#: methods that get no ratio to our BPR (implicit is the base of the other ratio; evaluation is no epoch)
NOT_VS_BPR = frozenset({"implicit", "bpr", "eval_lists"})


def ratios(medians: dict[str, float]) -> dict[str, float]:
    """Each method's median time over implicit's and over our BPR's.

    Parameters
    ----------
    medians
        Median seconds per method.

    Returns
    -------
    dict
        ``"M_vs_implicit"`` for every method ``M`` other than implicit, and ``"M_vs_bpr"`` for every
        training method other than implicit and BPR, where both times exist and the base is positive.
    """
    out: dict[str, float] = {}
    for name, seconds in medians.items():
        for base in BASES:
            if name == base or (base == "bpr" and name in NOT_VS_BPR):
                continue
            if medians.get(base, 0.0) > 0:
                out[f"{name}_vs_{base}"] = seconds / medians[base]
    return out


def format_header(result: dict[str, Any], preset: str | None = None) -> str:
    """The one-line description of a result's run: mode, preset, CPU, threads, device, kernels, load.

    Parameters
    ----------
    result
        A timing or memory result.
    preset
        The preset to name (default: the result's).

    Returns
    -------
    str
        The line.
    """
    m = result["machine"]
    return (
        f"reinforcens bench ({result['mode']}, preset {preset or result['preset']}): {m['cpu']}, "
        f"{m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads, {m['device']}"
        + (f", {m['backend']} kernels" if "backend" in m else "")
        + "), "
        + (f"implicit {m['implicit_threads']} threads, " if "implicit_threads" in m else "")
        + f"load {m.get('load_average')}"
    )


def format_table(result: dict[str, Any]) -> str:
    """A Markdown table of a timing or memory result.

    Parameters
    ----------
    result
        The result of :func:`reinforcens.bench.timing.run_timing` or
        :func:`reinforcens.bench.memory.run_memory`.

    Returns
    -------
    str
        Timing: per method its median and runs in seconds and its ratio to implicit and to our BPR,
        then the skipped methods. Memory: per step its peak RSS and wall time, then the peak of prepare
        and training.
    """
    if result["mode"] == "memory":
        lines = ["| step | peak RSS (MiB) | wall (s) |", "|---|---:|---:|"]
        for name, s in result["steps"].items():
            lines.append(f"| {name} | {s['peak_rss_mb']:.0f} | {s['seconds']:.1f} |")
        lines.append(f"\npeak of prepare and train: {result['peak_rss_mb']:.0f} MiB")
        return "\n".join(lines)
    times = result["times"]
    base = times.get("implicit", {}).get("median")
    bpr = times.get("bpr", {}).get("median")
    lines = [
        "| method | median (s) | runs (s) | vs implicit | vs our BPR |",
        "|---|---:|---|---:|---:|",
    ]
    for name, t in times.items():
        runs = ", ".join(f"{x:.3f}" for x in t["runs"])
        vs_i = f"{t['median'] / base:.2f}x" if base and name != "eval_lists" else ""
        vs_b = f"{t['median'] / bpr:.2f}x" if bpr and name not in ("implicit", "eval_lists") else ""
        lines.append(f"| {name} | {t['median']:.3f} | {runs} | {vs_i} | {vs_b} |")
    for name, why in result.get("skipped", {}).items():
        lines.append(f"- {name} skipped: {why}")
    return "\n".join(lines)


def write_json(path: Path, result: dict[str, Any]) -> None:
    """Write a result as JSON to ``path``, atomically, keys in the result's order.

    Parameters
    ----------
    path
        The file.
    result
        A timing or memory result.
    """
    from reinforcens.atomic import atomic_write_json

    atomic_write_json(Path(path), result, sort_keys=False)
