"""`edgecls train --strategy multi-worker`: one run on several machines, with tf.distribute.MultiWorkerMirroredStrategy.

Every worker runs the same command with its own TF_CONFIG (what clusters and Kubernetes TFJob set). Every worker
runs the whole recipe, so every collective op and every save happens on all of them (TensorFlow's rule for this
strategy); only the chief (task "chief", or "worker" 0 when there is none) writes the run folder RUN. The others
write into a temporary folder of their own (system temp dir) that they remove when they end.

Resuming: a job restarted with the same command (as TFJob restarts it) finds RUN holding an interrupted run and
continues it from its last completed epoch, on every worker: the chief resumes RUN itself, each other worker
starts from a copy of RUN's state.json and checkpoint.npz taken before any worker could change them. So every
worker must see RUN at the same path: on one machine it is, across machines it must be on a shared file system.
Before any work the workers compare (one all-reduce) whether they resume, from which epoch, and their settings;
any difference stops them all with one line instead of a hang or a silently different model.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.markup import escape

from edgecls.errors import ConfigError, EdgeclsError, ModelError
from edgecls.fsutil import has_marker, make_marker
from edgecls.locks import pid_alive
from edgecls.run_folder import CHECKPOINT_FILE, STATE_FILE
from edgecls.training.config import TrainConfig
from edgecls.training.run_setup import new_run_folder, read_state, resumed_run_folder

STRATEGY = "multi-worker"
_EXAMPLE = ('e.g. TF_CONFIG=\'{"cluster": {"worker": ["host1:23456", "host2:23456"]}, "task": {"type": "worker", "index": 0}}\' '
            "(index 1 on the second machine)")
_JOBS = ("chief", "worker")
_SCRATCH_PREFIX = "edgecls-mw-"
_strategy: Any = None  # the MultiWorkerMirroredStrategy of this process, made once before TensorFlow touches a device


@dataclass(frozen=True)
class ClusterRole:
    """This process's place in the cluster TF_CONFIG describes."""

    task_type: str
    index: int
    tasks: int  # chief + workers
    address: str
    has_chief: bool = False

    @property
    def is_chief(self) -> bool:
        """TensorFlow's convention: the "chief" task, or "worker" 0 when the cluster has no chief."""
        return self.task_type == "chief" or (self.task_type == "worker" and self.index == 0 and not self.has_chief)

    @property
    def name(self) -> str:
        return f"{self.task_type} {self.index}"


def read_tf_config(text: str | None) -> ClusterRole:
    """Parse and check TF_CONFIG; ConfigError naming the bad value and the fix. Imports no TensorFlow."""
    if text is None or not text.strip():
        raise ConfigError("--strategy multi-worker needs the TF_CONFIG environment variable, which is not set",
                          f"Set it on every worker, {_EXAMPLE}")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"TF_CONFIG is not valid JSON ({exc.msg} at character {exc.pos}): {text[:80]!r}",
                          f"Set it to a JSON object, {_EXAMPLE}") from None
    if not isinstance(data, dict) or not isinstance(data.get("cluster"), dict) or not data["cluster"]:
        raise ConfigError(f"TF_CONFIG has no \"cluster\" object: {text[:80]!r}", f"List every machine under \"cluster\", {_EXAMPLE}")
    cluster: dict[str, Any] = data["cluster"]
    for job, addresses in cluster.items():
        if job not in _JOBS:
            raise ConfigError(f"TF_CONFIG cluster job '{job}' is not supported by MultiWorkerMirroredStrategy",
                              "Use only \"chief\" (at most one) and \"worker\" jobs")
        if not isinstance(addresses, list) or not addresses:
            raise ConfigError(f"TF_CONFIG cluster job '{job}' is not a list of \"host:port\" addresses: {addresses!r}", _EXAMPLE)
        for address in addresses:
            _check_address(job, address)
    if len(cluster.get("chief", [])) > 1:
        raise ConfigError(f"TF_CONFIG lists {len(cluster['chief'])} chief addresses",
                          "List at most one \"chief\"; the others as \"worker\"")
    everywhere = [address for addresses in cluster.values() for address in addresses]
    repeated = sorted({address for address in everywhere if everywhere.count(address) > 1})
    if repeated:
        raise ConfigError(f"TF_CONFIG lists address '{repeated[0]}' more than once", "Give every task its own host:port")
    task = data.get("task")
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise ConfigError(f"TF_CONFIG has no \"task\" with \"type\" and \"index\": {text[:80]!r}",
                          "Add this process's task, e.g. \"task\": {\"type\": \"worker\", \"index\": 0}")
    task_type, index = task["type"], task["index"]
    if task_type not in cluster:
        raise ConfigError(f"TF_CONFIG task type '{task_type}' is not a job of the cluster ({', '.join(cluster)})",
                          "Set \"task\": {\"type\": ...} to one of the cluster's jobs")
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(cluster[task_type]):
        raise ConfigError(f"TF_CONFIG task index {index!r} is outside the {len(cluster[task_type])} '{task_type}' address(es)",
                          f"Use an index from 0 to {len(cluster[task_type]) - 1}")
    return ClusterRole(task_type, index, len(everywhere), cluster[task_type][index], has_chief="chief" in cluster)


def _check_address(job: str, address: Any) -> None:
    host, _, port = str(address).rpartition(":")
    if not isinstance(address, str) or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"TF_CONFIG address {address!r} of job '{job}' is not host:port with a port from 1 to 65535",
                          "Write each address as \"host:port\", e.g. \"10.0.0.2:23456\"")


def start_strategy(role: ClusterRole) -> Any:
    """Create this process's MultiWorkerMirroredStrategy: the first thing that touches TensorFlow (it must be)."""
    global _strategy
    if _strategy is None:
        import tensorflow as tf

        from edgecls.training.keras_multi_worker import install

        try:
            strategy = tf.distribute.MultiWorkerMirroredStrategy()
        except (RuntimeError, ValueError, tf.errors.OpError) as exc:
            raise ConfigError(f"cannot start {role.name} of the TF_CONFIG cluster at {role.address}: {exc}",
                              "Check that the port is free and TF_CONFIG is the same cluster on every worker; in Python, call "
                              "edgecls.train in a fresh process, before anything else uses TensorFlow") from exc
        install()  # keras is imported only now, after the strategy
        _strategy = strategy
    return _strategy


def current_strategy() -> Any:
    """The strategy start_strategy made (training/strategy.py returns it for --strategy multi-worker)."""
    if _strategy is None:
        raise ConfigError("--strategy multi-worker was not started from 'edgecls train'", "Run it through edgecls.train or the CLI")
    return _strategy


def wanted(resume: str | Path | None, options: dict[str, Any]) -> bool:
    """Whether this train call is a multi-worker run (new, or a --resume of one)."""
    if resume is None:
        return options.get("strategy") == STRATEGY
    try:
        return bool(read_state(Path(resume))["config"].get("strategy") == STRATEGY)
    except ModelError:
        return False  # the ordinary --resume path reports what is wrong with the folder


def train_multi_worker(data: str | Path | None, resume: str | Path | None, options: dict[str, Any],
                       run_trainer: Callable[[TrainConfig, Path, dict[str, Any] | None], Any]) -> Any:
    """Validate everything, start the strategy, agree with the other workers, then train (chief into RUN)."""
    role = read_tf_config(os.environ.get("TF_CONFIG"))
    if resume is not None:
        run = Path(resume)
        config = TrainConfig.from_dict({**read_state(run)["config"], "out": str(run)})
    else:
        if data is None:
            raise ConfigError("no --data given", "Pass --data DIR (an ImageFolder tree) or --resume RUN")
        config = TrainConfig(data=str(data), **options)
        if not config.out:
            raise ConfigError("--strategy multi-worker needs --out RUN", "Pass the same --out on every worker (a shared file system "
                              "path when they are on several machines): a restarted job resumes it")
        run = Path(config.out)
    if config.time_budget:  # each worker would stop at its own clock's deadline, the others then wait for it forever
        raise ConfigError(f"--time-budget {config.time_budget} does not work with --strategy multi-worker",
                          "Drop --time-budget and choose --epochs / --fine-tune-epochs")
    state = _interrupted_state(run, config, resume is not None, role)
    if state is not None:
        config = TrainConfig.from_dict({**state["config"], "out": str(run)})  # its saved settings, as --resume
        phase = state["phase"].replace("_", "-")
        _say(f"{role.name}: resuming run '{escape(str(run))}' after {state['epochs_done']} completed {phase} epoch(s)")
    if role.is_chief:
        if state is None:
            with new_run_folder(run, config.data) as run_dir:
                _agree(start_strategy(role), role, run, config, state)
                return _train(run_trainer, config, run_dir, None, run)
        with resumed_run_folder(run) as state:
            _agree(start_strategy(role), role, run, config, state)
            return _train(run_trainer, config, run, state, run)
    scratch = _make_scratch(role)
    try:  # a folder this process made, removed however it ends
        private_state = _copy_resume_files(run, scratch) if state is not None else None
        _agree(start_strategy(role), role, run, config, state)
        return _train(run_trainer, config, scratch, private_state, run)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


class WorkerLostError(EdgeclsError):
    """Another worker of the cluster stopped (crashed, killed, preempted) while this one trained."""

    exit_code = 1


def _train(run_trainer: Callable[[TrainConfig, Path, dict[str, Any] | None], Any], config: TrainConfig, run_dir: Path,
           state: dict[str, Any] | None, run: Path) -> Any:
    """run_trainer; a peer that stops makes TensorFlow abort the collective ops here (heartbeats stop, ~30 s): one line."""
    import tensorflow as tf

    try:
        return run_trainer(config, run_dir, state)
    except (tf.errors.UnavailableError, tf.errors.CancelledError, tf.errors.AbortedError) as exc:
        why = "its heartbeats stopped" if "unhealthy" in str(exc.message) else type(exc).__name__
        raise WorkerLostError(f"a worker of the cluster stopped during training ({why})",
                              f"Restart every worker with the same command: the run resumes from its last completed epoch "
                              f"in '{run}'") from None


def _interrupted_state(run: Path, config: TrainConfig, resuming: bool, role: ClusterRole) -> dict[str, Any] | None:
    """RUN's state when it holds an interrupted run this job continues; None for a new run."""
    if not resuming and not (run / STATE_FILE).is_file():
        return None
    state = read_state(run)
    if state["phase"] == "done":
        raise ConfigError(f"run '{run}' already finished", "Start a new run with another --out")
    if not resuming:
        saved = {**state["config"], "out": str(run)}
        if saved != config.to_dict():
            changed = sorted(key for key in saved if saved.get(key) != config.to_dict().get(key))
            _say(f"[yellow]warning:[/yellow] {role.name}: run folder '{escape(str(run))}' holds an interrupted run with other settings "
                 f"({', '.join(changed)}); it is resumed with its saved settings")
    return state


def _make_scratch(role: ClusterRole) -> Path:
    """A non-chief worker's private run folder in the system temp dir (marked, named after its role and pid); first the
    ones a SIGKILLed process of this same role left (its pid no longer alive) are removed."""
    base, role_prefix = Path(tempfile.gettempdir()), f"{_SCRATCH_PREFIX}{role.task_type}{role.index}-"
    for folder in base.glob(f"{role_prefix}*"):
        pid = folder.name[len(role_prefix):].split("-", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)) and folder.is_dir() and not folder.is_symlink() and has_marker(folder):
            shutil.rmtree(folder, ignore_errors=True)
    scratch = Path(tempfile.mkdtemp(prefix=f"{role_prefix}{os.getpid()}-", dir=base))
    make_marker(scratch, "train --strategy multi-worker")
    return scratch


def _say(text: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(text, markup=True, highlight=False)


def _copy_resume_files(run: Path, scratch: Path) -> dict[str, Any]:
    """A non-chief worker's private copy of what RUN resumes from (before any worker can change it)."""
    for name in (STATE_FILE, CHECKPOINT_FILE):
        if (run / name).is_file():
            shutil.copyfile(run / name, scratch / name)
    return read_state(scratch)


def _agree(strategy: Any, role: ClusterRole, run: Path, config: TrainConfig, state: dict[str, Any] | None) -> None:
    """One all-reduce: every worker resumes the same epoch (or none) with the same settings, or all stop with one line."""
    import numpy as np
    import tensorflow as tf

    settings = zlib.crc32(json.dumps(config.to_dict(), sort_keys=True, default=str).encode())
    phase = {"head": 1, "fine_tune": 2}.get(state["phase"], 0) if state else 0
    mine = np.array([state is not None, phase, state["epochs_done"] if state else 0, settings >> 16, settings & 0xFFFF], np.float64)
    values = tf.constant(np.concatenate([mine, mine**2]))
    summed = strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.identity(values)), axis=None).numpy()
    count = strategy.num_replicas_in_sync
    equal = np.isclose(summed[5:] * count, summed[:5] ** 2)  # n * sum(v^2) == sum(v)^2 exactly when all v are equal
    if not equal[:3].all():
        raise ConfigError(f"the workers do not see the same run folder '{run}' ({role.name} "
                          f"{'resumes epoch ' + str(int(mine[2])) + ' of it' if state else 'starts it new'}, another does not)",
                          "Put --out on a file system every worker shares, at the same path, and restart every worker")
    if not equal[3:].all():
        raise ConfigError(f"the workers were started with different settings or data ({role.name}: --data '{config.data}')",
                          "Start every worker with the same command and the same data")
