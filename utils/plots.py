"""Plots of an evaluation's figures (utils/evaluation.py): recognition against strangers accepted."""
from __future__ import annotations

from pathlib import Path


def plot(figures: dict, path: Path, title: str = "") -> Path:
    """Draw recognition against strangers accepted (or wrong names, without strangers) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    against = "strangers_accepted" if figures["strangers"] else "wrong"
    label = "strangers accepted (%)" if figures["strangers"] else "wrong names (%)"
    figure, (left, right) = pyplot.subplots(1, 2, figsize=(12, 5))
    curve = figures["curve"]
    for points, style, name in ((curve["ratio"], "-", f"ours, ratio 0.40-1.00 (threshold {figures['rule']['threshold']:.2f})"),
                                (curve["threshold"], "--", f"ours, threshold 0.20-0.70 (ratio {figures['rule']['ratio']:.2f})")):
        left.plot([100 * p[against] for p in points], [100 * p["recognised"] for p in points], style, label=name)
    left.plot([100 * figures[f"{against}_rate" if against == "strangers_accepted" else "wrong_rate"]],
              [100 * figures["recognition_rate"]], "o", color="black", label="this model")
    if "baseline" in figures:
        plain = figures["baseline"]
        left.plot([100 * p[against] for p in plain["curve"]], [100 * p["recognised"] for p in plain["curve"]], ":",
                  label="plain recipe, threshold 0.20-0.70")
        left.plot([100 * plain[f"{against}_rate" if against == "strangers_accepted" else "wrong_rate"]],
                  [100 * plain["recognition_rate"]], "s", color="grey", label="plain recipe at 0.6")
        if plain.get("nearest_curve"):
            left.plot([100 * p[against] for p in plain["nearest_curve"]],
                      [100 * p["recognised"] for p in plain["nearest_curve"]], "-.", color="grey",
                      label="nearest photo only, threshold 0.20-0.70")
    left.axvline(1.0, color="red", alpha=0.4, linewidth=1, label="1%")
    left.set_xscale("symlog", linthresh=1.0)
    left.set_xlim(0, 100)
    left.set_ylim(0, 100)
    left.set_xlabel(label)
    left.set_ylabel("test photos recognised (%)")
    left.grid(True, which="both", alpha=0.3)
    left.legend(loc="lower right", fontsize=8)
    left.set_title("recognition against " + label.split(" (")[0])

    points = curve["ratio"]
    ratios = [p["ratio"] for p in points]
    right.plot(ratios, [100 * p["recognised"] for p in points], label="recognised")
    right.plot(ratios, [100 * p["wrong"] for p in points], label="wrong names")
    if figures["strangers"]:
        right.plot(ratios, [100 * p["strangers_accepted"] for p in points], label="strangers accepted")
    right.axvline(figures["rule"]["ratio"], color="black", linestyle=":", label="this model's ratio")
    right.set_xlabel(f"ratio (distance / runner-up distance), threshold {figures['rule']['threshold']:.2f}")
    right.set_ylabel("%")
    right.set_ylim(0, 100)
    right.grid(True, alpha=0.3)
    right.legend(fontsize=8)
    right.set_title("the decision parameter")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return path
