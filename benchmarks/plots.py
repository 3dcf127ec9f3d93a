"""The PNG plots: throughput and latency vs clients, and one bar per ratio target."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot(results: dict[str, Any], path: Path) -> None:
    """Throughput and p95 latency vs clients; baselines as horizontal reference lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_l) = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red"]
    for color, (model, data) in zip(colors, results["models"].items(), strict=False):
        xs = [lv["concurrency"] for lv in data["levels"]]
        ax_t.plot(
            xs, [lv["rtfx"] for lv in data["levels"]], "o-", color=color, label=f"{model} service"
        )
        ax_l.plot(
            xs,
            [lv["latency_s"]["p95"] for lv in data["levels"]],
            "o-",
            color=color,
            label=f"{model} service p95",
        )
        for name, style in (("naive", ":"), ("ceiling", "--")):
            base = data["baselines"].get(name)
            if base:
                ax_t.axhline(
                    base["rtfx"],
                    linestyle=style,
                    color=color,
                    label=f"{model} {name} ({base['rtfx']:.1f})",
                )
        naive = data["baselines"].get("naive")
        if naive and naive["latency_s"]["p95"] is not None:
            ax_l.axhline(
                naive["latency_s"]["p95"],
                linestyle=":",
                color=color,
                label=f"{model} naive per-clip p95",
            )
    for ax in (ax_t, ax_l):
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel("concurrent clients")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    ax_t.set_ylim(bottom=0)
    ax_l.set_ylim(bottom=0)
    ax_t.set_ylabel("throughput (audio s / wall s)")
    ax_t.set_title("Throughput vs concurrency")
    ax_l.set_ylabel("p95 latency (s)")
    ax_l.set_title("p95 request latency vs concurrency")
    fig.suptitle(f"whisper-serve benchmark ({results['meta']['mode']} mode)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_shapes(results: dict[str, Any], path: Path) -> None:
    """One bar per ratio target (measured value) with its goal marked; green met, red missed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [t for t in results.get("targets", []) if t.get("unit") == "x"]
    fig, ax = plt.subplots(figsize=(11, 0.45 * max(len(rows), 4) + 1.5))
    for y, t in enumerate(rows):
        value, threshold = t["value"], float(t["goal"].split()[1].rstrip("x"))
        color = {True: "tab:green", False: "tab:red", None: "lightgray"}[t["met"]]
        ax.barh(y, value or 0.0, color=color, height=0.6)
        ax.plot([threshold, threshold], [y - 0.4, y + 0.4], color="black", linewidth=2)
        label = "not measured" if value is None else f"{value:.2f} (goal {t['goal']})"
        ax.text(max(value or 0.0, threshold) + 0.05, y, label, va="center", fontsize=7)
    ax.set_yticks(range(len(rows)))
    names = [f"goal {t['id']}: {t['name']}" if t.get("id") else t["name"] for t in rows]
    ax.set_yticklabels(names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, max([2.8] + [(t["value"] or 0) * 1.3 for t in rows]))
    ax.set_xlabel("measured ratio (black mark: goal; >= higher is better, <= lower is better)")
    ax.grid(True, axis="x", alpha=0.3)
    ax.set_title(f"whisper-serve shapes of work: ratio per goal ({results['meta']['mode']} mode)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
