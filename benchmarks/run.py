"""Benchmark the export transform side by side with an orjson floor and a naive json + datetime version.

Usage: ``python benchmarks/run.py [--size-mb 100] [--repeat 3] [--gb] [--pretty] [--variants ...]``

One generated export (cached in ``benchmarks/data/``) is processed by each variant in a fresh subprocess, so
peak RSS is per variant; each variant runs ``--repeat`` times (interleaved) and the table reports the best
and the median. The variants, each writing NDJSON:

* ``operator``: this provider's ``transform_exports`` (streaming parse + validate + convert + write);
* ``exact``: the same with its typed fast path off (``typed=False``): every entry through orjson and
  ``normalise_entry``, the path dirty batches take;
* ``floor``: ``orjson.loads`` of the whole file + ``orjson.dumps`` of each subscription and customer, no
  conversion: the fastest plausible Python baseline, memory growing with the file;
* ``naive``: ``json.load`` + ``datetime.fromtimestamp`` of the epoch fields + ``json.dumps`` per row.

Targets (issue 3): operator >= 1.0x the floor (and never below 0.8x), >= 4x naive, peak RSS <= 200 MB on a
1 GB file (``--gb``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
VARIANTS = ("floor", "operator", "exact", "naive")
NOW = datetime(2025, 1, 1, tzinfo=timezone.utc)  # fixed reference time: the generated epochs are 2022-2024
GB_MB = 1024  # --gb: a 1 GiB file
BUFFER = 1 << 20

Runner = Callable[[Path, Path], int]


# -- the variants (run in the child process) ---------------------------------------------------------------


def _operator(typed: bool = True) -> Runner:
    from airflow_provider_incremental.core.transform import transform_exports

    def run(path: Path, out: Path) -> int:
        result = transform_exports(
            [(str(path), lambda: open(path, "rb"))], out, unit="s", now=NOW, load_id="bench", typed=typed
        )
        if result.quarantined:
            raise RuntimeError(
                f"the benchmark file should be valid, {result.quarantined} records were rejected"
            )
        return result.entries_read

    return run


def _floor() -> Runner:
    import orjson

    def run(path: Path, out: Path) -> int:
        entries = orjson.loads(path.read_bytes())["list"]
        newline = orjson.OPT_APPEND_NEWLINE
        with (
            open(out / "subscriptions.ndjson", "wb", buffering=BUFFER) as subscriptions,
            open(out / "customers.ndjson", "wb", buffering=BUFFER) as customers,
        ):
            for entry in entries:
                subscriptions.write(orjson.dumps(entry["subscription"], option=newline))
                customers.write(orjson.dumps(entry["customer"], option=newline))
        return len(entries)

    return run


def _naive() -> Runner:
    from airflow_provider_incremental.core.chargebee import CUSTOMER_EPOCH_FIELDS, SUBSCRIPTION_EPOCH_FIELDS

    epoch_names = {path.rsplit(".", 1)[-1] for path in CUSTOMER_EPOCH_FIELDS | SUBSCRIPTION_EPOCH_FIELDS}

    def convert(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: datetime.fromtimestamp(v, timezone.utc)
                if k in epoch_names and isinstance(v, int)
                else convert(v)
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [convert(v) for v in value]
        return value

    def run(path: Path, out: Path) -> int:
        with open(path, encoding="utf-8") as fp:
            entries = json.load(fp)["list"]
        with (
            open(out / "subscriptions.ndjson", "w", encoding="utf-8", buffering=BUFFER) as subscriptions,
            open(out / "customers.ndjson", "w", encoding="utf-8", buffering=BUFFER) as customers,
        ):
            for entry in entries:
                subscriptions.write(json.dumps(convert(entry["subscription"]), default=str) + "\n")
                customers.write(json.dumps(convert(entry["customer"]), default=str) + "\n")
        return len(entries)

    return run


RUNNERS: dict[str, Callable[[], Runner]] = {
    "operator": _operator,
    "exact": lambda: _operator(typed=False),
    "floor": _floor,
    "naive": _naive,
}


def child(variant: str, path: Path, out: Path) -> None:
    """Run one variant once; print ``{"seconds", "cpu_seconds", "rows", "peak_rss_mb"}`` (imports not timed)."""
    run = RUNNERS[variant]()
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    rows = run(path, out)
    seconds = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime - before.ru_utime - before.ru_stime
    peak_mb = usage.ru_maxrss * 1024 / 1e6  # ru_maxrss is in KiB on Linux
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "rows": rows, "peak_rss_mb": peak_mb}))


# -- the parent: generate, run, report ---------------------------------------------------------------------


def export_file(size_mb: float, *, seed: int, pretty: bool) -> Path:
    """Return the cached benchmark export, generating it first if needed."""
    from airflow_provider_incremental.local.generate import write_export

    DATA.mkdir(parents=True, exist_ok=True)
    path = DATA / f"export-{size_mb:g}mb-seed{seed}{'-pretty' if pretty else ''}.json"
    if not path.exists():
        print(f"generating {path.relative_to(HERE.parent)} ...", flush=True)
        started = time.perf_counter()
        stats = write_export(path, size_mb=size_mb, seed=seed, pretty=pretty)
        print(
            f"  {stats['entries']} entries, {stats['bytes'] / 1e6:.1f} MB in {time.perf_counter() - started:.1f} s"
        )
    return path


def measure(variant: str, path: Path) -> dict[str, Any]:
    """Run ``variant`` on ``path`` in a fresh interpreter; return its measurement (or ``{"error": ...}``)."""
    out = DATA / f"out-{variant}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    try:
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--child", variant, str(path), str(out)],
            capture_output=True,
            text=True,
        )
    finally:
        shutil.rmtree(out, ignore_errors=True)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]}
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def report(runs: dict[str, list[dict[str, Any]]], size_bytes: int, *, gb: bool) -> None:
    """Print the table and the targets. Ratios use CPU time (user + sys): a busy machine inflates wall time."""
    mb = size_bytes / 1e6
    stats: dict[str, dict[str, float]] = {}
    for variant, results in runs.items():
        good = [r for r in results if "error" not in r]
        if good:
            times = [r["seconds"] for r in good]
            stats[variant] = {
                "best": min(times),
                "median": statistics.median(times),
                "cpu": min(r["cpu_seconds"] for r in good),
                "rows": good[0]["rows"],
                "rss": max(r["peak_rss_mb"] for r in good),
            }

    def ratio(variant: str, base: str) -> float | None:
        if variant not in stats or base not in stats:
            return None
        return stats[base]["cpu"] / stats[variant]["cpu"]

    def shown(x: float | None) -> str:
        return "-" if x is None else f"{x:.2f}x"

    header = (
        f"{'variant':<9} {'MB/s best':>10} {'MB/s median':>12} {'MB/s CPU':>9} {'rows/s best':>12} "
        f"{'peak RSS MB':>12} {'vs floor':>9} {'vs naive':>9}"
    )
    print()
    print(header)
    print("-" * len(header))
    for variant, results in runs.items():
        if variant not in stats:
            print(f"{variant:<9} ERROR: {results[0].get('error')}")
            continue
        s = stats[variant]
        print(
            f"{variant:<9} {mb / s['best']:>10.1f} {mb / s['median']:>12.1f} {mb / s['cpu']:>9.1f} "
            f"{s['rows'] / s['best']:>12,.0f} {s['rss']:>12.0f} "
            f"{shown(ratio(variant, 'floor')):>9} {shown(ratio(variant, 'naive')):>9}"
        )
    print("MB/s best / median: wall clock; MB/s CPU: user + sys time of the best run; ratios: CPU throughput")
    print("of the row over the column's variant; peak RSS: max over the runs (ru_maxrss of the child).")
    if "operator" not in stats:
        return
    print()
    print("paired ratios (CPU, each round's variants ran back to back): min / median / max over the rounds")
    for base in ("floor", "exact", "naive"):
        pairs = [
            b["cpu_seconds"] / o["cpu_seconds"]
            for o, b in zip(runs["operator"], runs.get(base, []), strict=False)
            if "error" not in o and "error" not in b
        ]
        if pairs:
            print(
                f"  operator vs {base:<6} {min(pairs):5.2f}x / {statistics.median(pairs):5.2f}x / "
                f"{max(pairs):5.2f}x"
            )
    print()
    print("targets (issue 3):")
    vs_floor, vs_naive = ratio("operator", "floor"), ratio("operator", "naive")
    if vs_floor is not None:
        print(f"  operator >= 1.0x floor          {vs_floor:6.2f}x    {_verdict(vs_floor >= 1.0)}")
        print(f"  operator >= 0.8x floor (hard)   {vs_floor:6.2f}x    {_verdict(vs_floor >= 0.8)}")
    if vs_naive is not None:
        print(f"  operator >= 4x naive            {vs_naive:6.2f}x    {_verdict(vs_naive >= 4.0)}")
    rss = stats["operator"]["rss"]
    if gb:
        print(f"  operator peak RSS <= 200 MB     {rss:6.0f} MB  {_verdict(rss <= 200)} (on {mb:.0f} MB)")
    else:
        print(f"  operator peak RSS <= 200 MB     {rss:6.0f} MB  n/a: judged on 1 GiB, run with --gb")


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        child(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--size-mb", type=float, default=100.0, help="size of the generated export (default 100)"
    )
    parser.add_argument(
        "--gb", action="store_true", help=f"use a 1 GiB export ({GB_MB} MB); default --repeat 1"
    )
    parser.add_argument("--repeat", type=int, help="runs per variant (default 3, or 1 with --gb)")
    parser.add_argument("--pretty", action="store_true", help="an indented export, like the sample")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    args = parser.parse_args()
    size_mb = GB_MB if args.gb else args.size_mb
    repeat = args.repeat or (1 if args.gb else 3)

    path = export_file(size_mb, seed=args.seed, pretty=args.pretty)
    size = path.stat().st_size
    print(
        f"{path.name}: {size / 1e6:.1f} MB; Python {platform.python_version()}, {os.cpu_count()} CPUs; "
        f"{repeat} run(s) per variant, each in a fresh process; load average {os.getloadavg()[0]:.1f}"
    )
    variants = [v for v in VARIANTS if v in args.variants]
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    for i in range(repeat):
        for variant in variants:
            result = measure(variant, path)
            runs[variant].append(result)
            shown = (
                result.get("error") or f"{result['seconds']:.2f} s, {result['peak_rss_mb']:.0f} MB peak RSS"
            )
            print(f"  run {i + 1}/{repeat} {variant:<9} {shown}", flush=True)
    load = os.getloadavg()[0]
    if load > (os.cpu_count() or 1):
        print(
            f"note: load average {load:.1f} on {os.cpu_count()} CPUs: wall times are inflated, trust the CPU columns"
        )
    report(runs, size, gb=size_mb >= 1000)


if __name__ == "__main__":
    main()
