"""Stress: many logins from several parent processes under hostile traffic and kills.

An orchestrator (this process) runs the sandbox (``--servers`` servers, 64 by default) and
starts ``--parents`` parent processes (``scripts/_stress_parent.py``, 4 by default), each a
``runner.Runner`` (zygote start method) logging in to its share of the servers, every round
(``--rounds``, 3) from scratch. All of them share ONE lease registry and ONE token store.
Each login's consent browser waits for the orchestrator's word, so that while every login of
the round waits:

- every callback port is attacked (``scripts/_stress_hostile.py``): other paths,
  ``/favicon.ico``, a forged state, a wrong ``Host``, an oversized query, another method,
  garbage bytes, a half-open connection and a slowloris head, kept open while the login goes on;
- in the middle round, one parent is SIGKILLed (its zygote and children must go by
  themselves, its leases go stale and must be gone after the next write by someone else);
- ``--kills`` random login children (children of a zygote) are SIGKILLed each round, found
  through their lease record (``owner`` ``runner:<name>``, ``server_pid``), checked to be a
  child of that parent's zygote first;
- in the middle round, another parent's zygote is SIGKILLed after its children forked:
  those logins go on, and the next round's logins get a new zygote.

Then the browsers complete the consents, and the round's results come back. At the end the
invariants are printed, each PASS or FAIL with its counts: every login has exactly one
outcome (ok, FlowCrashed, or killed with its parent); only killed logins are FlowCrashed; no
token crossed to another server (results and the store's files); hostile traffic never got
a success; the zygote was replaced; no orphan process (every process started for the run
carries an environment marker); no live lease left, stale records gone after the next write;
no fd or thread growth in any parent across rounds; the whole run within its deadline.

Usage: python scripts/stress.py [--servers 64] [--parents 4] [--rounds 3] [--kills 2]
       [--seed N] [--deadline 110]
Loopback only; every wait is bounded; exit 0 when every invariant holds, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import queue
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from _stress_hostile import Attack, Tally, attack

from portlease import Registry
from runner import TokenStore
from runner.sandbox import Sandbox

PARENT_SCRIPT = Path(__file__).with_name("_stress_parent.py")
#: Environment markers: every process started for a run inherits them (zygotes, children).
RUN_MARKER = "RUNNER_STRESS_RUN"
PARENT_MARKER = "RUNNER_STRESS_PARENT"

LOGIN_TIMEOUT = 60.0  # per login, as the runner enforces it
STEP_TIMEOUT = 60.0  # the longest any one phase may take
GONE_TIMEOUT = 15.0  # for processes to go away by themselves
REQUEST_TIMEOUT = 15.0  # each hostile request


@dataclass
class Parent:
    """One parent process and what the orchestrator knows of it."""

    index: int
    names: list[str]
    proc: subprocess.Popen[bytes]
    log: Path
    alive: bool = True
    closing: bool = False  # its stdin was closed: it is to exit now
    exited: bool = False
    killed_in: int | None = None
    ready: bool = False
    done: bool = False
    rounds: dict[int, dict[str, Any]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"parent-{self.index + 1}"

    def send(self, cmd: str, round_: int) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps({"cmd": cmd, "round": round_}).encode() + b"\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            pass  # it died; its missing results say so


@dataclass
class Check:
    """One invariant's verdict."""

    name: str
    ok: bool
    detail: str


def fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def marked_processes(key: str, value: str) -> list[psutil.Process]:
    """Running (not zombie) processes whose environment has ``key=value``."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if proc.environ().get(key) == value:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll an observable condition (bounded); whether it held in time."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return predicate()
        time.sleep(interval)
    return True


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


class Stress:
    """One run: the sandbox, the parents, the rounds, the checks."""

    def __init__(self, args: argparse.Namespace, sandbox: Sandbox, base: Path) -> None:
        self.args = args
        self.sandbox = sandbox
        self.base = base
        self.leases = base / "leases"
        self.tokens = base / "tokens"
        for directory in (self.leases, self.tokens):
            directory.mkdir(mode=0o700)
        self.run_id = secrets.token_hex(8)
        self.rng = random.Random(args.seed)
        self.started = time.monotonic()
        self.deadline = self.started + float(args.deadline)
        self.events: queue.Queue[tuple[int, dict[str, Any]]] = queue.Queue()
        self.parents: list[Parent] = []
        self.names = [server.name for server in sandbox.servers]
        self.owner_of: dict[str, Parent] = {}
        # (round, name) -> what happened
        self.waiting: dict[tuple[int, str], dict[str, Any]] = {}
        self.results: dict[tuple[int, str], list[dict[str, Any]]] = defaultdict(list)
        self.browser_notes: list[dict[str, Any]] = []
        self.killed: set[tuple[int, str]] = set()
        self.with_parent: set[tuple[int, str]] = set()
        # violations seen along the way, by the name of the check that reports them
        self.step_problems: dict[str, list[str]] = defaultdict(list)
        self.tally = Tally()  # while the logins wait
        self.race_tally = Tally()  # racing the consents (the race thread writes it, once)
        self.ports_attacked = 0
        self.attacks: list[Attack] = []
        self.mid = (args.rounds + 1) // 2
        self.zygote_parent = 0
        self.doomed_parent = args.parents - 1
        self.killed_zygote: int | None = None
        self.parent_kill: dict[str, Any] = {}
        self.live_leases_after_round: dict[int, int] = {}

    # -- parents ----------------------------------------------------------------------------

    def start_parents(self) -> None:
        ports = sorted(server.port for server in self.sandbox.servers)
        shares: list[list[str]] = [[] for _ in range(self.args.parents)]
        for position, name in enumerate(self.names):
            shares[position % self.args.parents].append(name)
        for index, names in enumerate(shares):
            options = {
                "servers": {name: self.sandbox.server(name).url for name in names},
                "sandbox_ports": ports,
                "leases": str(self.leases),
                "tokens": str(self.tokens),
                "rounds": self.args.rounds,
                "timeout": LOGIN_TIMEOUT,
                "wait": STEP_TIMEOUT * 2,
            }
            env = dict(os.environ, **{RUN_MARKER: self.run_id, PARENT_MARKER: str(index)})
            log = self.base / f"parent-{index + 1}.log"
            with log.open("wb") as err:
                proc = subprocess.Popen(
                    [sys.executable, str(PARENT_SCRIPT), json.dumps(options)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=err,
                    env=env,
                )
            parent = Parent(index, names, proc, log)
            self.parents.append(parent)
            for name in names:
                self.owner_of[name] = parent
            threading.Thread(
                target=self._read_events, args=(parent,), name=parent.label, daemon=True
            ).start()

    def _read_events(self, parent: Parent) -> None:
        assert parent.proc.stdout is not None
        for raw in parent.proc.stdout:
            try:
                event = json.loads(raw)
            except ValueError:
                event = {"ev": "garbage", "line": raw[:200].decode(errors="replace")}
            self.events.put((parent.index, event))
        self.events.put((parent.index, {"ev": "eof"}))

    def live(self) -> list[Parent]:
        return [p for p in self.parents if p.alive]

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def pump(self, until: Callable[[], bool], timeout: float, what: str) -> bool:
        """Take events until ``until()`` holds; False (a problem noted) after ``timeout`` s
        or past the run's deadline."""
        limit = time.monotonic() + min(timeout, max(0.0, self.remaining()))
        while not until():
            left = limit - time.monotonic()
            if left <= 0:
                self.step_problems["bounded"].append(f"timed out waiting for {what}")
                return False
            try:
                index, event = self.events.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            self._note(self.parents[index], event)
        return True

    def _note(self, parent: Parent, event: dict[str, Any]) -> None:
        kind = event.get("ev")
        if kind == "ready":
            parent.ready = True
        elif kind == "waiting":
            self.waiting[(event["round"], event["name"])] = event
        elif kind == "result":
            self.results[(event["round"], event["name"])].append(event)
        elif kind == "browser":
            self.browser_notes.append(event)
        elif kind == "round_done":
            parent.rounds[event["round"]] = event
        elif kind == "done":
            parent.done = True
        elif kind == "eof":
            parent.exited = True
            if parent.alive and not parent.closing:
                parent.alive = False
                self.step_problems["exactly one outcome"].append(
                    f"{parent.label} ended by itself (exit {parent.proc.wait()}); "
                    f"stderr tail:\n{tail(parent.log)}"
                )
        else:
            self.step_problems["exactly one outcome"].append(f"{parent.label}: {event}")

    # -- one round --------------------------------------------------------------------------

    def run_round(self, round_: int) -> bool:
        """One round; False when it could not go on (a wait timed out)."""
        started = time.monotonic()
        for parent in self.live():
            parent.send("round", round_)
        expected = [(round_, n) for p in self.live() for n in p.names]
        if not self.pump(
            lambda: all(key in self.waiting for key in expected) or not self.live(),
            STEP_TIMEOUT,
            f"round {round_}'s logins to wait for consent",
        ):
            return False
        waited = time.monotonic() - started
        notes = [f"{len(expected)} logins waiting after {waited:.1f} s"]
        self.check_leases_match(round_, expected)
        notes.append(self.hostile(round_, expected))
        if round_ == self.mid:
            notes.append(self.kill_parent(round_))
        notes.append(self.kill_children(round_))
        if round_ == self.mid:
            notes.append(self.kill_zygote())
        race = self.start_race(round_)
        for parent in self.live():
            parent.send("go", round_)
        go = time.monotonic()
        finished = self.pump(
            lambda: all(round_ in p.rounds for p in self.live()),
            STEP_TIMEOUT,
            f"round {round_}'s results",
        )
        race.join(max(0.0, min(STEP_TIMEOUT, self.remaining())))
        if race.is_alive():
            self.step_problems["bounded"].append(f"round {round_}: the racing wave did not end")
        for attack_ in self.attacks:
            attack_.close()
        self.attacks = []
        ok = sum(1 for key in expected if any(r["ok"] for r in self.results.get(key, [])))
        notes.append(f"{ok} ok {time.monotonic() - go:.1f} s after the consent")
        live_left = len(Registry(self.leases).list())
        self.live_leases_after_round[round_] = live_left
        if round_ == self.mid and self.parent_kill:
            doomed = self.parents[self.doomed_parent]
            left = [r for r in Registry(self.leases).list(stale=True) if r.pid == doomed.proc.pid]
            self.parent_kill["left_after_writes"] = len(left)
        print(f"round {round_}: " + "; ".join(notes), flush=True)
        return finished

    def check_leases_match(self, round_: int, expected: list[tuple[int, str]]) -> None:
        """Every waiting login's port has a live lease naming it, served by a child."""
        records = {r.port: r for r in Registry(self.leases).list()}
        for key in expected:
            port = self.waiting[key]["port"]
            record = records.get(port)
            if record is None or record.owner != f"runner:{key[1]}" or record.server_pid is None:
                self.step_problems["no live lease left"].append(
                    f"round {round_}: {key[1]} waits on port {port} without its lease: {record}"
                )

    def targets(self, keys: list[tuple[int, str]]) -> list[tuple[int, str, str]]:
        """(port, state, issuer) of each login."""
        return [
            (
                self.waiting[key]["port"],
                self.waiting[key]["state"],
                self.sandbox.server(key[1]).issuer,
            )
            for key in keys
        ]

    def hostile(self, round_: int, expected: list[tuple[int, str]]) -> str:
        """Attack every waiting login's listener, keeping two connections open on each."""
        targets = self.targets(expected)
        started = time.monotonic()
        attacks = hostile_wave(targets, keep=True)
        tally = Tally()
        for one in attacks:
            tally.add(one.tally)
        self.tally.add(tally)
        self.attacks = attacks
        self.ports_attacked += len(targets)
        return f"hostile traffic on {len(targets)} ports: {tally.probes} probes in " + (
            f"{time.monotonic() - started:.1f} s"
        )

    def start_race(self, round_: int) -> threading.Thread:
        """A second wave, racing the consents: at every listener still meant to log in."""
        keys = [
            (round_, name)
            for parent in self.live()
            for name in parent.names
            if (round_, name) not in self.killed
        ]
        targets = self.targets(keys)

        def race() -> None:
            for one in hostile_wave(targets, keep=False):
                self.race_tally.add(one.tally)

        thread = threading.Thread(target=race, name=f"race-{round_}", daemon=True)
        thread.start()
        return thread

    def kill_parent(self, round_: int) -> str:
        doomed = self.parents[self.doomed_parent]
        if not doomed.alive:
            return f"{doomed.label} is not running"
        marked = [p.pid for p in marked_processes(PARENT_MARKER, str(doomed.index))]
        killed_at = time.monotonic()
        doomed.alive = False
        doomed.killed_in = round_
        doomed.proc.kill()
        try:
            code = doomed.proc.wait(timeout=GONE_TIMEOUT)
        except subprocess.TimeoutExpired:
            code = None
        # Its zygote and children see end of stream and exit by themselves: wait, bounded.
        cleared = wait_until(
            lambda: not marked_processes(PARENT_MARKER, str(doomed.index)), GONE_TIMEOUT
        )
        took = time.monotonic() - killed_at
        left = [p.pid for p in marked_processes(PARENT_MARKER, str(doomed.index))]
        states = [
            (r, s) for r, s in Registry(self.leases).list_states() if r.pid == doomed.proc.pid
        ]
        self.parent_kill = {
            "code": code,
            "processes": len(marked) - 1,  # its zygote and children, not itself
            "cleared": cleared,
            "took": took,
            "left": left,
            "records": len(states),
            "stale": sum(1 for _, stale in states if stale),
            "expected": len(doomed.names),
        }
        for round_left in range(round_, self.args.rounds + 1):
            for name in doomed.names:
                self.with_parent.add((round_left, name))
        return (
            f"killed {doomed.label} (pid {doomed.proc.pid}): its zygote and {len(marked) - 2} "
            f"children gone after {took:.1f} s, {len(states)} of its leases stale"
        )

    def kill_children(self, round_: int) -> str:
        candidates = sorted(
            (p.index, name)
            for p in self.live()
            for name in p.names
            if (round_, name) in self.waiting
        )
        victims = self.rng.sample(candidates, min(self.args.kills, len(candidates)))
        records = {r.owner: r for r in Registry(self.leases).list()}
        done = []
        for index, name in victims:
            parent = self.parents[index]
            record = records.get(f"runner:{name}")
            pid = None if record is None else record.server_pid
            why = self._not_a_login_child(parent, pid)
            if why is not None:
                self.step_problems["only killed logins are FlowCrashed"].append(
                    f"round {round_}: could not kill {name}'s child: {why}"
                )
                continue
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            self.killed.add((round_, name))
            done.append(f"{name} (pid {pid}, {parent.label})")
        return "killed the children of " + (", ".join(done) or "no login")

    def _not_a_login_child(self, parent: Parent, pid: int | None) -> str | None:
        """Why ``pid`` is not a login child of ``parent``'s zygote, or None if it is."""
        if pid is None:
            return "no lease record names its child"
        try:
            proc = psutil.Process(pid)
            zygote = psutil.Process(proc.ppid())
            if proc.environ().get(PARENT_MARKER) != str(parent.index):
                return f"pid {pid} does not carry {parent.label}'s marker"
            if zygote.ppid() != parent.proc.pid or "runner._child._zygote" not in zygote.cmdline():
                return f"pid {pid} is not a child of {parent.label}'s zygote"
        except psutil.Error as exc:
            return f"pid {pid}: {exc!r}"
        return None

    def kill_zygote(self) -> str:
        parent = self.parents[self.zygote_parent]
        if not parent.alive:
            return f"{parent.label} is not running"
        zygotes = [
            child
            for child in psutil.Process(parent.proc.pid).children()
            if "runner._child._zygote" in child.cmdline() and child.status() != psutil.STATUS_ZOMBIE
        ]
        if len(zygotes) != 1:
            self.step_problems["zygote replaced"].append(
                f"{parent.label} has {len(zygotes)} zygotes, not 1"
            )
            return "no zygote killed"
        zygote = zygotes[0]
        zygote.kill()
        self.killed_zygote = zygote.pid
        if not wait_until(lambda: gone(zygote.pid), GONE_TIMEOUT):
            self.step_problems["zygote replaced"].append(f"zygote {zygote.pid} outlived SIGKILL")
        return f"killed {parent.label}'s zygote (pid {zygote.pid})"

    # -- the end ----------------------------------------------------------------------------

    def finish(self) -> None:
        """Let the parents leave their blocks and exit (end of stream on their stdin);
        bounded."""
        for parent in self.live():
            parent.closing = True
            if parent.proc.stdin is not None:
                with contextlib.suppress(OSError):
                    parent.proc.stdin.close()
        self.pump(
            lambda: all(p.exited for p in self.live()),
            STEP_TIMEOUT,
            "the parents to exit",
        )
        for parent in self.live():
            try:
                code = parent.proc.wait(timeout=max(1.0, min(GONE_TIMEOUT, self.remaining())))
            except subprocess.TimeoutExpired:
                code = None
            if code != 0 or not parent.done:
                self.step_problems["exactly one outcome"].append(
                    f"{parent.label} exited {code} (done: {parent.done}); stderr tail:\n"
                    f"{tail(parent.log)}"
                )

    def checks(self) -> list[Check]:
        return [
            self.check_outcomes(),
            self.check_crashes(),
            self.check_tokens(),
            self.check_hostile(),
            self.check_zygote(),
            self.check_parent_kill(),
            self.check_orphans(),
            self.check_leases(),
            self.check_growth(),
            self.check_bounded(),
        ]

    def all_logins(self) -> list[tuple[int, str]]:
        return [(r, n) for r in range(1, self.args.rounds + 1) for n in self.names]

    def check_outcomes(self) -> Check:
        counts: Counter[str] = Counter()
        problems = list(self.step_problems["exactly one outcome"])
        for key in self.all_logins():
            results = self.results.get(key, [])
            if len(results) > 1 or (results and key in self.with_parent):
                problems.append(f"round {key[0]} {key[1]}: {len(results)} results")
            elif results:
                counts["ok" if results[0]["ok"] else str(results[0]["error"])] += 1
            elif key in self.with_parent:
                counts["killed with the parent"] += 1
            else:
                problems.append(f"round {key[0]} {key[1]}: no outcome")
        described = ", ".join(f"{n} {what}" for what, n in counts.most_common())
        return Check(
            "every login has exactly one outcome",
            not problems,
            f"{len(self.all_logins())} logins: {described}" + _listed(problems),
        )

    def check_crashes(self) -> Check:
        problems = list(self.step_problems["only killed logins are FlowCrashed"])
        crashed = 0
        for key, results in self.results.items():
            for result in results:
                if key in self.killed:
                    if result["error"] == "FlowCrashed":
                        crashed += 1
                    else:
                        problems.append(f"round {key[0]} {key[1]} killed, yet {_said(result)}")
                elif not result["ok"]:
                    problems.append(f"round {key[0]} {key[1]} not killed, yet {_said(result)}")
        for note in self.browser_notes:
            if (note["round"], note["name"]) not in self.killed:
                problems.append(f"round {note['round']} {note['name']}: consent {note['outcome']}")
        return Check(
            "only killed logins are FlowCrashed (every other login ok)",
            not problems and crashed == len(self.killed) and bool(self.killed),
            f"{len(self.killed)} children killed, {crashed} FlowCrashed" + _listed(problems),
        )

    def check_tokens(self) -> Check:
        issued = {
            name: {fingerprint(t) for t in self.sandbox.issued_tokens(name)} for name in self.names
        }
        issuers: dict[str, list[str]] = defaultdict(list)
        for name, prints in issued.items():
            for print_ in prints:
                issuers[print_].append(name)
        problems = []
        checked = 0
        for (round_, name), results in self.results.items():
            for result in results:
                if result["ok"]:
                    checked += 1
                    if issuers.get(result["token"]) != [name]:
                        problems.append(
                            f"round {round_} {name}: token issued by "
                            f"{issuers.get(result['token'], 'no server')}"
                        )
        store = TokenStore(self.tokens)
        files = 0
        for name in self.names:
            login = store.load(name)
            if login is None:
                continue
            files += 1
            if issuers.get(fingerprint(login.tokens.access_token)) != [name]:
                problems.append(f"{name}'s token file holds a token of another server")
        return Check(
            "no token crossed to another server",
            not problems and checked > 0,
            f"{checked} tokens from results and {files} token files, each issued by its own "
            f"server and no other" + _listed(problems),
        )

    def check_hostile(self) -> Check:
        problems = self.tally.accepted + self.tally.unanswered + self.race_tally.accepted
        problems += self.race_tally.unanswered
        if self.tally.gone:
            problems.append(f"{self.tally.gone} requests found no listener while logins waited")
        return Check(
            "hostile traffic on every waiting login's port, none of it accepted",
            not problems and self.ports_attacked == len(self.waiting),
            f"{self.ports_attacked} ports while waiting: {self.tally.summary()}; racing the "
            f"consents: {self.race_tally.summary()}" + _listed(problems),
        )

    def check_zygote(self) -> Check:
        parent = self.parents[self.zygote_parent]
        problems = list(self.step_problems["zygote replaced"])
        if self.killed_zygote is None:
            problems.append("no zygote was killed")
        went_on = [
            key
            for key in self.all_logins()
            if key[0] == self.mid and self.owner_of[key[1]] is parent and key not in self.killed
        ]
        went_on_ok = sum(1 for key in went_on if any(r["ok"] for r in self.results.get(key, [])))
        if went_on_ok != len(went_on):
            problems.append(f"{len(went_on) - went_on_ok} of its forked logins failed")
        started = {r: done["zygotes_started"] for r, done in sorted(parent.rounds.items())}
        if self.mid < self.args.rounds:
            want = {r: 1 if r <= self.mid else 2 for r in range(1, self.args.rounds + 1)}
            if started != want:
                problems.append(f"zygotes started per round {started}, not {want}")
            after = parent.rounds.get(self.mid + 1, {}).get("zygotes", [])
            if self.killed_zygote in after or len(after) != 1:
                problems.append(f"zygotes after the kill: {after}")
        for other in self.parents:
            if other is not parent:
                extra = {r: d["zygotes_started"] for r, d in other.rounds.items()}
                if any(n != 1 for n in extra.values()):
                    problems.append(f"{other.label} started zygotes {extra}")
        return Check(
            "a killed zygote: its forked logins went on, the next round got a new one",
            not problems,
            f"{parent.label}: zygote {self.killed_zygote} killed in round {self.mid}, "
            f"{went_on_ok} of its {len(went_on)} forked logins ok, zygotes started per round "
            f"{started}" + _listed(problems),
        )

    def check_parent_kill(self) -> Check:
        kill = self.parent_kill
        if not kill:
            return Check("a killed parent leaves nothing live", False, "no parent was killed")
        problems = []
        if kill["code"] != -signal.SIGKILL:
            problems.append(f"exit {kill['code']}")
        if not kill["cleared"]:
            problems.append(f"its processes {kill['left']} outlived it by {GONE_TIMEOUT} s")
        if kill["processes"] != kill["expected"] + 1:
            problems.append(
                f"{kill['processes']} of its processes seen, not its zygote and "
                f"{kill['expected']} children"
            )
        if not (kill["records"] == kill["stale"] == kill["expected"]):
            problems.append(
                f"{kill['records']} records, {kill['stale']} stale; {kill['expected']} expected"
            )
        if kill.get("left_after_writes") != 0:
            problems.append(f"{kill.get('left_after_writes')} records left after the next writes")
        return Check(
            "a killed parent: its zygote and children go, its leases stale, gone after the "
            "next write",
            not problems,
            f"its zygote and {kill['processes'] - 1} children gone {kill['took']:.1f} s after "
            "SIGKILL; "
            f"{kill['stale']}/{kill['records']} records stale, "
            f"{kill.get('left_after_writes')} left after other processes' writes"
            + _listed(problems),
        )

    def check_orphans(self) -> Check:
        wait_until(lambda: not marked_processes(RUN_MARKER, self.run_id), GONE_TIMEOUT)
        left = [
            f"{p.pid}: {' '.join(p.cmdline())[:80]}"
            for p in marked_processes(RUN_MARKER, self.run_id)
        ]
        return Check(
            "no orphan process",
            not left,
            f"{len(left)} processes with the run's marker still running" + _listed(left),
        )

    def check_leases(self) -> Check:
        states = Registry(self.leases).list_states()
        live = [r for r, stale in states if not stale]
        stale = [r for r, s in states if s]
        problems = list(self.step_problems["no live lease left"])
        per_round = self.live_leases_after_round
        if any(per_round.values()):
            problems.append(f"live leases after rounds: {per_round}")
        if states:
            problems.append(f"records left: {[(r.owner, r.port) for r, _ in states]}")
        return Check(
            "no live lease left (after each round), no stale record left",
            not problems and len(per_round) == self.args.rounds,
            f"live leases after each round {list(per_round.values())}; at the end {len(live)} "
            f"live, {len(stale)} stale records" + _listed(problems),
        )

    def check_growth(self) -> Check:
        problems = []
        shown = []
        for parent in self.parents:
            rounds = [parent.rounds[r] for r in sorted(parent.rounds)]
            if not rounds:
                if parent.killed_in != 1:
                    problems.append(f"{parent.label}: no round reported")
                continue
            # anyio's worker pool follows the peak concurrency of a round (bounded by its
            # limiter); every other thread, and every descriptor, is compared with round 1.
            fds = [r["fds"] for r in rounds]
            threads = [r["threads"] - r["pool"] for r in rounds]
            pool = [r["pool"] for r in rounds]
            limit = rounds[0]["pool_limit"]
            shown.append(f"{parent.label} fds {fds} threads {threads} + pool {pool}")
            if any(n > fds[0] for n in fds[1:]) or any(n > threads[0] for n in threads[1:]):
                names = [r["thread_names"] for r in rounds]
                problems.append(f"{parent.label}: fds {fds}, threads {threads}: {names}")
            if any(n > limit for n in pool):
                problems.append(f"{parent.label}: anyio's pool {pool} above its limit {limit}")
            if not all(r["browsers_returned"] for r in rounds):
                problems.append(f"{parent.label}: a browser call never returned")
            for r in rounds:
                for warning in r["warnings"]:
                    problems.append(f"{parent.label} round {r['round']} warned {warning}")
        measured = sum(1 for p in self.parents if len(p.rounds) >= 2)
        return Check(
            "no fd or thread growth across rounds (each parent, rounds 2.. against round 1; "
            "anyio's worker pool within its limiter), no warning",
            not problems and measured > 0,
            "; ".join(shown) + _listed(problems),
        )

    def check_bounded(self) -> Check:
        took = time.monotonic() - self.started
        problems = self.step_problems["bounded"]
        return Check(
            "bounded",
            not problems and took <= self.args.deadline,
            f"{took:.1f} s (deadline {self.args.deadline:.0f} s)" + _listed(problems),
        )

    # -- cleanup ----------------------------------------------------------------------------

    def cleanup(self) -> None:
        """Kill what is left of this run (after the checks looked), by pid."""
        for attack_ in self.attacks:
            attack_.close()
        for parent in self.parents:
            if parent.proc.poll() is None:
                parent.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                parent.proc.wait(timeout=GONE_TIMEOUT)
            for stream in (parent.proc.stdin, parent.proc.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        for proc in marked_processes(RUN_MARKER, self.run_id):
            with contextlib.suppress(psutil.Error):
                proc.kill()


def hostile_wave(targets: list[tuple[int, str, str]], *, keep: bool) -> list[Attack]:
    """:func:`attack` on every (port, state, issuer), 8 at a time."""
    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="hostile") as pool:
        return list(pool.map(lambda t: attack(*t, timeout=REQUEST_TIMEOUT, keep=keep), targets))


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"(unreadable: {exc})"
    return "\n".join("    " + line for line in text[-lines:])


def _said(result: dict[str, Any]) -> str:
    return "ok" if result["ok"] else f"{result['error']}: {result['message']}"


def _listed(problems: list[str], limit: int = 8) -> str:
    if not problems:
        return ""
    shown = "".join(f"\n        - {p}" for p in problems[:limit])
    more = f"\n        ... and {len(problems) - limit} more" if len(problems) > limit else ""
    return shown + more


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=64)
    parser.add_argument("--parents", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kills", type=int, default=2, help="children killed per round")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--deadline", type=float, default=110.0, help="seconds for the run")
    parser.add_argument("--keep", action="store_true", help="keep the run's directory")
    args = parser.parse_args(argv)
    # Round 1 is every parent's baseline (fds, threads, one zygote), so the kills come in a
    # later round, and one more round follows them (the new zygote).
    if args.parents < 3 or args.servers < 2 * args.parents or args.rounds < 3 or args.kills < 1:
        parser.error("needs --parents >= 3, --servers >= 2 x parents, --rounds >= 3, --kills >= 1")
    if args.seed is None:
        args.seed = secrets.randbelow(2**32)
    print(
        f"stress: {args.servers} servers, {args.parents} parents, {args.rounds} rounds, "
        f"{args.kills} children killed a round, seed {args.seed}",
        flush=True,
    )
    base = Path(tempfile.mkdtemp(prefix="runner-stress-"))
    checks: list[Check] = []
    try:
        with Sandbox(servers=args.servers, browser_timeout=LOGIN_TIMEOUT / 2) as sandbox:
            stress = Stress(args, sandbox, base)
            try:
                stress.start_parents()
                if stress.pump(
                    lambda: all(p.ready for p in stress.parents) or not stress.live(),
                    STEP_TIMEOUT,
                    "the parents and their zygotes to start",
                ):
                    took = time.monotonic() - stress.started
                    print(f"{args.parents} parents ready after {took:.1f} s", flush=True)
                    for round_ in range(1, args.rounds + 1):
                        if not stress.live() or not stress.run_round(round_):
                            break
                stress.finish()
                checks = stress.checks()
            finally:
                stress.cleanup()
    finally:
        print()
        for check in checks:
            print(f"{'PASS' if check.ok else 'FAIL'}  {check.name}: {check.detail}")
        print()
        failed = not checks or not all(check.ok for check in checks)
        if failed:
            print(f"{sum(not c.ok for c in checks)} of {len(checks)} invariants FAILED")
        else:
            took = time.monotonic() - stress.started
            print(f"all {len(checks)} invariants hold ({took:.1f} s)")
        if failed or args.keep:
            print(f"the parents' logs are kept in {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
