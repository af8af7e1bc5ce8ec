"""The run's results as a markdown report and PNG plots (matplotlib, imported only here)."""

from __future__ import annotations


def _t(x, unit="s"):
    """A median with its min–max range."""
    return f"{x['median']:.3g} {unit} ({x['min']:.3g}–{x['max']:.3g})"


def _table(header, rows) -> list:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(map(str, r)) + " |" for r in rows]


def markdown(result, plots=()) -> str:
    m = result["machine"]
    gpu = "; ".join(m["gpu"]) if m["gpu"] else "none"
    lines = [
        f"# deltaprop bench: {result['tag']}",
        "",
        f"{m['date']}, commit {m['git']}. CPU: {m['cpu']}, {m['cores']} cores; GPU: {gpu}; "
        f"Python {m['python']}, " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v) + f"; BLAS {m['blas']}. "
        f"Load average (1, 5, 15 min) {m['load_average']} at the start, {m.get('load_average_at_end')} at the end.",
        "",
        f"Data: {result['data']}. Times are medians of {result['settings']['repeats']} repeats after a warm-up, "
        "with (min–max); every ratio is from this run. A fit's warm-up is its first epoch, or its first two where "
        "the backend records CUDA graphs (the one-step graphs, then the whole epoch's).",
    ]
    suites = result["suites"]
    if "kernels" in suites:
        lines += ["", "## Kernels", ""]
        for name, k in suites["kernels"].items():
            c = k["ceilings"]
            peak = k["datasheet"]
            lines.append(f"**{name}** on {k['device']}: measured ceilings SGEMM {c.get('sgemm_gflops', float('nan')):.0f} "
                         f"GFLOP/s (n = {c.get('sgemm_n')}), copy {c.get('copy_gbps', float('nan')):.1f} GB/s; datasheet "
                         + (f"{peak['gflops']:.0f} GFLOP/s, {peak['gbps']:.0f} GB/s." if peak else "none (a CPU: measured only).")
                         + " Fraction: of the SGEMM ceiling for GEMM-bound loops, of the copy ceiling for the others.")
            lines.append("")
            rows = [(r["kernel"], r["batch"], f"{r['us']['first']:.1f}", f"{r['us']['median']:.1f} ({r['us']['min']:.1f}–{r['us']['max']:.1f})",
                     f"{r['gflops']:.1f}", f"{r['gbps']:.1f}", f"{r.get('of_ceiling', float('nan')):.0%}",
                     f"{r['of_datasheet']:.1%}" if "of_datasheet" in r else "–", r.get("launches_per_call", "–"))
                    for r in k["rows"]]
            lines += _table(["kernel", "batch", "first call µs", "µs per call", "GFLOP/s", "GB/s", "of ceiling",
                             "of datasheet", "launches"], rows) + [""]
    if "train" in suites:
        tr = suites["train"]
        lines += ["", "## Train: one epoch", "", "Warm-up (a 256-sample fit, cold then warm): " + "; ".join(
            f"{w['backend']} {w['cold_s']:.3f} s cold, {w['warm_s']:.3f} s warm" for w in tr["warmup"]), ""]
        rows = [(r["backend"], r["net"], r["batch"], f"{r['first_epoch_s']:.3g}", _t(r["epoch_s"]), f"{r['samples_per_s']:,.0f}",
                 f"{r['us_per_step']:.1f}", f"{r['gflops']:.1f}", f"{r['launches_per_step']:.1f}" if "launches_per_step" in r else "–")
                for r in tr["rows"]]
        lines += _table(["backend", "net", "batch", "first epoch s", "epoch", "samples/s", "µs/step", "GFLOP/s",
                         "launches/step"], rows)
        cross = tr["crossover"]
        lines += ["", "GPU overtakes the CPU (NumPy) from batch: " + ("; ".join(
            f"{c['backend']} {c['net']}: {c['overtakes_at'] or 'never in ' + str(c['batches'])}" for c in cross)
            if cross else "no GPU backend in this run.")]
    if "peers" in suites:
        lines += ["", "## Peers (same net, hyperparameters, data and epochs)", "",
                  "`× NumPy`: the trainer's epoch time over the NumPy backend's (above 1: NumPy is faster).", ""]
        rows = [(r["net"], r["batch"], r["trainer"], r["skipped"], "", "", "") if "skipped" in r else
                (r["net"], r["batch"], r["trainer"], _t(r["epoch_s"]), f"{r['first_epoch_s']:.3g}", f"{r['us_per_step']:.1f}",
                 f"{r['numpy_speedup']:.2f}" if "numpy_speedup" in r else "–") for r in suites["peers"]["rows"]]
        lines += _table(["net", "batch", "trainer", "epoch", "first epoch s", "µs/step", "× NumPy"], rows)
        lines += ["", "scikit-learn's classifier always ends in softmax + cross-entropy: for the small net "
                  "(sigmoid + mse) it trains that output on the same sigmoid hidden layer. "
                  "CPU goals (NumPy at least as fast as the CPU peers on the reference net, 2× on the small net):"]
        lines += goals(suites["peers"]["rows"])
    if "scaling" in suites:
        sc = suites["scaling"]
        lines += ["", f"## Scaling ({sc['samples']} samples per epoch, batch {sc['batch']})", ""]
        rows = [(r["backend"], r["sweep"], r["value"], f"{r['params']:,}", _t(r["epoch_s"]), f"{r['gflops']:.1f}")
                for r in sc["rows"]]
        lines += _table(["backend", "sweep", "width or depth", "parameters", "epoch", "GFLOP/s"], rows)
        lines += ["", "Growth (epoch time ∝ value^k, fitted in log-log): " + "; ".join(
            f"{g['backend']} {g['sweep']} {g['from']}→{g['to']}: k = {g['exponent']:.2f}" for g in sc["growth"])]
    if "tta" in suites:
        tta = suites["tta"]
        lines += ["", "## Time to accuracy", ""]
        if "skipped" in tta:
            lines.append(f"Not measured: {tta['skipped']}.")
        else:
            rows = [(r["backend"], r["net"], f"{r['target']:.0%}", f"{r['seconds']:.1f} s" if r["reached"] else
                     f"not reached ({r['elapsed_s']:.1f} s)", r["epochs"], f"{r['test_accuracy']:.4f}") for r in tta["rows"]]
            lines += _table(["backend", "net", "target", "time", "epochs", "test accuracy"], rows)
            if all("warmup_s" in r for r in tta["rows"]):
                lines += ["", "Off the clock, a warm-up fit on a few batches with the same test evaluation (JIT "
                          "compilation): " + ", ".join(f"{r['backend']} {r['warmup_s']:.1f} s" for r in tta["rows"])]
    if result["errors"]:
        lines += ["", "## Errors", ""] + [f"- {e}" for e in result["errors"]]
    lines += [""] + [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


PEERS = ("torch-cpu", "torch-cuda", "torch-cuda-graph", "torch-compile-cpu", "torch-compile-cuda", "jax", "sklearn")
CPU_PEERS = ("torch-cpu", "sklearn")
GOALS = {"reference": 1.0, "small": 2.0}  # NumPy's speed-up over the CPU peers that the project aims for


def goals(rows) -> list:
    lines = []
    for net, goal in GOALS.items():
        ratios = {(r["batch"], r["trainer"]): r["numpy_speedup"] for r in rows
                  if r["net"] == net and r["trainer"] in CPU_PEERS and "numpy_speedup" in r}
        for batch in sorted({b for b, _ in ratios}):
            mine = {t: v for (b, t), v in ratios.items() if b == batch}
            verdict = "met" if all(v >= goal for v in mine.values()) else "NOT met"
            lines.append(f"- {net} net, batch {batch}: NumPy is " + ", ".join(f"{v:.2f}× as fast as {t}" for t, v in mine.items())
                         + f" (goal ≥ {goal:g}×: {verdict})")
    return lines


def plots(result, stem) -> list:
    """Speed-up of each GPU backend over the CPU per batch size, epoch time against the peers, fraction of peak."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    suites = result["suites"]
    title = f"deltaprop bench, {result['tag']}"
    if "train" in suites:
        rows = suites["train"]["rows"]
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
        cpu = {(r["net"], r["batch"]): r["epoch_s"]["median"] for r in rows if r["backend"] == "numpy"}
        gpu_lines = 0
        for key in sorted({(r["backend"], r["net"]) for r in rows}):
            pts = sorted((r["batch"], r["samples_per_s"], r["epoch_s"]["median"]) for r in rows if (r["backend"], r["net"]) == key)
            left.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=" ".join(key))
            if key[0] != "numpy":
                sp = [(b, cpu[(key[1], b)] / t) for b, _, t in pts if (key[1], b) in cpu]
                right.plot([p[0] for p in sp], [p[1] for p in sp], marker="o", label=" ".join(key))
                gpu_lines += 1
        left.set(xscale="log", yscale="log", xlabel="batch size", ylabel="samples/s", title="training throughput")
        left.legend(fontsize=8)
        right.set(xscale="log", xlabel="batch size", ylabel="speed-up over NumPy (CPU)", title="GPU over CPU")
        if gpu_lines:
            right.axhline(1, color="grey", lw=0.8)
            right.legend(fontsize=8)
        else:
            right.text(0.5, 0.5, "no GPU backend in this run", ha="center", va="center", transform=right.transAxes)
        written.append(_save(fig, stem + "-speedup.png", title))
    if "peers" in suites:
        rows = [r for r in suites["peers"]["rows"] if "skipped" not in r]
        cases = sorted({(r["net"], r["batch"]) for r in rows})
        fig, axes = plt.subplots(1, max(len(cases), 1), figsize=(5 * max(len(cases), 1), 4), squeeze=False)
        for ax, (net, batch) in zip(axes[0], cases):
            mine = [r for r in rows if (r["net"], r["batch"]) == (net, batch)]
            med = [r["epoch_s"]["median"] for r in mine]
            err = [[m - r["epoch_s"]["min"] for m, r in zip(med, mine)], [r["epoch_s"]["max"] - m for m, r in zip(med, mine)]]
            ax.bar([r["trainer"] for r in mine], med, yerr=err, color=["C1" if r["trainer"] in PEERS else "C0" for r in mine])
            ax.set(ylabel="seconds per epoch", title=f"{net} net, batch {batch}")
            ax.tick_params(axis="x", labelrotation=30)
        written.append(_save(fig, stem + "-peers.png", title))
    if "kernels" in suites:
        fig, ax = plt.subplots(figsize=(10, 4.5))
        width = 0.8 / max(len(suites["kernels"]), 1)
        for i, (name, k) in enumerate(suites["kernels"].items()):
            rows = [r for r in k["rows"] if "of_ceiling" in r and r["batch"] == max(x["batch"] for x in k["rows"])]
            ax.bar([j + i * width for j in range(len(rows))], [r["of_ceiling"] for r in rows], width,
                   label=f"{name}, batch {rows[0]['batch'] if rows else '-'}")
            ax.set_xticks([j for j in range(len(rows))], [r["kernel"] for r in rows], rotation=30, ha="right", fontsize=7)
        ax.set(ylabel="fraction of the measured ceiling", title="kernels: of SGEMM (GEMM loops) or copy (others)")
        ax.legend(fontsize=8)
        written.append(_save(fig, stem + "-peak.png", title))
    return written


def _save(fig, path, title):
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
