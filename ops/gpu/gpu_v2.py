"""Helpers of ops/gpu/gpu_v2.sh: assemble the carried payload, train one v2 baseline, run the job plan under a
deadline, and pack what is finished into at most 7 tars under $OUT (plus the log = 8 files).

Subcommands (python3 ops/gpu/gpu_v2.py CMD --help):
  assemble  put the carried payload parts (.gpu/call-*/) into the stash; unpack the payload once all are there
  train     train one baseline config with fxbench.training (a time guard from the window's time left)
  run       the job plan in order of value, K jobs at a time on one device, packing after every finished job
  pack      pack the work folder into $OUT (what is not yet shipped, most valuable first)
  plan      print the job plan (names, order, dependencies) without running anything
  slim-resume  earlier windows' state tars -> what the next payload must carry to resume

Only the CLI (`fxbench run`) and fxbench.training are used, so it runs whatever benchmark code is in the tree.
Every finished job is recorded in WORK/timings.tsv. Each evaluation has its own --out, WORK/results/<preset>/<id>
(`fxbench run` allows one run at a time per --out folder: jobs sharing one were refused in the first window):
the result is WORK/results/<preset>/<id>/<id>/result.json, a finished job never redone; the finished shards of
an interrupted run stay under WORK/results/<preset>/<id>/.fxbench-shards and are reused when it runs again.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MIB = 2**20

# --- the plan, in order of value ---------------------------------------------------------------------------
COMMITTED = ["fxb-resnet10t-erm", "fxb-resnet10t-pgdat", "fxb-resnet10t-fgsmrs"]
REFERENCE = "fxb-reference-no-fracture"
# (training config, submission id); ordered by value: the ERM target first, then the robust recipes, then
# the larger architecture.
TRAINED = [
    ("erm-v2", "fxb-resnet10t-erm-v2"),
    ("pgd-at-v2", "fxb-resnet10t-pgdat-v2"),
    ("trades-v2", "fxb-resnet10t-trades-v2"),
    ("effb0-erm-v2", "fxb-effb0-erm-v2"),
    ("effb0-pgd-at-v2", "fxb-effb0-pgdat-v2"),
]
# Minimum seconds left to start a job of each kind (a job that cannot finish is not started; a full-preset
# evaluation is, since its finished shards are kept for the next window).
MIN_LEFT = {"train": 90, "quick": 45, "full": 30}


@dataclass
class Job:
    name: str
    kind: str  # train | quick | full
    sid: str  # submission id
    source: str  # model.yaml (eval) or training config name (train)
    deps: list[str] = field(default_factory=list)


def plan(repo: Path, work: Path) -> list[Job]:
    jobs: list[Job] = []
    for sid in [*COMMITTED, REFERENCE]:
        jobs.append(Job(f"quick:{sid}", "quick", sid, str(repo / "submissions" / sid / "model.yaml")))
    for config, sid in TRAINED:
        jobs.append(Job(f"train:{sid}", "train", sid, config))
    for _, sid in TRAINED:
        jobs.append(Job(f"quick:{sid}", "quick", sid, str(work / "submissions" / sid / "model.yaml"), [f"train:{sid}"]))
    jobs.append(Job(f"full:{REFERENCE}", "full", REFERENCE, str(repo / "submissions" / REFERENCE / "model.yaml")))
    for _, sid in TRAINED:
        jobs.append(Job(f"full:{sid}", "full", sid, str(work / "submissions" / sid / "model.yaml"), [f"train:{sid}"]))
    for sid in COMMITTED:
        jobs.append(Job(f"full:{sid}", "full", sid, str(repo / "submissions" / sid / "model.yaml")))
    return jobs


def run_out(work: Path, preset: str, sid: str) -> Path:
    """The --out of one evaluation job (one per job: runs into one folder exclude each other)."""
    return work / "results" / preset / sid


def result_dir(work: Path, preset: str, sid: str) -> Path:
    return run_out(work, preset, sid) / sid


def finished(job: Job, work: Path, repo: Path) -> bool:
    if job.kind == "train":
        return (work / "submissions" / job.sid / "model.yaml").is_file() or (
            repo / "submissions" / job.sid / "model.yaml"
        ).is_file()
    return (result_dir(work, job.kind, job.sid) / "result.json").is_file()


def _source(job: Job, work: Path, repo: Path) -> str:
    """A v2 baseline already committed to the tree is evaluated from there (its weights are the same)."""
    if job.kind != "train" and not Path(job.source).is_file():
        committed = repo / "submissions" / job.sid / "model.yaml"
        if committed.is_file():
            return str(committed)
    return job.source


# --- small mode (CPU tests): the same plan, tiny models and images -----------------------------------------
SMALL_OVERRIDES = {
    "model": {"timm": "test_resnet"},
    "epochs": 2,
    "batch_size": 4,
    "eval_batch_size": 16,
    "early_stopping": {"patience": 1},
    "holdout": {"fraction": 0.34},  # at least one image of each class in a tiny training split
}
SMALL_LIMIT = 4


def _small_overrides(config: str) -> dict:
    from fxbench.training import load_config

    c = load_config(config, recipe="cpu")
    o = json.loads(json.dumps(SMALL_OVERRIDES))
    if c.is_adversarial:
        o["adversarial"] = {"steps": 1}
        o["selection"] = {"attack": {"steps": 1}}
    return o


# --- train ---------------------------------------------------------------------------------------------------
def cmd_train(a: argparse.Namespace) -> int:
    from fxbench.training import train_baseline

    overrides: dict = _small_overrides(a.config) if a.small else {}
    if a.time_guard:
        overrides["time_guard_s"] = a.time_guard

    def on_epoch(r) -> None:
        h = r.holdout
        pgd = "" if h.pgd_balanced_accuracy is None else f" pgd BA {h.pgd_balanced_accuracy:.3f}"
        print(f"{a.config} epoch {r.epoch}/{r.planned_epochs} loss {r.train_loss:.4f} BA {h.balanced_accuracy:.3f}"
              f"{pgd} score {r.score:.3f} {r.seconds:.1f} s", flush=True)

    res = train_baseline(a.config, data=a.data, out=a.out, device=a.device, recipe=a.recipe,
                         overrides=overrides or None, on_epoch=on_epoch)
    o = res.outcome
    print(f"{o.config.id}: epoch {o.best_epoch} of {len(o.history)} kept; {o.stop_reason}; {o.wall_time_s:.0f} s")
    print(res.path)
    return 0


# --- run -----------------------------------------------------------------------------------------------------
def _command(job: Job, a: argparse.Namespace, left: float, work: Path, repo: Path) -> list[str]:
    py = sys.executable
    if job.kind == "train":
        guard = max(30.0, left - a.reserve - 60)  # time to finish the epoch and write the folder
        cmd = [py, str(Path(__file__).resolve()), "train", job.source, "--out", str(work / "submissions"),
               "--device", a.device, "--recipe", "cpu" if a.small else "gpu", "--time-guard", f"{guard:.0f}"]
        if a.data:
            cmd += ["--data", a.data]
        return cmd + (["--small"] if a.small else [])
    cmd = [py, "-m", "fxbench", "run", _source(job, work, repo), "--preset", job.kind, "--device", a.device,
           "--out", str(run_out(work, job.kind, job.sid))]
    if not getattr(a, "verbose", False):  # gpu_v3: the job's log keeps the cost print and the progress lines
        cmd.append("--quiet")
    if a.data:
        cmd += ["--data", a.data]
    return cmd + (["--limit", str(SMALL_LIMIT)] if a.small else [])


def _record(work: Path, job: Job, seconds: float, status: str, t_start: float) -> None:
    path = work / "timings.tsv"
    new = not path.exists()
    with open(path, "a") as f:
        if new:
            f.write("job\tkind\tid\tstart_s\tseconds\tstatus\n")
        f.write(f"{job.name}\t{job.kind}\t{job.sid}\t{t_start:.1f}\t{seconds:.1f}\t{status}\n")


def _shards_done(work: Path, job: Job) -> int:
    """Finished shards of an evaluation job's run (the JSON file marks a shard finished)."""
    root = run_out(work, job.kind, job.sid) / ".fxbench-shards"
    return sum(1 for _ in root.rglob("*.json")) if root.is_dir() else 0


def cmd_run(a: argparse.Namespace, plan_for=None) -> int:
    """``plan_for(repo, work)``: the job plan (default: this window's, ``plan``); gpu_v3.py passes its own.
    ``a.stop_after_shards`` (tests): stop an evaluation once it has finished that many shards, as the deadline
    would, so that resuming from its shards can be tested without timing."""
    t0 = time.monotonic()
    deadline = t0 + a.deadline
    work, out, repo = Path(a.work), Path(a.out), Path(a.repo)
    (work / "logs").mkdir(parents=True, exist_ok=True)
    if a.resume:
        restored = restore(Path(a.resume), work)
        print(f"resume: {restored} item(s) restored from {a.resume}", flush=True)
    jobs = (plan_for or plan)(repo, work)
    only = set(a.only.split(",")) if a.only else None
    if only:
        jobs = [j for j in jobs if j.name in only or j.sid in only]
    done = {j.name for j in jobs if finished(j, work, repo)}
    if done:
        print(f"already finished (not redone): {', '.join(sorted(done))}", flush=True)
    failed: set[str] = set()
    attempts: dict[str, int] = {}
    stopped: set[str] = set()  # ended by their time limit (the deadline); finished shards are kept
    running: dict[str, tuple[Job, subprocess.Popen, float, object]] = {}
    threads = max(1, (os.cpu_count() or 2) // max(1, a.jobs))
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    last_pack = time.monotonic()
    while True:
        now = time.monotonic()
        left = deadline - now
        stop_at = getattr(a, "stop_after_shards", None)
        for name, (job, proc, started, log) in list(running.items()):
            rc = proc.poll()
            if rc is None and stop_at and job.kind != "train" and _shards_done(work, job) >= stop_at:
                proc.terminate()
                rc = proc.wait()
            if rc is None:
                continue
            log.close()
            del running[name]
            ok = rc == 0 and finished(job, work, repo)
            status = "ok" if ok else ("timeout" if rc in (124, -15, -9) else f"failed({rc})")
            # exit 2 is fxbench's clear refusal (bad input): the same again would fail the same way
            retry = not ok and status.startswith("failed") and rc != 2 and attempts.get(name, 0) < 2
            if ok:
                done.add(name)
            elif retry:  # once more, after the queue (e.g. out of GPU memory with K jobs side by side)
                jobs = [j for j in jobs if j.name != name] + [job]
                status += ", retried later"
            else:  # failed, or stopped by its time limit (the deadline): not started again in this call
                failed.add(name)
                if status == "timeout":
                    stopped.add(name)
            _record(work, job, now - started, status, started - t0)
            print(f"[{now - t0:6.1f} s] {status:>10}  {name} ({now - started:.1f} s)", flush=True)
            if not ok:
                tail = (work / "logs" / f"{name.replace(':', '_')}.log").read_text(errors="replace")[-1500:]
                print("   log tail: " + tail.replace("\n", "\n   "), flush=True)
            pack(work, out, budget_mib=a.budget_mib)
            last_pack = time.monotonic()
        blocked = {j.name for j in jobs if any(d in failed for d in j.deps)}
        waiting = [j for j in jobs if j.name not in done | failed | blocked | set(running)]
        if not waiting and not running:
            break
        if left <= a.reserve:
            break
        for job in waiting:
            if len(running) >= a.jobs:
                break
            if any(d not in done for d in job.deps):
                continue
            if left < MIN_LEFT[job.kind] + a.reserve:
                continue
            limit = left - a.reserve
            cmd = ["timeout", "--signal=TERM", "--kill-after=10", f"{limit:.0f}", *_command(job, a, left, work, repo)]
            log = open(work / "logs" / f"{job.name.replace(':', '_')}.log", "w")
            log.write(" ".join(cmd) + "\n")
            log.flush()
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(repo))
            running[job.name] = (job, proc, time.monotonic(), log)
            attempts[job.name] = attempts.get(job.name, 0) + 1
            print(f"[{time.monotonic() - t0:6.1f} s] start       {job.name} ({limit:.0f} s allowed)", flush=True)
        if not running and not any(
            all(d in done for d in j.deps) and left >= MIN_LEFT[j.kind] + a.reserve for j in waiting
        ):
            break
        if time.monotonic() - last_pack > a.pack_every:  # shards of long runs reach $OUT as they finish
            pack(work, out, budget_mib=a.budget_mib)
            last_pack = time.monotonic()
        time.sleep(a.poll)
    for _, proc, _, _ in running.values():  # past the deadline: stop, keep their shards
        proc.terminate()
    for name, (job, proc, started, log) in running.items():
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        _record(work, job, time.monotonic() - started, "stopped-at-deadline", started - t0)
        where = "shipped in state-*.tar" if job.kind == "full" else "kept on this machine"
        print(f"stopped at the deadline: {name} (its finished shards are {where})", flush=True)
    skipped = [j.name for j in jobs if j.name not in done | failed | set(running)]
    for name in skipped:
        print(f"not run (no time left or a dependency failed): {name}", flush=True)
    pack(work, out, budget_mib=a.budget_mib)
    summary(work, repo)
    print(f"run: {len(done)} finished, {len(failed - stopped)} failed, {len(stopped) + len(running)} stopped at "
          f"the deadline, {len(skipped)} not run, {time.monotonic() - t0:.0f} s")
    return 0


# --- pack / restore ------------------------------------------------------------------------------------------
def _items(work: Path) -> list[tuple[int, str, list[Path]]]:
    """(priority, name, files) of everything worth shipping, most valuable first."""
    items: list[tuple[int, str, list[Path]]] = []

    def files(folder: Path) -> list[Path]:
        return sorted(p for p in folder.rglob("*") if p.is_file())

    meta = [p for p in (work / "timings.tsv", work / "summary.txt") if p.is_file()]
    meta += sorted((work / "logs").glob("*.log")) if (work / "logs").is_dir() else []
    items.append((0, "meta", meta))
    for pri, preset in ((1, "quick"), (3, "full")):
        root = work / "results" / preset
        for d in sorted(root.glob("*/")) if root.is_dir() else []:
            if (d / d.name / "result.json").is_file():
                items.append((pri, f"results/{preset}/{d.name}/{d.name}", files(d / d.name)))
    subs = work / "submissions"
    for d in sorted(subs.glob("*/")) if subs.is_dir() else []:
        if (d / "model.yaml").is_file():
            items.append((2, f"submissions/{d.name}", files(d)))
    for preset in ("full", "quick"):  # finished shards of interrupted runs (a finished run has dropped its own)
        root = work / "results" / preset
        for j in sorted(root.glob("*/.fxbench-shards/**/*.json")) if root.is_dir() else []:
            group = [p for p in (j.with_suffix(".parquet"), j.with_suffix(".safetensors"), j) if p.is_file()]
            items.append((4, str(j.relative_to(work).with_suffix("")), group))
    return sorted(items, key=lambda t: t[0])


def _signature(files: list[Path]) -> str:
    h = hashlib.sha256()
    for p in files:
        st = p.stat()
        h.update(f"{p}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def pack(work: Path, out: Path, *, budget_mib: float = 60.0, part_mib: float = 15.0, max_tars: int = 7) -> list[Path]:
    """Everything finished and not yet shipped by an earlier call into at most ``max_tars`` self-contained tars
    (each <= part_mib, all <= budget_mib), most valuable first; what does not fit waits for the next pack.

    Each tar is written under a temporary name and renamed, so a kill leaves only whole tars in $OUT. The
    shipped list (WORK/shipped.json) lives beside the work: a later call on the same (warm) machine ships
    the rest. The meta item (timings, logs) is always re-shipped."""
    out.mkdir(parents=True, exist_ok=True)
    shipped_path = work / "shipped.json"
    shipped = json.loads(shipped_path.read_text()) if shipped_path.is_file() else {}
    bins: list[list[tuple[str, list[Path], str]]] = []
    sizes: list[int] = []
    total, left_out = 0, []
    for _, name, files in _items(work):
        if not files:
            continue
        sig = _signature(files)
        if shipped.get(name) == sig and name != "meta":
            continue
        size = sum(p.stat().st_size for p in files) + 1024 * len(files)
        if size > part_mib * MIB or total + size > budget_mib * MIB:
            left_out.append(name)
            continue
        for i, s in enumerate(sizes):
            if s + size <= part_mib * MIB:
                bins[i].append((name, files, sig))
                sizes[i] += size
                break
        else:
            if len(bins) >= max_tars:
                left_out.append(name)
                continue
            bins.append([(name, files, sig)])
            sizes.append(size)
        total += size
    written = []
    for i, content in enumerate(bins):
        final = out / f"state-{i}.tar"
        tmp = out / f".state-{i}.tar.tmp"
        with tarfile.open(tmp, "w") as tar:
            for _, files, _ in content:
                for p in files:
                    tar.add(p, arcname=str(p.relative_to(work)))
        os.replace(tmp, final)
        written.append(final)
    for stale in sorted(out.glob("state-*.tar"))[len(bins):]:
        stale.unlink()
    for content in bins:
        for name, _, sig in content:
            shipped[name] = sig
    # shipped.json records what reached $OUT in *this* call's files: the next call starts from a fresh $OUT,
    # so an item counts as shipped only once a call has ended with it in $OUT (see `mark_shipped`).
    (work / "pending.json").write_text(json.dumps(shipped, indent=0))
    (out / "left_out.txt").unlink(missing_ok=True)
    if left_out:
        print(f"pack: {len(left_out)} item(s) wait for the next call: {', '.join(left_out[:6])}"
              + (" ..." if len(left_out) > 6 else ""), flush=True)
    return written


def mark_shipped(work: Path) -> None:
    """At the start of a call: what the previous call left in its $OUT has come back (it returned)."""
    pending = work / "pending.json"
    if pending.is_file():
        os.replace(pending, work / "shipped.json")


def restore(folder: Path, work: Path) -> int:
    """Unpack state-*.tar files of earlier windows (and a resume.tar made by gpu_pack.sh) into WORK."""
    n = 0
    for t in sorted(folder.rglob("*.tar")):
        with tarfile.open(t) as tar:
            members = [m for m in tar.getmembers() if m.isfile() and not Path(m.name).is_absolute()
                       and ".." not in Path(m.name).parts]
            tar.extractall(work, members=members, filter="data")
            n += len(members)
    _migrate_layout(work)
    # What came from earlier windows is on the lead's side already: never ship it again.
    shipped_path = work / "shipped.json"
    shipped = json.loads(shipped_path.read_text()) if shipped_path.is_file() else {}
    for _, name, files in _items(work):
        if name != "meta" and files:
            shipped[name] = _signature(files)
    shipped_path.write_text(json.dumps(shipped, indent=0))
    return n


def _migrate_layout(work: Path) -> None:
    """The first window (2026-11-28) shared one --out per preset: WORK/results/<preset>/<id>/result.json and
    WORK/results/<preset>/.fxbench-shards/<id>/. Move such state into the per-job layout (run_out)."""
    for preset in ("quick", "full"):
        root = work / "results" / preset
        if not root.is_dir():
            continue
        for d in [d for d in root.glob("*/") if (d / "result.json").is_file()]:
            tmp = root / f".{d.name}.migrating"
            d.rename(tmp)
            d.mkdir()
            tmp.rename(d / d.name)
        old = root / ".fxbench-shards"
        if old.is_dir():
            for d in [d for d in old.iterdir() if d.is_dir()]:
                dest = run_out(work, preset, d.name) / ".fxbench-shards"
                dest.mkdir(parents=True, exist_ok=True)
                if not (dest / d.name).exists():
                    d.rename(dest / d.name)
            shutil.rmtree(old, ignore_errors=True)


def slim_resume(prev: Path, out: Path, repo: Path) -> int:
    """From earlier windows' state tars, the resume tar the next payload carries: result.json of finished
    results (markers: not redone; the lead has the full results), shards of interrupted full runs, and trained
    submissions that are not in the tree. The newest copy of a file wins (tars in name order)."""
    seen: dict[str, tuple[Path, tarfile.TarInfo]] = {}
    for t in sorted(prev.glob("*.tar")):
        with tarfile.open(t) as tar:
            for m in tar.getmembers():
                p = Path(m.name)
                if not m.isfile() or p.is_absolute() or ".." in p.parts or len(p.parts) < 2:
                    continue
                if p.parts[0] == "results":
                    keep = p.name == "result.json" or ".fxbench-shards" in p.parts
                else:
                    keep = p.parts[0] == "submissions" and not (repo / "submissions" / p.parts[1]).exists()
                if keep:
                    seen[m.name] = (t, m)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, "w") as dst:
        for _, (t, m) in sorted(seen.items()):
            with tarfile.open(t) as src:
                dst.addfile(m, src.extractfile(m.name))
    return len(seen)


# --- assemble -------------------------------------------------------------------------------------------------
class _Concat(io.RawIOBase):
    """The payload parts read back to back as one stream."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths, self.f = list(paths), None

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        while True:
            if self.f is None:
                if not self.paths:
                    return 0
                self.f = open(self.paths.pop(0), "rb")
            n = self.f.readinto(buf)
            if n:
                return n
            self.f.close()
            self.f = None


def cmd_assemble(a: argparse.Namespace) -> int:
    """Copy carried parts into the stash; once every part named by the manifest is there (sha256 checked),
    unpack the payload into STASH/payload. Exit 0 when the payload is ready, 3 when parts are missing."""
    stash = Path(a.stash)
    parts_dir = stash / "parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    for call in sorted(Path(a.repo).glob(".gpu/call-*")):
        for f in call.iterdir():
            dest = parts_dir / f.name
            if not dest.exists() or dest.stat().st_size != f.stat().st_size:
                shutil.copyfile(f, dest)
    manifests = sorted(parts_dir.glob("manifest-*.json"))
    if not manifests:
        print("assemble: no payload manifest carried (.gpu/call-*/manifest-*.json): nothing to assemble")
        return 3
    man = json.loads(manifests[-1].read_text())
    ready = stash / "payload" / f".ready-{man['id']}"
    if ready.is_file():
        print(f"assemble: payload {man['id']} already unpacked")
        return 0
    missing = [p["name"] for p in man["parts"] if not (parts_dir / p["name"]).is_file()]
    if missing:
        print(f"assemble: payload {man['id']}: {len(man['parts']) - len(missing)} of {len(man['parts'])} part(s) "
              f"here; still to carry: {', '.join(missing)}")
        return 3
    for p in man["parts"]:
        h = hashlib.sha256()
        with open(parts_dir / p["name"], "rb") as f:
            for chunk in iter(lambda: f.read(MIB), b""):
                h.update(chunk)
        if h.hexdigest() != p["sha256"]:
            print(f"assemble: {p['name']} is corrupt (sha256 differs): carry it again")
            (parts_dir / p["name"]).unlink()
            return 3
    payload = stash / "payload"
    shutil.rmtree(payload, ignore_errors=True)
    payload.mkdir(parents=True)
    stream = _Concat([parts_dir / p["name"] for p in man["parts"]])
    with tarfile.open(fileobj=stream, mode="r|xz") as tar:  # the parts are one xz-compressed tar, split
        tar.extractall(payload, filter="data")
    ready.write_text(json.dumps(man))
    print(f"assemble: payload {man['id']} unpacked ({sum(p['bytes'] for p in man['parts']) / MIB:.1f} MiB)")
    return 0


# --- summary --------------------------------------------------------------------------------------------------
HEADLINES = ["clean/balanced_accuracy", "clean/auroc", "robust/linf-4/balanced_accuracy", "robust/linf-4/accuracy"]


def summary(work: Path, repo: Path) -> None:
    lines = []
    for preset in ("quick", "full"):
        root = work / "results" / preset
        for d in sorted(root.glob("*/")) if root.is_dir() else []:
            try:
                r = json.loads((d / d.name / "result.json").read_text())
            except (OSError, ValueError):
                continue
            m = r.get("metrics", {})
            vals = "  ".join(f"{k.split('/', 1)[1]}={m[k]['value']:.3f}" if m.get(k, {}).get("value") is not None
                             else f"{k.split('/', 1)[1]}=-" for k in HEADLINES)
            dur = r.get("provenance", {}).get("duration_s")
            lines.append(f"{preset:5s} {d.name:28s} {vals}  ({dur} s)")
    subs = work / "submissions"
    for d in sorted(subs.glob("*/")) if subs.is_dir() else []:
        try:
            log = json.loads((d / "training_log.json").read_text())
        except (OSError, ValueError):
            continue
        f = log.get("final_holdout", {})
        pgd = f.get("pgd_balanced_accuracy")
        lines.append(f"train {d.name:28s} epoch {log.get('best_epoch')}/{len(log.get('epochs', []))} kept, "
                     f"holdout BA {f.get('balanced_accuracy', float('nan')):.3f}"
                     + ("" if pgd is None else f", PGD BA {pgd:.3f}")
                     + f", {log.get('wall_time_s')} s; {log.get('stop_reason')}")
    text = "\n".join(lines) + "\n"
    (work / "summary.txt").write_text(text)
    print("=== summary\n" + text, flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("config")
    t.add_argument("--data")
    t.add_argument("--out", required=True)
    t.add_argument("--device", default="cuda")
    t.add_argument("--recipe", default="gpu")
    t.add_argument("--time-guard", type=float)
    t.add_argument("--small", action="store_true")
    r = sub.add_parser("run")
    r.add_argument("--data")
    r.add_argument("--work", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--repo", default=str(REPO))
    r.add_argument("--device", default="cuda")
    r.add_argument("--deadline", type=float, default=520, help="seconds from now")
    r.add_argument("--reserve", type=float, default=15, help="seconds kept for the final pack")
    r.add_argument("--jobs", type=int, default=6, help="jobs at a time on the device")
    r.add_argument("--budget-mib", type=float, default=60)
    r.add_argument("--pack-every", type=float, default=90)
    r.add_argument("--poll", type=float, default=1.0)
    r.add_argument("--resume", help="folder of state-*.tar from earlier windows")
    r.add_argument("--only", help="comma-separated job names or ids (tests)")
    r.add_argument("--small", action="store_true")
    p = sub.add_parser("pack")
    p.add_argument("--work", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--budget-mib", type=float, default=60)
    m = sub.add_parser("mark-shipped")
    m.add_argument("--work", required=True)
    s = sub.add_parser("assemble")
    s.add_argument("--stash", required=True)
    s.add_argument("--repo", default=str(REPO))
    rs = sub.add_parser("slim-resume")
    rs.add_argument("prev")
    rs.add_argument("out")
    rs.add_argument("--repo", default=str(REPO))
    pl = sub.add_parser("plan")
    pl.add_argument("--work", default="WORK")
    a = ap.parse_args()
    if a.cmd == "train":
        return cmd_train(a)
    if a.cmd == "run":
        return cmd_run(a)
    if a.cmd == "pack":
        pack(Path(a.work), Path(a.out), budget_mib=a.budget_mib)
        return 0
    if a.cmd == "mark-shipped":
        mark_shipped(Path(a.work))
        return 0
    if a.cmd == "assemble":
        return cmd_assemble(a)
    if a.cmd == "slim-resume":
        n = slim_resume(Path(a.prev), Path(a.out), Path(a.repo))
        print(f"resume: {n} file(s) from {a.prev} in {a.out}")
        return 0
    for j in plan(REPO, Path(a.work)):
        print(f"{j.name:40s} {j.kind:6s} after {', '.join(j.deps) or '-'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
