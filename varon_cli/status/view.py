"""The running system as `varon status` sees it, and whether it is healthy.

Sources: the metrics files in `status.dir` (one per running collect, bars,
features, signal and execute process, see metrics.py), the executors
registered in `execute.state_dir` (`StateDir.running()`), and the kill file
there. Nothing here writes, except `prune`, which forgets the files of
processes that died without removing them.

Unhealthy (each a line in `problems`):
- a process whose heartbeat is older than `status.stale_after` (frozen, stopped, starved);
- a process whose pid is gone (killed with -9, crashed hard): until `varon status --prune`;
- a collector whose feed is lost (nothing received for twice its watchdog) or that gave up;
- the kill switch engaged; a breaker engaged in a running executor;
- a command named by `--expect` with no healthy process.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger("varon.status")

STAGES = {name: i for i, name in enumerate(("collect", "bars", "features", "signal", "execute"))}  # pipeline order


def read_processes(status_dir: Path) -> list[dict[str, Any]]:
    """Every metrics file in the directory, in pipeline order, then oldest first (unreadable ones skipped)."""
    out = []
    try:
        paths = list(status_dir.glob("[0-9]*.json"))
    except OSError:
        return out
    for path in paths:
        try:
            record = json.loads(path.read_bytes())
            if not isinstance(record, dict) or "pid" not in record:
                raise ValueError("not a metrics record")
        except FileNotFoundError:
            continue  # the process ended while we looked
        except (OSError, ValueError, UnicodeDecodeError):
            log.debug("skipping unreadable metrics file %s", path)
            continue
        record["_path"] = str(path)
        out.append(record)
    return sorted(out, key=lambda r: (STAGES.get(r.get("command"), len(STAGES)), r.get("started_ns") or 0,
                                      r.get("pid") or 0))


def _assess(record: dict[str, Any], now_ns: int, stale_after_s: float) -> dict[str, Any]:
    from varon_cli.execution.statedir import pid_alive

    pid = int(record.get("pid") or 0)
    alive = pid_alive(pid, record.get("proc_start"))
    age = (now_ns - int(record.get("heartbeat_ns") or 0)) / 1e9
    state = "ok"
    if not alive:
        state = "dead"
    elif age > stale_after_s:
        state = "stale"
    feed = record.get("feed") or {}
    if state == "ok" and feed.get("state") in ("lost", "gave up"):
        state = "feed " + feed["state"]
    view = {k: v for k, v in record.items() if not k.startswith("_")}
    view.update({"alive": alive, "heartbeat_age_s": age, "state": state,
                 "uptime_s": (now_ns - int(record.get("started_ns") or now_ns)) / 1e9, "file": record.get("_path")})
    return view


def collect(status_dir: Path | str, state_dir: Path | str, stale_after_s: float,
            expect: Iterable[str] = ()) -> dict[str, Any]:
    """The whole picture as one JSON-ready dict: processes, executors, kill switch, health."""
    from varon_cli.execution.killswitch import is_engaged

    status_dir, state_dir = Path(status_dir), Path(state_dir)
    now_ns = time.time_ns()
    processes = [_assess(r, now_ns, stale_after_s) for r in read_processes(status_dir)]
    problems: list[str] = []
    for p in processes:
        who = f"{p.get('label') or p.get('command')} (pid {p.get('pid')})"
        if p["state"] == "dead":
            problems.append(f"{who}: not running, left its metrics file behind (crashed or killed -9; "
                            f"`varon status --prune` forgets it)")
        elif p["state"] == "stale":
            problems.append(f"{who}: no heartbeat for {p['heartbeat_age_s']:.0f} s (stale after {stale_after_s:g} s)")
        elif p["state"].startswith("feed "):
            feed = p["feed"]
            detail = feed.get("failed") or f"nothing received for {feed.get('silent_s', 0):.0f} s"
            problems.append(f"{who}: feed {feed['state']}: {detail}")
    executors = []
    seen_pids = set()
    for p in processes:
        ex = p.get("executor")
        if ex and p["state"] != "dead":
            seen_pids.add(p["pid"])
            executors.append({**ex, "pid": p["pid"], "running": True, "metrics": True, "process_state": p["state"]})
            engaged = [k for k in ("daily", "drawdown") if ex.get("breakers", {}).get(k)]
            for key in engaged:
                problems.append(f"executor {ex.get('name')} (pid {p['pid']}): {key} breaker engaged (reduce-only)")
    for info in _registered(state_dir):
        if info.pid not in seen_pids:
            executors.append({"name": info.name, "pid": info.pid, "running": True, "metrics": False,
                              "started_ns": info.started_ns, "argv": info.argv})
    kill_reason = is_engaged(state_dir) if state_dir.is_dir() else None
    if kill_reason is not None:
        problems.append(f"kill switch engaged in {state_dir}: {kill_reason} (`varon execute reset` releases it)")
    for name in expect:
        healthy = [p for p in processes if p["state"] == "ok" and _matches(p, name)]
        if not healthy:
            problems.append(f"expected {name}: no healthy process running")
    return {
        "time_ns": now_ns, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now_ns / 1e9)),
        "healthy": not problems, "problems": problems,
        "status_dir": str(status_dir), "state_dir": str(state_dir), "stale_after_s": stale_after_s,
        "expect": list(expect),
        "processes": processes, "executors": executors,
        "kill_switch": {"engaged": kill_reason is not None, "reason": kill_reason},
    }


def _matches(process: dict[str, Any], name: str) -> bool:
    """`collect` matches every collector, `collect coinbase` only that one, `execute btc` the executor named btc."""
    label = str(process.get("label") or process.get("command") or "")
    return label == name or label.startswith(name + " ") or process.get("command") == name


def _registered(state_dir: Path) -> list:
    """Executors registered in the state directory (without creating it when it does not exist)."""
    if not (state_dir / "executors").is_dir():
        return []
    from varon_cli.execution.statedir import StateDir

    try:
        return StateDir(state_dir).running()
    except Exception:  # noqa: BLE001 - a status view never fails over a registration
        log.debug("cannot read executor registrations in %s", state_dir, exc_info=True)
        return []


def prune(report: dict[str, Any]) -> list[str]:
    """Remove the metrics files of dead processes; returns what was removed."""
    removed = []
    for p in report["processes"]:
        if p["state"] == "dead" and p.get("file"):
            try:
                Path(p["file"]).unlink()
                removed.append(p["file"])
            except FileNotFoundError:
                pass
    return removed


def reader_for(cfg: Any, expect: Iterable[str] = ()) -> Callable[[], dict[str, Any]]:
    """A function giving the current report for a config (the Prometheus endpoint calls it per scrape)."""
    from varon_cli.intervals import parse_duration

    stale = parse_duration(cfg.status.stale_after, "stale_after") / 1e9
    expected = list(expect)
    return lambda: collect(cfg.status.dir, cfg.execute.state_dir, stale, expected)
