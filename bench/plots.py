"""`make bench-plots`: SVG plots of the newest results of issue #7's HTTP benchmarks, into docs/images/.

- `bench-http.svg` (bench/results/http_disclosure-*.json): requests per second of `/healthz`, the bare insert and
  the full disclosure, per backend, each bar labelled with its share of the same server's `/healthz`;
- `bench-scale.svg` (scale-*.json): disclosure latency p50/p95/p99 per database size, one panel per concurrency;
- `bench-scaling.svg` (scaling-*.json): disclosures per second from one instance and from two, every round's
  rate as a dot, and the target (1.6 × one instance).

"Newest" is by the `date` inside the files; `--http FILE`, `--scale FILE`, `--scaling FILE` pick others. A plot
whose results are missing is skipped with a note; the command fails only when none can be drawn. Needs
matplotlib (`pip install -e '.[bench]'`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bench.harness import RESULTS, ROOT

IMAGES = ROOT / "docs" / "images"
COLOURS = {"healthz": "#9aa5b1", "bare_insert": "#5b8db8", "disclosure": "#d9822b"}
LABELS = {"healthz": "GET /healthz", "bare_insert": "bare insert", "disclosure": "disclosure"}


def newest(prefix: str, accept: str) -> Path | None:
    """The newest results file `prefix-*.json` holding the key `accept` (older files have other shapes)."""
    found: list[tuple[str, Path]] = []
    for path in RESULTS.glob(f"{prefix}-*.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if accept in data and data.get("benchmark") == prefix:
            found.append((str(data.get("date", "")), path))
    return max(found)[1] if found else None


def caption(data: dict[str, Any], path: Path) -> str:
    machine = data.get("machine", {})
    load = machine.get("loadavg_1min_before")
    return (
        f"{path.name} · {data.get('date', '?')} · {machine.get('nproc', '?')} CPUs, "
        f"load average {load if load is not None else '?'} before the run"
    )


def _figure(width: float, height: float, panels: int = 1) -> tuple[Any, list[Any]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # The same results give the same file (no date in the metadata, fixed element ids).
    plt.rcParams["svg.hashsalt"] = "consent-broker-bench"
    plt.rcParams["font.size"] = 9
    fig, axes = plt.subplots(1, panels, figsize=(width, height), squeeze=False)
    return fig, list(axes[0])


def _save(fig: Any, name: str) -> Path:
    import matplotlib.pyplot as plt

    IMAGES.mkdir(parents=True, exist_ok=True)
    path = IMAGES / name
    fig.savefig(path, format="svg", metadata={"Date": None}, bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {path.relative_to(ROOT)}")
    return path


def plot_http(path: Path) -> Path:
    data = json.loads(path.read_text())
    backends: dict[str, Any] = data["backends"]
    fig, [ax] = _figure(7.5, 3.8)
    names = list(LABELS)
    width = 0.26
    for i, outcome in enumerate(backends.values()):
        results, ratios = outcome["results"], outcome["ratios"]
        share = {
            "healthz": 1.0,
            "bare_insert": ratios["bare_insert_to_healthz"]["median"],
            "disclosure": ratios["disclosure_to_healthz"]["median"],
        }
        for j, name in enumerate(names):
            x = i + (j - 1) * width
            rate = results[name]["requests_per_s"]
            ax.bar(x, rate, width * 0.92, color=COLOURS[name], label=LABELS[name] if i == 0 else None)
            ax.annotate(
                f"{rate:,.0f}/s\n{100 * share[name]:.1f} %",
                (x, rate),
                ha="center",
                va="bottom",
                fontsize=7,
                xytext=(0, 2),
                textcoords="offset points",
            )
        target = outcome["target_disclosure_to_healthz"] * results["healthz"]["requests_per_s"]
        ax.hlines(target, i + 0.5 * width, i + 1.5 * width, colors="black", linestyles="dashed", linewidth=0.8)
        ax.annotate(
            f"target {100 * outcome['target_disclosure_to_healthz']:.0f} %",
            (i + 1.5 * width, target),
            fontsize=7,
            va="center",
            xytext=(3, 0),
            textcoords="offset points",
        )
    ax.set_xticks(
        range(len(backends)), [b.replace("postgres", "PostgreSQL").replace("sqlite", "SQLite") for b in backends]
    )
    ax.set_ylabel("requests per second (median run)")
    ax.set_title("Disclosures over HTTP next to the same server's /healthz and a bare durable insert", fontsize=9)
    ax.margins(y=0.2)
    ax.legend(fontsize=7, loc="upper right")
    fig.text(0.01, -0.02, caption(data, path), fontsize=6, color="#555555")
    return _save(fig, "bench-http.svg")


def plot_scale(path: Path) -> Path:
    data = json.loads(path.read_text())
    sizes: dict[str, Any] = data["sizes"]
    levels = [str(c) for c in next(iter(sizes.values()))["levels"]]
    fig, axes = _figure(3.6 * len(levels) + 0.5, 3.6, len(levels))
    percentiles = ("p50", "p95", "p99")
    shades = {"p50": "#9ecae1", "p95": "#4292c6", "p99": "#08519c"}
    width = 0.26
    for ax, level in zip(axes, levels, strict=True):
        for i, size in enumerate(sizes.values()):
            found = size["levels"][level]["median_over_runs_ms"]
            for j, p in enumerate(percentiles):
                x = i + (j - 1) * width
                ax.bar(x, found[p], width * 0.92, color=shades[p], label=p if i == 0 else None)
                ax.annotate(
                    f"{found[p]:.1f}",
                    (x, found[p]),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    xytext=(0, 2),
                    textcoords="offset points",
                )
        names = [f"{int(label):,}" if label.isdigit() else label for label in sizes]
        ax.set_xticks(range(len(sizes)), [f"{n} persons" for n in names])
        ratio = data.get("p99_comparison", {}).get(level, {}).get("ratio")
        title = f"{level} connections" + (
            f": p99 ratio {ratio:.2f} × (target ≤ {data['target_p99_ratio']})" if ratio else ""
        )
        ax.set_title(title, fontsize=8)
        ax.set_ylabel("latency, ms (median over rounds)")
        ax.margins(y=0.15)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle("Disclosure latency over HTTP by database size (PostgreSQL)", fontsize=9)
    fig.text(0.01, -0.03, caption(data, path), fontsize=6, color="#555555")
    return _save(fig, "bench-scale.svg")


def plot_scaling(path: Path) -> Path:
    data = json.loads(path.read_text())
    results: dict[str, Any] = data["results"]
    fig, [ax] = _figure(5.0, 3.6)
    configs = list(results)
    for i, config in enumerate(configs):
        found = results[config]
        ax.bar(i, found["requests_per_s"], 0.55, color="#5b8db8" if config == "1" else "#2f6f4f")
        ax.scatter([i] * len(found["rates"]), found["rates"], color="black", s=8, zorder=3)
        ax.annotate(
            f"{found['requests_per_s']:,.0f}/s\np99 {found['p99_ms']:.0f} ms",
            (i, found["requests_per_s"]),
            ha="center",
            va="bottom",
            fontsize=7,
            xytext=(0, 3),
            textcoords="offset points",
        )
    one = results["1"]["requests_per_s"]
    ax.axhline(data["target"] * one, color="black", linestyle="dashed", linewidth=0.8)
    ax.annotate(
        f"target: {data['target']} × one instance",
        (0.02, data["target"] * one),
        xycoords=("axes fraction", "data"),
        fontsize=7,
        va="bottom",
        ha="left",
        xytext=(0, 2),
        textcoords="offset points",
    )

    ax.set_xticks(range(len(configs)), [f"{c} instance{'s' if c != '1' else ''}" for c in configs])
    ax.set_ylabel("disclosures per second")
    budgets = data["settings"]["cpu_budgets"]
    how = ", ".join(f"{n} {v.get('cores', v.get('cpus'))}" for n, v in budgets["budgets"].items())
    ax.set_title(
        f"Two instances on one PostgreSQL: {data['ratio_two_to_one']:.2f} × one\n"
        f"CPU budgets ({budgets['mode']}): {how}",
        fontsize=8,
    )
    ax.margins(y=0.2)
    fig.text(0.01, -0.03, caption(data, path), fontsize=6, color="#555555")
    return _save(fig, "bench-scaling.svg")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.plots", description=__doc__.split("\n")[0])
    parser.add_argument("--http", type=Path, help="an http_disclosure results file (default: the newest)")
    parser.add_argument("--scale", type=Path, help="a scale results file (default: the newest)")
    parser.add_argument("--scaling", type=Path, help="a scaling results file (default: the newest)")
    args = parser.parse_args(argv)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("bench.plots needs matplotlib: .venv/bin/pip install -e '.[bench]'", file=sys.stderr)
        return 2
    drawn = 0
    for name, given, prefix, accept, draw in (
        ("HTTP", args.http, "http_disclosure", "backends", plot_http),
        ("scale", args.scale, "scale", "sizes", plot_scale),
        ("scaling", args.scaling, "scaling", "ratio_two_to_one", plot_scaling),
    ):
        path = given or newest(prefix, accept)
        if path is None:
            print(f"no {name} results in {RESULTS.relative_to(ROOT)}: plot skipped")
            continue
        draw(path)
        drawn += 1
    return 0 if drawn else 1


if __name__ == "__main__":
    sys.exit(main())
