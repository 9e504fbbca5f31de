"""Benchmark results as files: every figure in a JSON file, and plots a person can read.

Each benchmark calls `Report(name, out)`, then `plot_latency`, `plot_throughput` and
`plot_split` with what it measured, and `save` with all its figures. Plots carry the machine
and the date under them, so a committed plot says where it came from. The default output
folder is `docs/bench/`, which docs/benchmarks.md shows; `--out` puts them elsewhere.
"""

import datetime
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from common import machine  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(ROOT, "docs", "bench")


def step(message):
    """Say what runs now, so a long benchmark is never minutes of silence."""
    print(f"--> {message}", file=sys.stderr, flush=True)


class Report:
    """The files one benchmark run writes: `<out>/<name>.json` and `<out>/<name>-*.png`."""

    def __init__(self, name, out=None, command=None, ran_on=None, date=None):
        self.name = name
        # What reproduces the run, for the line under each plot.
        self.command = command or f"./dev bench {name}"
        self.out = out or DEFAULT_OUT
        # Where and when it ran: this machine today, unless the figures came from elsewhere.
        self.machine = ran_on or machine()
        self.date = date or datetime.date.today().isoformat()
        os.makedirs(self.out, exist_ok=True)
        self.files = []

    def _finish(self, fig, kind, title):
        fig.suptitle(title, fontsize=10)
        fig.text(0.5, 0.01, f"{self.machine}, {self.date}: {self.command}",
                 ha="center", fontsize=7, color="#555")
        fig.tight_layout(rect=(0, 0.05, 1, 1))
        path = os.path.join(self.out, f"{self.name}-{kind}.png")
        fig.savefig(path, dpi=80)
        plt.close(fig)
        self.files.append(path)

    @staticmethod
    def _concurrency_axis(ax, series):
        levels = sorted({c for levels in series.values() for c in levels})
        ax.set_xscale("log", base=2)
        ax.set_xticks(levels, [str(c) for c in levels])
        ax.minorticks_off()
        ax.set_xlabel("concurrent requests")

    def plot_latency(self, title, series, unit="ms"):
        """`series`: {label: {concurrency: {"p50": x, "p99": y}}}; p50 solid, p99 dashed."""
        fig, ax = plt.subplots(figsize=(6, 3.4))
        for k, (label, levels) in enumerate(series.items()):
            color = f"C{k}"
            cs = sorted(levels)
            for q, style in (("p50", "-o"), ("p99", "--^")):
                pts = [(c, levels[c][q]) for c in cs if levels[c].get(q) is not None]
                if pts:
                    ax.plot(*zip(*pts), style, color=color, label=f"{label} {q}", markersize=4)
        self._concurrency_axis(ax, series)
        ax.set_ylabel(f"latency ({unit})")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        self._finish(fig, "latency", title)

    def plot_throughput(self, title, series, unit="req/s"):
        """`series`: {label: {concurrency: requests per second}}."""
        fig, ax = plt.subplots(figsize=(6, 3.4))
        for k, (label, levels) in enumerate(series.items()):
            cs = sorted(levels)
            ax.plot(cs, [levels[c] for c in cs], "-o", color=f"C{k}", label=label, markersize=4)
        self._concurrency_axis(ax, series)
        ax.set_ylabel(unit)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        self._finish(fig, "throughput", title)

    def plot_split(self, title, bars, steps, kind="split"):
        """`bars`: {label: {step: ms}}, stacked in the order of `steps` (missing steps are 0)."""
        fig, ax = plt.subplots(figsize=(7, 1.2 + 0.5 * len(bars)))
        labels = list(bars)
        left = [0.0] * len(labels)
        for k, s in enumerate(steps):
            widths = [bars[label].get(s, 0.0) for label in labels]
            ax.barh(labels, widths, left=left, color=f"C{k % 10}", label=s)
            left = [a + b for a, b in zip(left, widths)]
        ax.invert_yaxis()
        ax.set_xlabel("ms per request (medians)")
        ax.grid(axis="x", alpha=0.3)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
        self._finish(fig, kind, title)

    def plot_bars(self, kind, title, bars, unit="ms"):
        """`bars`: {label: value}, one horizontal bar each, its value written beside it."""
        fig, ax = plt.subplots(figsize=(7, 1.0 + 0.38 * len(bars)))
        labels = list(bars)
        values = [bars[label] for label in labels]
        ax.barh(labels, values, color=[f"C{k % 10}" for k in range(len(labels))])
        for y, v in enumerate(values):
            ax.text(v, y, f" {v:,.0f} {unit}" if v >= 100 else f" {v:.2f} {unit}", va="center", fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel(unit)
        ax.set_xlim(right=max(values) * 1.25 if values else 1)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(axis="x", alpha=0.3)
        self._finish(fig, kind, title)

    def save(self, results):
        """Write every figure of the run, with where and when it ran."""
        path = os.path.join(self.out, f"{self.name}.json")
        with open(path, "w") as f:
            json.dump({"benchmark": self.name, "machine": self.machine, "date": self.date,
                       "results": results}, f, indent=1, sort_keys=True)
            f.write("\n")
        self.files.append(path)
        step("wrote " + ", ".join(os.path.relpath(p, ROOT) for p in self.files))
