"""Collects the outputs of scripts/bench into summary.json and summary.md.

Usage: python3 scripts/lib/bench_summary.py DIR
"""
import json
import os
import pathlib
import re
import statistics
import sys

out = pathlib.Path(sys.argv[1])
summary = {"machine": {"cpus": os.cpu_count(), "load_at_end": os.getloadavg()[0]}}

# Decoder: criterion's median per body kind (microseconds).
decode = {}
text = (out / "decode.txt").read_text()
for m in re.finditer(r"^(decode_\w+)/([\w-]+)/(\d+)\s*\n?\s*time:\s*\[\S+ \S+ (\S+) (\S+) ", text, re.M):
    group, fmt, size, value, unit = m.groups()
    scale = {"ns": 1e-3, "µs": 1.0, "us": 1.0, "ms": 1e3}.get(unit, float("nan"))
    if group == "decode_bytes":
        decode[f"{fmt}/{size}"] = {"median_us": round(float(value) * scale, 2)}
summary["decode"] = decode

# Edge: the bench's own JSON (medians over its runs).
summary["edge"] = json.loads((out / "edge.json").read_text())

# Central: the pipeline bench's table (medians over its runs).
central = {}
for line in (out / "central.md").read_text().splitlines():
    cells = [c.strip() for c in line.strip("|").split("|")]
    if len(cells) < 2:
        continue
    number = re.match(r"[\d,]+", cells[1])
    if not number:
        continue
    value = int(number.group().replace(",", ""))
    if cells[0].startswith("ceiling: the rows a 1-worker run committed"):
        central["copy_same_rows_samples_rows_per_s"] = value
    elif cells[0].startswith("`samples` rows only, one plain binary COPY, no index"):
        central["copy_no_index_rows_per_s"] = value
    elif cells[0].startswith("same COPY into a table with"):
        central["copy_unique_index_rows_per_s"] = value
    elif cells[0].startswith("same COPY with the unique index, rows in key order"):
        central["copy_unique_index_key_order_rows_per_s"] = value
    elif cells[0].startswith("end to end, `run` (1"):
        central["end_to_end_params_per_s_1_worker"] = value
    elif cells[0].startswith("end to end, `run` + 1"):
        central["end_to_end_params_per_s_2_workers"] = value
if {"copy_unique_index_rows_per_s", "end_to_end_params_per_s_1_worker"} <= central.keys():
    central["share_of_unique_index_copy"] = round(
        central["end_to_end_params_per_s_1_worker"] / central["copy_unique_index_rows_per_s"], 3)
if {"copy_same_rows_samples_rows_per_s", "end_to_end_params_per_s_1_worker"} <= central.keys():
    central["share_of_same_rows_copy"] = round(
        central["end_to_end_params_per_s_1_worker"] / central["copy_same_rows_samples_rows_per_s"], 3)
if {"copy_unique_index_key_order_rows_per_s", "end_to_end_params_per_s_1_worker"} <= central.keys():
    central["share_of_key_order_copy"] = round(
        central["end_to_end_params_per_s_1_worker"] / central["copy_unique_index_key_order_rows_per_s"], 3)
summary["central"] = central

summary["wire"] = json.loads((out / "wire.json").read_text())

# Backlog: one file per run; the median drain.
runs = []
for f in sorted(out.glob("backlog-*.txt")):
    m = re.search(r"drained (\d+) reports \((\d+) parameters.*?in ([\d.]+) s: (\d+) reports/s", f.read_text())
    if m:
        runs.append({"reports": int(m[1]), "parameters": int(m[2]), "seconds": float(m[3]),
                     "reports_per_s": int(m[4])})
if runs:
    summary["backlog"] = {"runs": runs,
                          "median_seconds": statistics.median(r["seconds"] for r in runs),
                          "median_reports_per_s": statistics.median(r["reports_per_s"] for r in runs)}

m = re.search(r"idle VmRSS (\d+) kB.*?after (\d+) reports.*?VmRSS (\d+) kB, VmHWM (\d+) kB; binary (\d+) bytes",
              (out / "footprint.txt").read_text(), re.S)
if m:
    summary["footprint_native"] = {"idle_rss_kb": int(m[1]), "reports": int(m[2]),
                                   "rss_after_kb": int(m[3]), "hwm_after_kb": int(m[4]),
                                   "binary_bytes": int(m[5])}

(out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")

# summary.md: the edge table as measured, then each target against its figure.
def edge_row(body="json-nvp", gzip=False, params=100, sync="full", cpes=16):
    for r in summary["edge"]["rows"]:
        if (r["body"], r["gzip"], r["params"], r["synchronous"], r["cpes"]) == (body, gzip, params, sync, cpes):
            return r
    return None

lines = ["# bulkflow benchmark summary", "",
         f"{summary['machine']['cpus']} CPUs; medians of {summary['edge']['runs_per_row']} runs.", "",
         "## Edge ingest", "",
         "| body | params | synchronous | CPEs at once | reports/s | params/s | p50 / p99 ms | peak RSS MiB | CPU s / 1,000 reports |",
         "|---|---|---|---|---|---|---|---|---|"]
for r in summary["edge"]["rows"]:
    med = r["median"]
    body = r["body"] + (" + gzip" if r["gzip"] else "")
    lines.append(f"| {body} | {r['params']} | {r['synchronous']} | {r['cpes']} | {med['reports_per_s']:,.0f} | "
                 f"{med['params_per_s']:,.0f} | {med['p50_ms']:.2f} / {med['p99_ms']:.2f} | "
                 f"{r['peak_rss_mib']:.1f} | {med['cpu_s_per_1000_reports']:.2f} |")

targets = []
r = edge_row()
if r:
    targets.append(("edge: >= 5,000 reports/s of 100 parameters, synchronous=full (16 CPEs)",
                    f"{r['median']['reports_per_s']:,.0f}", r["median"]["reports_per_s"] >= 5000))
if r:
    targets.append(("edge: peak RSS < 16 MiB at that rate", f"{r['peak_rss_mib']:.1f} MiB", r["peak_rss_mib"] < 16))
burst = edge_row(cpes=1000)
if burst:
    # Not a target: what 1,000 CPEs connecting at once cost (256 served at once, the rest queued).
    targets.append(("edge: 1,000 CPEs at once, all answered 200 (peak RSS, informational)",
                    f"{burst['failed']} failed, {burst['peak_rss_mib']:.1f} MiB", None))
idle = max((r["median"]["idle_rss_mib"] for r in summary["edge"]["rows"]), default=None)
if idle is not None:
    targets.append(("edge: idle RSS < 8 MiB", f"{idle:.1f} MiB", idle < 8))
for situation in ("live", "backlog"):
    w = summary["wire"].get(situation)
    if w:
        targets.append((f"wire: >= 20x smaller than the JSON bodies ({situation})", f"{w['ratio']}x", w["ratio"] >= 20))
share = central.get("share_of_same_rows_copy")
if share is not None:
    targets.append(("central: >= 60% of a plain COPY of the same rows (1 worker)", f"{share:.0%}", share >= 0.6))
for key, what in (("share_of_key_order_copy", "samples only, unique index, key order"),
                  ("share_of_unique_index_copy", "samples only, unique index, as received")):
    share = central.get(key)
    if share is not None:
        targets.append((f"central: share of the COPY of {what} (informational)", f"{share:.0%}", None))
e2e = central.get("end_to_end_params_per_s_1_worker")
if e2e is not None:
    targets.append(("central: >= 250,000 parameters/s (1 worker)", f"{e2e:,}", e2e >= 250_000))
e2e2 = central.get("end_to_end_params_per_s_2_workers")
if e2e2 is not None:
    targets.append(("central: >= 250,000 parameters/s (2 workers)", f"{e2e2:,}", e2e2 >= 250_000))
if "backlog" in summary:
    targets.append(("backlog: a day of a 50-CPE site drained (median)", f"{summary['backlog']['median_seconds']} s", None))

lines += ["", "## Targets", "", "| target | measured | met |", "|---|---|---|"]
# met: True/False for a target, None for an informational row.
lines += [f"| {t} | {v} | {'-' if ok is None else 'yes' if ok else 'no'} |" for t, v, ok in targets]
(out / "summary.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
