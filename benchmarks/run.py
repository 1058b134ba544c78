"""Run every benchmark and regenerate BENCHMARKS.md and benchmarks/results.png.

``make bench`` runs this (``make bench BENCH_ARGS=--quick`` for a short development run).
The suites are separate scripts, each also usable alone (see their docstrings):

* ``throughput.py``: bulk transfer, 1 GiB in 1 MiB messages (``--quick``: 128 MiB);
* ``messages.py``: 64-byte round trips and pipelined one-way messages;
* ``handshake.py``: handshake latency with a cached key and with a cold Argon2;
* ``connections.py``: server memory per idle connection, most connections held.

Within each suite the variants run interleaved, and the report shows medians: figures move
by tens of percent between runs on a shared machine, ratios measured side by side much less.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _harness as h

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CHART = HERE / "results.png"
REPORT = ROOT / "BENCHMARKS.md"


def run_suite(script: str, args: list[str], out: Path) -> tuple[dict[str, Any] | None, float]:
    h.progress(f"== {script} {' '.join(args)}")
    started = time.monotonic()
    done = subprocess.run([sys.executable, str(HERE / script), *args, "--json", str(out)])
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        h.progress(f"{script} reported failures (exit {done.returncode})")
    if not out.exists():
        return None, elapsed
    return json.loads(out.read_text()), elapsed


def fmt(value: float | None, spec: str = ".0f", unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{unit}"


class Targets:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, bool | None]] = []

    def add(self, name: str, value: str, target: str, met: bool | None) -> None:
        self.rows.append((name, value, target, met))


def fmt_load(load: list[float] | tuple[float, ...] | None) -> str:
    return "n/a" if not load else ", ".join(f"{x:.1f}" for x in load)


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="less data, one round each")
    parser.add_argument("--skip", default="", help="suites to leave out, e.g. connections")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite BENCHMARKS.md and the chart from benchmarks/results.json, run nothing",
    )
    args = parser.parse_args(argv)
    if args.report_only:
        document = json.loads((HERE / "results.json").read_text())
        REPORT.write_text(report(document, draw_chart(document["results"], document["machine"])))
        return 0
    started = time.monotonic()
    machine = h.machine_description()
    ceiling = h.build_ceiling()
    with_ceiling = ["--ceiling", str(ceiling)] if ceiling else []
    q = args.quick
    suites: dict[str, list[str]] = {
        "throughput": ["--size-mib", "128" if q else "1024", "--repeat", "1" if q else "3"],
        "messages": ["--repeat", "1" if q else "3"]
        + (["--round-trips", "2000", "--messages", "100000"] if q else []),
        "handshake": ["--iterations", "200", "--cold-iterations", "3"] if q else [],
        "connections": ["--connections", "1000", "--max-connections", "3000"] if q else [],
    }
    if not ceiling:  # run without the tokio rows
        suites["throughput"] += ["--only", "a,b,c,d,e,f,g"]
        suites["messages"] += [
            "--only",
            "argonlink-sync,argonlink-async,tls-sync,tls-async,tcp,mpc",
        ]
    else:
        suites["throughput"] += with_ceiling
        suites["messages"] += with_ceiling
    results: dict[str, Any] = {}
    durations: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="argonlink-bench-") as tmp:
        for name, suite_args in suites.items():
            if name in args.skip.split(","):
                continue
            results[name], durations[name] = run_suite(
                f"{name}.py", suite_args, Path(tmp) / f"{name}.json"
            )
        if "throughput" not in args.skip.split(","):
            cipher = h.build_ceiling("cipher_ceiling")
            if cipher is not None:
                h.progress("cipher_ceiling: sealing and opening on one core")
                results["cipher"] = h.run_cipher_ceiling(cipher, 256 if q else 1024, 1024)
    wall = time.monotonic() - started
    machine["load_after"] = os.getloadavg()
    document = {
        "machine": machine,
        "quick": q,
        "results": results,
        "durations": durations,
        "wall_seconds": wall,
    }
    (HERE / "results.json").write_text(json.dumps(document, indent=2) + "\n")
    chart = draw_chart(results, machine)
    text = report(document, chart)
    REPORT.write_text(text)
    print()
    print(text)
    return 0


# --------------------------------------------------------------------------------------------


def throughput_rows(tp: dict[str, Any]) -> list[tuple[str, str, float | None]]:
    return [(key, v["name"], v["median_mb_per_s"]) for key, v in tp.get("variants", {}).items()]


def bulk_bound(res: dict[str, Any], machine: dict[str, Any]) -> dict[str, Any] | None:
    """What no I/O design can remove from bulk throughput on this machine: every byte sealed
    once and opened once (measured on one core), plus the kernel's work for plain TCP (measured
    in the same run), on the cores there are. None without the figures."""
    tp, cipher = res.get("throughput"), res.get("cipher")
    plain = tp["variants"].get("a") if tp else None
    if tp is None or cipher is None or plain is None or plain["median_mb_per_s"] is None:
        return None
    gib = tp["config"]["size_mib"] / 1024
    tcp_cpu = h.median(
        [
            (r["cpu_sender"] + r["cpu_receiver"]) / gib
            for r in plain["runs"]
            if r.get("cpu_sender") is not None and r.get("cpu_receiver") is not None
        ]
    )
    if tcp_cpu is None:
        return None
    per_gib = {k: 2**30 / (cipher[f"{k}_gbps"] * 1e9) for k in ("seal", "open", "copy")}
    floor = tcp_cpu + sum(per_gib.values())
    cores = machine["usable_cores"]
    best = cores / floor * 2**30 / 1e6  # MB/s with every core busy and nothing else to do
    return {
        "cipher": cipher,
        "tcp_cpu": tcp_cpu,
        "per_gib": per_gib,
        "floor": floor,
        "cores": cores,
        "best": best,
        "ratio": best / plain["median_mb_per_s"],
    }


def bulk_floor(bound: dict[str, Any] | None) -> list[str]:
    """The paragraph on what bounds bulk throughput."""
    if bound is None:
        return []
    cipher, per_gib, tcp_cpu = bound["cipher"], bound["per_gib"], bound["tcp_cpu"]
    floor, cores, best = bound["floor"], bound["cores"], bound["best"]
    return [
        "**What bounds it.** On one core of this machine, with no sockets or threads "
        f"(`benches/cipher_ceiling.rs`), sealing runs at {cipher['seal_gbps']:.1f} GB/s "
        f"(a copy into the frame buffer, then AES-256-GCM in place), opening at "
        f"{cipher['open_gbps']:.1f} GB/s and the copy of a message into Python at "
        f"{cipher['copy_gbps']:.1f} GB/s: {per_gib['seal']:.2f} + {per_gib['open']:.2f} + "
        f"{per_gib['copy']:.2f} CPU s per GiB that plain TCP does not spend. Added to plain "
        f"TCP's own {tcp_cpu:.2f} CPU s per GiB (kernel copies, measured above), each GiB "
        f"needs at least {floor:.2f} CPU s; with {cores} cores fully busy that is at most "
        f"{best:.0f} MB/s, **{bound['ratio']:.2f}x plain TCP**. Whatever the I/O design, "
        "argonlink "
        "cannot reach more here; the rest of the gap to the measured figure is wake-ups, "
        "scheduling and softirq work on a machine whose two cores run both ends.",
        "",
    ]


def report(doc: dict[str, Any], chart: Path | None) -> str:
    m, res = doc["machine"], doc["results"]
    targets = Targets()
    lines = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`benchmarks/run.py`); do not edit by hand."
        + (
            " **Quick mode** (`--quick`): less data, one round per variant." if doc["quick"] else ""
        ),
        "",
        f"- Machine: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable); {m['kernel']}",
        f"- {m['python']}; {m['rustc']}; {m['openssl']}; spiped: {m['spiped'] or 'not installed'}",
        f"- argonlink {m['argonlink']}; date: {m['date']}",
        f"- Load average (1, 5, 15 min) before: {fmt_load(m.get('load_before'))}, after: "
        f"{fmt_load(m.get('load_after'))} (other work shares the machine)",
        f"- Everything on loopback, server and client in two processes; `make bench` took "
        f"{doc['wall_seconds'] / 60:.1f} min.",
        "- Each variant ran interleaved with the others of its suite; figures are medians. On a "
        "shared 2-core machine absolute figures move by tens of percent from run to run; the "
        "ratios, measured side by side, much less.",
        "",
    ]
    if chart is not None:
        lines += [f"![benchmark results]({chart.relative_to(ROOT).as_posix()})", ""]

    tp = res.get("throughput")
    if tp:
        med = {k: v["median_mb_per_s"] for k, v in tp["variants"].items()}
        cfg = tp["config"]
        lines += [
            "## Bulk throughput",
            "",
            f"{cfg['size_mib']} MiB per run in {cfg['message_kib']} KiB messages, "
            f"{cfg['repeat']} run(s) per variant; sender's clock from the first send to the "
            "receiver's acknowledgement of the last message; MB = 10^6 bytes.",
            "",
            "| Variant | MB/s (median) | CPU s per GiB, both ends (median) | runs (MB/s) |",
            "|---|---:|---:|---|",
        ]
        gib = cfg["size_mib"] / 1024
        for v in tp["variants"].values():
            runs = ", ".join(
                "failed" if r["mb_per_s"] is None else f"{r['mb_per_s']:.0f}" for r in v["runs"]
            )
            cpu = h.median(
                [
                    (r["cpu_sender"] + r["cpu_receiver"]) / gib
                    for r in v["runs"]
                    if r.get("cpu_sender") is not None and r.get("cpu_receiver") is not None
                ]
            )
            lines.append(
                f"| {v['name']} | {fmt(v['median_mb_per_s'])} | {fmt(cpu, '.2f')} | {runs} |"
            )
        for s in tp.get("skipped", {}).values():
            lines.append(f"| {s['name']} | skipped | | {s['why']} |")
        lines.append("")
        bound = bulk_bound(res, m)
        lines += bulk_floor(bound)
        for name, num, den, target in [
            ("argonlink blocking / TLS blocking", "d", "b", 1.3),
            ("argonlink blocking / plain TCP (Python)", "d", "a", 0.85),
            ("argonlink asyncio / asyncio TLS", "e", "c", 3.0),
        ]:
            r = ratio(med.get(num), med.get(den))
            at_most = f" (at most {bound['ratio']:.2f}x here)" if den == "a" and bound else ""
            targets.add(
                f"Bulk: {name}",
                fmt(r, ".2f", "x") + at_most,
                f">= {target}x",
                None if r is None else r >= target,
            )

    ms = res.get("messages")
    if ms:
        size = ms["size"]
        lines += [
            "## Small messages",
            "",
            f"{size}-byte messages. **Round trips**: the client sends one and waits for the "
            "server's echo (one after the other, no overlap). **Pipelined**: the client sends "
            "as fast as it can, the server receives each one and acknowledges the last. "
            "Context switches: of all threads of both processes, per round trip (each is a "
            "thread going to sleep or being put off the CPU).",
            "",
            "Round trips depend on the load of the machine. On a quiet virtual machine a thread "
            "blocked in `recv` lets its virtual CPU halt, and each wake-up from the halt costs "
            "tens of microseconds; argonlink's blocking `recv` spins for up to 50 µs before it "
            "parks (some CPU spent for latency), so it avoids that. On a busy "
            "machine nobody halts, and what counts is the number of thread hand-offs per round "
            "trip.",
            "",
            "| Variant | round trips/s | median round trip | context switches per round trip "
            "| pipelined messages/s |",
            "|---|---:|---:|---:|---:|",
        ]
        rtt = ms["modes"].get("rtt", {})
        pipe = ms["modes"].get("pipelined", {})
        for key in dict.fromkeys([*rtt, *pipe]):
            name = (rtt.get(key) or pipe.get(key))["name"]
            r = rtt.get(key, {})
            p = pipe.get(key, {})
            lines.append(
                f"| {name} | {fmt(r.get('median_per_s'))} | "
                f"{fmt(r.get('median_rtt_us'), '.0f', ' µs')} | "
                f"{fmt(r.get('switches_per_message'), '.1f')} | {fmt(p.get('median_per_s'))} |"
            )
        lines.append("")
        al_rtt = rtt.get("argonlink-sync", {}).get("median_per_s")
        mpc_rtt = rtt.get("mpc", {}).get("median_per_s")
        r = ratio(al_rtt, mpc_rtt)
        targets.add(
            "Round trips: argonlink blocking / multiprocessing.connection",
            fmt(r, ".2f", "x"),
            ">= 1.0x",
            None if r is None else r >= 1.0,
        )
        for key, label in [("argonlink-sync", "blocking"), ("argonlink-async", "asyncio")]:
            v = pipe.get(key, {}).get("median_per_s")
            targets.add(
                f"Pipelined {size} B messages, argonlink {label}",
                fmt(v, ",.0f", "/s"),
                ">= 300,000/s",
                None if v is None else v >= 300_000,
            )

    hs = res.get("handshake")
    if hs:
        lines += [
            "## Handshake latency",
            "",
            "A client process opens connections to a server process one after the other. "
            "**connect**: until `connect()` returns (TCP, hello, parameters, Noise messages, "
            "CONFIRM queued); **first message**: until the server's greeting arrives (the server "
            "has authenticated the client and its handler ran); **cycle**: connect, first "
            "message and a clean close. *Cached*: one `Credentials` for every connection, so "
            "Argon2 ran once; *cold*: Argon2 on every connection.",
            "",
            "| Case | n | connect median (p99) | first message median (p99) | cycle median |",
            "|---|---:|---:|---:|---:|",
        ]
        for e in hs.values():
            if "error" in e:
                lines.append(f"| {e['name']} | | failed: {e['error']} | | |")
                continue
            c, f, y = e["connect"], e["first_message"], e["cycle"]
            lines.append(
                f"| {e['name']} | {e['iterations']} | {c['median_ms']:.3f} ms "
                f"({c['p99_ms']:.3f}) | {f['median_ms']:.3f} ms ({f['p99_ms']:.3f}) | "
                f"{y['median_ms']:.3f} ms |"
            )
        lines.append("")
        cached = hs.get("cached", {}).get("first_message")
        if cached:
            targets.add(
                "Handshake, key cached: connect to first message (median; p99)",
                f"{cached['median_ms']:.3f} ms; {cached['p99_ms']:.3f} ms",
                "< 1 ms",
                cached["median_ms"] < 1.0,
            )

    cn = res.get("connections")
    if cn and "memory" in cn:
        mem, most = cn["memory"], cn.get("most", {})
        per = mem["per_connection_bytes"]
        lines += [
            "## Connections",
            "",
            f"Server resident memory (VmRSS) with {mem['baseline_connections']} idle "
            f"authenticated connections: {mem['baseline_rss_bytes'] / 2**20:.1f} MiB; with "
            f"{mem['connections']} more: {mem['rss_bytes'] / 2**20:.1f} MiB, so "
            f"**{fmt(None if per is None else per / 1024, '.1f', ' KiB')} per connection**.",
            "",
        ]
        if most:
            lines += [
                f"Most connections held at once: **{most['server_accepted']}** (server RSS "
                f"{most['server_rss_bytes'] / 2**20:.0f} MiB), stopped by "
                f"{most['stopped_by']}. RLIMIT_NOFILE was raised to the hard limit, "
                f"{most['nofile_limit']['server']}, in both processes.",
                "",
            ]
        targets.add(
            "Server memory per idle authenticated connection",
            fmt(None if per is None else per / 1024, ".1f", " KiB"),
            "<= 64 KiB",
            None if per is None else per <= 64 * 1024,
        )

    lines += ["## Targets", "", "| Target | Measured | Goal | Met |", "|---|---:|---:|:---:|"]
    for name, value, goal, met in targets.rows:
        shown = "n/a" if met is None else ("yes" if met else "**no**")
        lines.append(f"| {name} | {value} | {goal} | {shown} |")
    lines.append("")
    return "\n".join(lines)


def draw_chart(res: dict[str, Any], machine: dict[str, Any]) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        h.progress("matplotlib is not installed (pip install '.[bench]'): no chart")
        return None
    panels: list[tuple[str, str, list[tuple[str, float]]]] = []
    bound = bulk_bound(res, machine)
    tp = res.get("throughput")
    if tp:
        bars = [
            (v["name"].split(") ", 1)[-1], v["median_mb_per_s"]) for v in tp["variants"].values()
        ]
        panels.append(("Bulk throughput, 1 MiB messages", "MB/s", bars))
    ms = res.get("messages")
    if ms:
        for mode, title, unit in [
            ("rtt", f"{ms['size']} B round trips", "round trips/s"),
            ("pipelined", f"{ms['size']} B pipelined messages", "messages/s"),
        ]:
            data = ms["modes"].get(mode, {})
            panels.append((title, unit, [(v["name"], v["median_per_s"]) for v in data.values()]))
    hs = res.get("handshake")
    if hs:
        bars = [
            (e["name"].replace("argonlink, ", "argonlink: "), e["first_message"]["median_ms"])
            for e in hs.values()
            if "error" not in e
        ]
        panels.append(("Handshake: connect to first message", "ms", bars))
    if not panels:
        return None
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 2.6 * len(panels) + 0.5))
    axes = list(axes) if len(panels) > 1 else [axes]
    for ax, (title, unit, bars) in zip(axes, panels, strict=True):
        bars = [(n, v) for n, v in bars if v is not None]
        names = [n for n, _ in bars]
        values = [v for _, v in bars]
        colors = ["#c0392b" if "argonlink" in n else "#7f8c8d" for n in names]
        ax.barh(names, values, color=colors)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=10, loc="left")
        ax.set_xlabel(unit, fontsize=8)
        ax.tick_params(labelsize=8)
        latency = unit == "ms"
        if latency or (values and max(values) > 20 * sorted(values)[len(values) // 2]):
            ax.set_xscale("log")  # latencies, or one bar dwarfing the rest
            ax.set_xlabel(f"{unit} (log scale)", fontsize=8)
        for y, v in enumerate(values):
            label = f"{v:.3g}" if latency else f"{v:,.0f}"
            ax.text(v, y, f" {label}", va="center", fontsize=7)
        ax.margins(x=0.18)
        if unit == "MB/s" and bound is not None:
            ax.axvline(bound["best"], color="#c0392b", linestyle="--", linewidth=1)
            # Beside the shortest bar, where there is room.
            ax.text(
                bound["best"],
                values.index(min(values)),
                " most argonlink can reach here (CPU bound)",
                color="#c0392b",
                fontsize=7,
                va="center",
            )
    fig.suptitle("argonlink on loopback (argonlink in red; medians)", fontsize=11)
    fig.tight_layout()
    fig.savefig(CHART, dpi=110)
    plt.close(fig)
    return CHART


if __name__ == "__main__":
    sys.exit(main())
