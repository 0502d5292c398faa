"""Running a sweep's runs: prepare the sweep folder, run each run (or resume, or skip it), on this machine or
through submitit (Slurm job arrays), restartable. The spec and its expansion are in :mod:`probe.sweep.spec`.

Each run folder gets ``sweep_run.json`` (what to run: config, procedure, final measures), which is all a worker
needs: ``python -m probe.sweep.execute RUN_DIR`` runs one. The worker writes ``result.json`` (status done, failed or
interrupted; seconds; final measures) and, for a failure, ``error.txt`` with the traceback.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path

from probe.analysis.function import function_measures
from probe.analysis.load import load_run
from probe.config import ConfigError, RunConfig
from probe.run.checkpoint import atomic_write, list_checkpoints
from probe.run.folder import run_state
from probe.run.loop import train_or_resume
from probe.run.procedures import run_procedure
from probe.sweep.spec import MANIFEST, Sweep, json_dict
from probe.run.signals import STOP_SIGNALS

RUN_FILE, RESULT_FILE = "sweep_run.json", "result.json"


# -- one run -------------------------------------------------------------------------------------------------
def prepare(sweep: Sweep, out: Path) -> list[Path]:
    """Write the sweep folder's manifest and each run's ``sweep_run.json``; returns the run folders.
    Refuses a folder that holds another sweep, or the same sweep at another scale."""
    out = Path(out).resolve()
    old = out / MANIFEST
    if old.exists():
        prev = json_dict(old)
        if prev is None:
            raise ConfigError(f"{old}: damaged (not a JSON object), so probe cannot tell which sweep this folder "
                              "holds; "
                              "delete it and start again: it is rewritten from the spec, and each run folder is "
                              "checked against the spec (finished runs are skipped)")
        if (prev.get("name"), prev.get("scale")) != (sweep.name, sweep.scale):
            raise ConfigError(f"--out {out}: holds sweep {prev.get('name')} (scale {prev.get('scale')}), not "
                              f"{sweep.name} (scale {sweep.scale}); use another --out")
    out.mkdir(parents=True, exist_ok=True)
    manifest = {**asdict(sweep), "runs": [asdict(r) for r in sweep.runs]}
    _write_json(old, manifest)
    dirs = []
    for r in sweep.runs:
        d = out / r.name
        d.mkdir(exist_ok=True)
        new = json.loads(json.dumps(asdict(r)))  # as it reads back from JSON (tuples become lists)
        if (d / RUN_FILE).exists() and (d / "checkpoints").is_dir():
            old_run = json_dict(d / RUN_FILE)
            if old_run is None or not isinstance(old_run.get("config"), dict):
                raise ConfigError(f"{d / RUN_FILE}: damaged, so probe cannot tell whether run {r.name} was started "
                                  f"from this spec; delete {d / RUN_FILE} to continue the run as this spec says, or "
                                  f"{d} to run it again")
            if _comparable(old_run) != _comparable(new):  # a finished run would be skipped with stale results
                raise ConfigError(f"--out {out}: run {r.name} was started from another spec; use another --out, or "
                                  f"delete {d} to run it again")
        _write_json(d / RUN_FILE, new)
        dirs.append(d)
    return dirs


def _comparable(run: dict) -> dict:
    """A run spec without what may change between starts of one sweep (the device: resume on another machine)."""
    return {**run, "config": {k: v for k, v in run["config"].items() if k != "device"}}


def is_finished(run_dir: Path) -> bool:
    """Last checkpoint at the config's ``steps`` and a result that says done."""
    run_dir = Path(run_dir)
    result, config = json_dict(run_dir / RESULT_FILE), json_dict(run_dir / "config.json")
    steps = config.get("steps") if config else None
    if result is None or not isinstance(steps, int) or isinstance(steps, bool):
        return False
    return result.get("status") == "done" and run_state(run_dir, steps) == "done"


def run_one(run_dir, threads: int | None = None) -> dict:
    """Run (or resume, or skip) the run in ``run_dir`` as its ``sweep_run.json`` says; never raises except on an
    interrupt. Returns and writes ``result.json``: status done/failed/interrupted (or skipped), seconds."""
    run_dir = Path(run_dir)
    if is_finished(run_dir):
        return {"run": run_dir.name, "status": "skipped"}
    if threads:
        import torch

        torch.set_num_threads(threads)
    result, t0 = {"run": run_dir.name}, time.perf_counter()
    try:
        spec = json_dict(run_dir / RUN_FILE)
        if spec is None or not isinstance(spec.get("config"), dict):
            raise ConfigError(f"{run_dir / RUN_FILE}: missing or damaged; start the sweep again to rewrite it")
        cfg = RunConfig.from_dict(spec["config"], source=str(run_dir / RUN_FILE))
        if spec["procedure"] == "train":
            row = train_or_resume(cfg, run_dir)
        else:
            row, extra = run_procedure(spec["procedure"], cfg, run_dir, spec["procedure_opts"])
            _write_json(run_dir / "procedure.json", extra)
        measures = final_measures(run_dir, spec.get("final_measures", ()))
        result.update(status="done", test_acc=row.get("test_acc"), test_loss=row.get("test_loss"), measures=measures)
    except KeyboardInterrupt:
        result.update(status="interrupted")
        _finish(run_dir, result, t0)
        raise
    except Exception as e:  # one failed run must not stop the sweep; the summary shows why it failed
        msg = str(e).strip().splitlines()
        result.update(status="failed", error=f"{type(e).__name__}: {msg[0] if msg else ''}"[:300])
        (run_dir / "error.txt").write_text(traceback.format_exc())
    return _finish(run_dir, result, t0)


def _finish(run_dir, result, t0) -> dict:
    result["seconds"] = round(time.perf_counter() - t0, 2)
    _write_json(run_dir / RESULT_FILE, result)
    return result


def final_measures(run_dir: Path, names, n: int = 512) -> dict:
    """Functional measures ``names`` of the final model (:mod:`probe.analysis.function`: ``lie_derivative``,
    ``shift_consistency``, ``routing``) on n test inputs, each with its null, the same measure of the run's own
    initialization (its step-0 checkpoint), as ``NAME@init``."""
    if not names:
        return {}
    final = load_run(run_dir)
    out = function_measures(final.model, final.task, names, n)
    if list_checkpoints(run_dir)[0][0] == 0:
        init = load_run(run_dir, 0)
        # a null's own null (X@permuted@init) says nothing: only the measures themselves get one
        nulls = function_measures(init.model, init.task, names, n)
        out.update({f"{k}@init": v for k, v in nulls.items() if "@" not in k})
    return out


def run_sweep(sweep: Sweep, out, executor="local", jobs: int = 1, slurm: dict | None = None, wait: bool | None = None,
              on_result=None) -> list[dict]:
    """Run every unfinished run of ``sweep`` under ``out``; returns one result dict per run.

    Args:
        executor: ``local`` (jobs = 1: in this process; jobs > 1: that many worker processes with
            cpu_count // jobs torch threads each), ``slurm`` or ``submitit-local`` (a job array through submitit;
            slurm's parameters in ``slurm``: partition, time_min, gpus, cpus, mem, account, and ``additional``, a dict
            of any other #SBATCH option), or a submitit executor object. Jobs are :class:`SweepJob`: preempted or
            timed out, they are requeued and resume their runs.
        wait: wait for submitit jobs (default: yes, except on slurm, where the jobs are submitted and left).
        on_result: called with each result dict as it comes (progress output).
    """
    dirs = prepare(sweep, out)
    todo = [d for d in dirs if not is_finished(d)]
    results = [{"run": d.name, "status": "skipped"} for d in dirs if d not in todo]
    for r in results:
        if on_result:
            on_result(r)
    if not todo:
        return results
    if executor == "local":
        old = signal.signal(signal.SIGTERM, _raise_interrupt) if _main_thread() else None
        try:  # SIGTERM stops the sweep as Ctrl-C does (each run with a checkpoint), and says so: exit 143
            new = _run_local(todo, jobs, on_result)
        finally:
            if old is not None:
                signal.signal(signal.SIGTERM, old)
    else:
        new = _run_submitit(todo, executor, jobs, slurm or {}, Path(out).resolve() / ".submitit", wait, on_result)
    return results + new


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _run_local(dirs, jobs, on_result) -> list[dict]:
    if jobs <= 1:
        results = []
        for d in dirs:
            results.append(run_one(d))
            if on_result:
                on_result(results[-1])
        return results
    # Worker processes, not threads: each run has its own torch and RNG state, and a crash stays in one run.
    # Small models gain nothing from threads on shared cores, and two threads per process can be several times
    # slower than one (measured on the sequence runs of the README): cpu_count // jobs threads each.
    threads = max(1, _cpus() // jobs)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    pending, running, results = list(dirs), {}, []
    try:
        while pending or running:
            while pending and len(running) < jobs:
                d = pending.pop(0)
                log = open(d / "log.txt", "ab")
                # a session of its own: Ctrl-C reaches only this process, which passes it on once (below)
                p = subprocess.Popen([sys.executable, "-m", "probe.sweep.execute", str(d), "--threads", str(threads)],
                                     stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
                running[p] = (d, log)
            for p in [p for p in running if p.poll() is not None]:
                d, log = running.pop(p)
                log.close()
                results.append(_read_result(d, p.returncode))
                if on_result:
                    on_result(results[-1])
            time.sleep(0.05)
    except KeyboardInterrupt as e:
        for p in running:  # each stops at its next step boundary with a checkpoint
            p.send_signal(getattr(e, "signum", signal.SIGINT))
        for p, (_d, log) in running.items():
            p.wait()
            log.close()
        raise
    return results


class SweepInterrupted(KeyboardInterrupt):
    """A signal (``signum``) stopped the sweep between or during its runs."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_interrupt(signum, frame):
    raise SweepInterrupted(signum)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _read_result(d: Path, code: int) -> dict:
    result = json_dict(d / RESULT_FILE)
    if result is not None:
        return result
    else:
        return {"run": d.name, "status": "failed", "error": f"worker exited with code {code}; see {d / 'log.txt'}"}


def _run_submitit(dirs, executor, jobs, slurm, folder, wait, on_result) -> list[dict]:
    import submitit

    n_at_once = min(len(dirs), jobs) if jobs > 1 else len(dirs)
    if executor == "slurm":
        try:
            ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
        except RuntimeError as e:  # no srun/sbatch here
            raise ConfigError(f"--executor slurm: {e}") from None
        params = dict(timeout_min=int(slurm.get("time_min", 60)), gpus_per_node=int(slurm.get("gpus", 1)),
                      cpus_per_task=int(slurm.get("cpus", 4)), slurm_array_parallelism=jobs, name="probe-sweep")
        if slurm.get("partition"):
            params["slurm_partition"] = slurm["partition"]
        for key in ("mem", "account"):  # --mem 32G, --account NAME: #SBATCH lines of their own
            if slurm.get(key):
                params[f"slurm_{key}"] = str(slurm[key])
        if slurm.get("additional"):  # --slurm-param KEY=VALUE: any other #SBATCH --KEY=VALUE
            params["slurm_additional_parameters"] = {k.replace("-", "_"): v for k, v in slurm["additional"].items()}
        ex.update_parameters(**params)
        threads = int(slurm.get("cpus", 4))
        wait = False if wait is None else wait
    elif executor == "submitit-local":
        ex = submitit.LocalExecutor(folder=folder)
        ex.update_parameters(timeout_min=int(slurm.get("time_min", 60)))
        threads = max(1, _cpus() // n_at_once)
    elif hasattr(executor, "map_array"):
        ex, threads = executor, max(1, _cpus() // n_at_once)
    else:
        raise ConfigError(f"--executor must be local, slurm or submitit-local; got {executor!r}")
    wait = True if wait is None else wait
    job_list = ex.map_array(SweepJob(), [str(d) for d in dirs], [threads] * len(dirs))  # one job array
    results = []
    for d, job in zip(dirs, job_list):
        if not wait:
            r = {"run": d.name, "status": "submitted", "job_id": job.job_id}
        else:
            try:
                r = job.result()
            except Exception as e:  # the job itself died (timeout, node failure): retried on the next start
                r = {"run": d.name, "status": "failed", "error": f"job {job.job_id}: {str(e).strip()[:300]}"}
        results.append(r)
        if on_result:
            on_result(r)
    return results


class SweepJob:
    """One run as a submitit job: :func:`run_one`, made checkpointable, so that a job Slurm preempts or times out
    is requeued and resumes its run.

    Slurm warns a job with SIGUSR2 (submitit asks for it before the time limit; preemption sends it too where the
    cluster is set up so). During training that signal stops the run at its next step boundary with a checkpoint,
    as SIGTERM does (:data:`probe.run.signals.STOP_SIGNALS`); then the signal is raised again for submitit's own
    handler, which calls :meth:`checkpoint` and requeues the job. The requeued job runs :func:`run_one` again, which
    resumes the run from that checkpoint (a finished run is skipped)."""

    def __call__(self, run_dir, threads: int | None = None) -> dict:
        usr2 = getattr(signal, "SIGUSR2", None)
        added = usr2 is not None and usr2 not in STOP_SIGNALS
        if added:
            STOP_SIGNALS.append(usr2)
        try:
            return run_one(run_dir, threads)
        except KeyboardInterrupt as e:
            if usr2 is not None and getattr(e, "signum", None) == usr2:
                if added:  # submitit's handler, not ours, gets the signal now
                    STOP_SIGNALS.remove(usr2)
                    added = False
                os.kill(os.getpid(), usr2)  # -> checkpoint(), requeue, exit (submitit.JobEnvironment)
            raise
        finally:
            if added:
                STOP_SIGNALS.remove(usr2)

    def checkpoint(self, run_dir, threads: int | None = None):
        """What submitit requeues: this job with the same arguments (the run folder holds the state)."""
        import submitit

        return submitit.helpers.DelayedSubmission(SweepJob(), run_dir, threads)


def _write_json(path: Path, obj) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=1, default=str).encode()))


def run_status(run_dir: Path) -> str:
    """done, failed, interrupted, partial (checkpoints, not finished) or pending."""
    if is_finished(run_dir):
        return "done"
    status = (json_dict(run_dir / RESULT_FILE) or {}).get("status")
    if status in ("failed", "interrupted"):
        return status
    return "partial" if (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").glob("step_*.pt")) \
        else "pending"


# -- worker entry point ------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    """``python -m probe.sweep.execute RUN_DIR [--threads N]``: run one prepared run (the local executor's worker)."""
    args = list(sys.argv[1:] if argv is None else argv)
    threads = None
    if "--threads" in args:
        i = args.index("--threads")
        threads = int(args[i + 1])
        del args[i : i + 2]
    try:
        result = run_one(Path(args[0]), threads)
    except KeyboardInterrupt as e:
        return 128 + getattr(e, "signum", signal.SIGINT)
    print(json.dumps(result), flush=True)
    return 0 if result["status"] in ("done", "skipped") else 1


if __name__ == "__main__":
    sys.exit(main())
