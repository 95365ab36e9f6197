"""The conformance report: report.json (for machines) and report.md (for the pull request).

A verdict per capability: fail when any of its checks failed, incomplete when a check hit an error of
the suite itself, pass when all that ran passed, skipped (with the reason) when none ran.

The overall verdict and the exit code:

    pass        0   every selected capability passed, or was skipped for a reason about the driver or GPUs
    fail        1   a check found the driver wrong
    incomplete  3   interrupted, timed out, no cluster, or the suite itself failed: no verdict
    error       4   bad input (profile, template, kubeconfig, flag): nothing ran

A run on sim is headed SIMULATED: it proves the suite and the driver's logic, it is not a conformance
claim.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

CAPABILITIES: dict[str, str] = {
    "publish": "publishes each GPU once, shareable, with memory and a valid requestPolicy",
    "sharing": "packs floor(free/request) sharers on one GPU from two namespaces, all Running",
    "exclusivity": "a claim without a capacity request (or asking for all memory) takes the whole GPU",
    "overcapacity": "rejects the sharer that does not fit and a request above the card's memory",
    "release": "frees capacity when sharers go, so a larger claim then starts",
    "rounding": "rounds requests as the published requestPolicy says; rejects requests above max",
    "selectors": "CEL product selectors match only that model; a wrong product stays Pending",
    "visibility": "every sharer reaches Running and sees its own GPU and granted memory",
    "lifecycle": "driver restart keeps sharers running; slices come back; nothing is left behind",
    "enforcement": "a sharer cannot use more GPU memory than it was granted (real GPUs)",
}

EXIT_CODES: dict[str, int] = {"pass": 0, "fail": 1, "incomplete": 3, "error": 4}

SIMULATED_BANNER = (
    "SIMULATED: this run used the sim cluster (simulated control plane, real HTTP API, "
    "real driver processes, mock GPUs). It is not a conformance claim."
)


@dataclass
class CheckResult:
    nodeid: str
    capability: str
    outcome: str  # passed, failed (the driver), error (the suite), skipped
    duration: float
    reason: str = ""
    gpus: list[str] = field(default_factory=list)
    diagnostics: dict[str, Any] = field(default_factory=dict)


def verdicts(checks: list[CheckResult]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for cap, desc in CAPABILITIES.items():
        mine = [c for c in checks if c.capability == cap]
        if not mine:
            continue
        failed = [c for c in mine if c.outcome == "failed"]
        errors = [c for c in mine if c.outcome == "error"]
        passed = [c for c in mine if c.outcome == "passed"]
        if failed:
            verdict, reason = "fail", failed[0].reason
        elif errors:
            verdict, reason = "incomplete", errors[0].reason
        elif passed:
            verdict, reason = "pass", ""
        else:
            verdict, reason = "skipped", mine[0].reason
        out[cap] = {
            "verdict": verdict,
            "reason": reason,
            "description": desc,
            "checks": [
                {
                    "test": c.nodeid,
                    "outcome": c.outcome,
                    "seconds": round(c.duration, 3),
                    "reason": c.reason,
                    "gpus": c.gpus,
                }
                for c in mine
            ],
        }
    return out


def build(
    meta: dict[str, Any],
    checks: list[CheckResult],
    rejections: list[Any],
    error: str | None = None,
    incomplete: list[str] | None = None,
) -> dict[str, Any]:
    """``error``: the bad input that stopped the run; ``incomplete``: why the run has no verdict
    (interrupted, timed out, the suite failed)."""
    report: dict[str, Any] = {
        "simulated": bool(meta.get("simulated")),
        "banner": (meta.get("banner") or SIMULATED_BANNER) if meta.get("simulated") else "",
        **meta,
        "capabilities": verdicts(checks),
        "rejections": [asdict(r) if hasattr(r, "__dataclass_fields__") else r for r in rejections],
        "failures": [
            {
                "test": c.nodeid,
                "capability": c.capability,
                "reason": c.reason,
                "gpus": c.gpus,
                "diagnostics": c.diagnostics,
            }
            for c in checks
            if c.outcome in ("failed", "error")
        ],
        "checks_run": {
            outcome: sum(c.outcome == outcome for c in checks)
            for outcome in ("passed", "failed", "error", "skipped")
        },
    }
    reasons = list(incomplete or [])
    reasons += [f"{c.nodeid}: {c.reason}" for c in checks if c.outcome == "error"]
    if error:
        report["error"] = error
    caps = report["capabilities"]
    if error:
        report["verdict"] = "error"
    elif reasons:
        report["verdict"] = "incomplete"
    elif any(c.outcome == "failed" for c in checks):
        report["verdict"] = "fail"
    elif any(v["verdict"] == "pass" for v in caps.values()):
        # Skipped capabilities (not claimed by the profile, or no GPU for them) are listed with their reason.
        report["verdict"] = "pass"
    else:
        reasons.append("no check passed: every selected check was skipped")
        report["verdict"] = "incomplete"
    if reasons:
        report["incomplete"] = reasons
    report["exit_code"] = EXIT_CODES[report["verdict"]]
    return report


def render_markdown(report: dict[str, Any]) -> str:
    lines: list[str] = []
    title = "GPU-sharing DRA conformance report"
    if report.get("simulated"):
        lines += [f"# SIMULATED — {title}", "", f"> **{report['banner']}**", ""]
    else:
        lines += [f"# {title}", ""]
    lines += [f"**Overall: {report['verdict'].upper()}**", ""]
    if report.get("error"):
        lines += [f"Run stopped early (bad input, nothing ran): {report['error']}", ""]
    if report.get("incomplete"):
        ran = report.get("checks_run") or {}
        lines += ["This is not a verdict: the run did not complete.", ""]
        lines += [f"- {r}".replace("\n", " ")[:1000] for r in report["incomplete"]]
        lines += ["", "What did run: " + ", ".join(f"{n} {k}" for k, n in ran.items()) + ".", ""]
    lines += ["| | |", "|---|---|"]
    for label, keyname in (
        ("Cluster provider", "provider"),
        ("Cluster", "cluster"),
        ("Kubernetes", "kubernetes_version"),
        ("Driver profile", "driver_profile"),
        ("Driver", "driver_name"),
        ("Driver image", "driver_image"),
        ("Started", "started"),
        ("Wall time (s)", "wall_seconds"),
    ):
        if report.get(keyname) not in (None, ""):
            lines.append(f"| {label} | {report[keyname]} |")
    lines.append("")
    if report.get("gpus"):
        lines += ["## GPUs per node", ""]
        for node, gpus in report["gpus"].items():
            lines.append(f"- **{node}**: " + "; ".join(gpus))
        lines.append("")
    if report.get("capacities"):
        # Every consumable capacity counts: a request consumes each one, asked for or by its default.
        lines += [
            "## Published capacities (preflight)",
            "",
            "| device | capacity | value and requestPolicy |",
            "|---|---|---|",
        ]
        for device, caps in report["capacities"].items():
            for name, described in caps.items():
                lines.append(f"| {device} | {name} | {described.get('summary', '')} |")
        if report.get("share_requests"):
            asks = ", ".join(f"{k}: {v}" for k, v in report["share_requests"].items())
            lines += [
                "",
                f"A sharer asks for: {asks} (driver profile `shareRequests`; capacities not "
                "named get no request, so their default applies).",
            ]
        lines.append("")
    lines += [
        "## Verdict per capability",
        "",
        "| capability | verdict | what it checks | reason |",
        "|---|---|---|---|",
    ]
    for cap, v in report["capabilities"].items():
        reason = (v["reason"] or "").replace("|", "\\|").replace("\n", " ")[:300]
        lines.append(f"| {cap} | **{v['verdict']}** | {v['description']} | {reason} |")
    lines.append("")
    if report.get("rejections"):
        lines += [
            "## Rejections (scheduler decision to verdict)",
            "",
            "The decision time is the PodScheduled condition's lastTransitionTime, which has "
            "whole-second "
            "resolution; the verdict comes after the settle window.",
            "",
            "| scenario | pod | signal seen after (s) | verdict after (s) |",
            "|---|---|---|---|",
        ]
        for r in report["rejections"]:
            lines.append(
                f"| {r['scenario']} | {r['pod']} | {r['signal_after']:.2f} | {r['verdict_after']:.2f} |"
            )
        lines.append("")
    if report.get("failures"):
        lines += ["## Failures and diagnostics", ""]
        for f in report["failures"]:
            lines += [f"### {f['capability']}: `{f['test']}`", ""]
            if f.get("gpus"):
                lines += [f"GPUs: {'; '.join(f['gpus'])}", ""]
            lines += ["```", f["reason"][:4000], "```", ""]
            for name, value in (f.get("diagnostics") or {}).items():
                text = value if isinstance(value, str) else json.dumps(value, indent=1, default=str)
                lines += [
                    f"<details><summary>{name}</summary>",
                    "",
                    "```",
                    text[:20000],
                    "```",
                    "",
                    "</details>",
                    "",
                ]
    return "\n".join(lines) + "\n"


def write(report_dir: Path, report: dict[str, Any]) -> tuple[Path, Path]:
    report_dir.mkdir(parents=True, exist_ok=True)
    jpath, mpath = report_dir / "report.json", report_dir / "report.md"
    jpath.write_text(json.dumps(report, indent=2, default=str) + "\n")
    mpath.write_text(render_markdown(report))
    return jpath, mpath
