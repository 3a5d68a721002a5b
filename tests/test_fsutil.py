"""edgecls/fsutil.py: outputs vs inputs, deletion only of what edgecls made, short prefixed temps cleaned on errors,
signals and after SIGKILL, folder locks (edgecls/locks.py), and two real processes publishing one folder at once."""
from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edgecls.errors import ConfigError
from edgecls.fsutil import (
    OUTPUT_MARKER,
    TEMP_PREFIX,
    atomic_dir,
    atomic_path,
    check_outputs,
    has_marker,
    make_marker,
    remove_live_temps,
    remove_output_folder,
    sweep_stale_temps,
)
from edgecls.locks import folder_lock
from tests.conftest import REPO, dead_pid


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and p.name != OUTPUT_MARKER)


def python(code: str, **kwargs: object) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)  # type: ignore[call-overload]


# ----------------------------------------------------------------------------- check_outputs

def test_check_outputs_refuses_outputs_on_inside_or_around_inputs(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "cat").mkdir(parents=True)
    model = tmp_path / "a" / "model.tflite"
    model.parent.mkdir()
    model.write_bytes(b"model")
    (tmp_path / "alias").symlink_to(data)
    os.link(model, tmp_path / "hard.tflite")
    cases = {
        model: f"--report '{model}' would overwrite the input --model '{model}'",
        tmp_path / "hard.tflite": "would overwrite the input --model",  # a hard link of the model
        data / "cat" / "r.json": "lies inside the input --data",
        tmp_path / "alias" / "new" / "r.json": "lies inside the input --data",  # through a symlink, not created yet
        tmp_path: "contains the input",
        tmp_path / "a" / "." / "model.tflite": "would overwrite the input --model",
    }
    for output, message in cases.items():
        with pytest.raises(ConfigError, match="Choose an output path outside the command's inputs") as caught:
            check_outputs({"--report": output}, {"--model": model, "--data": data, "--labels": None})
        assert message in str(caught.value), (output, str(caught.value))
    check_outputs({"--report": tmp_path / "a" / "report.json", "--record": None}, {"--model": model, "--data": data})
    check_outputs({"--report": tmp_path / "data2"}, {"--data": data})  # a name prefix is not containment


# ----------------------------------------------------------------------------- marker and deletion

def test_atomic_dir_publishes_a_marker_and_replaces_only_what_edgecls_made(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with atomic_dir(out, command="export RUN") as tmp:
        (tmp / "model.tflite").write_text("1")
    assert has_marker(out) and (out / "model.tflite").read_text() == "1"
    with atomic_dir(out) as tmp:  # marked: replaced
        (tmp / "model.tflite").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == [OUTPUT_MARKER, "model.tflite"] and (out / "model.tflite").read_text() == "2"

    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_text("irreplaceable")
    with pytest.raises(ConfigError, match=r"'.*photos' was not made by edgecls \(no .edgecls-output marker\)\. Remove it yourself"):
        with atomic_dir(foreign) as tmp:
            raise AssertionError("refused before the body runs")
    assert [p.name for p in foreign.iterdir()] == ["holiday.jpg"] and hidden(tmp_path) == []

    with pytest.raises(ConfigError, match="already exists"):
        with atomic_dir(out, overwrite=False):
            raise AssertionError("refused before the body runs")


def test_unmarked_folders_are_replaced_only_when_empty(tmp_path: Path) -> None:
    """No file name stands in for the marker: a folder that holds only model.tflite, or a nested models_archive/, is the
    user's (fnmatch's `model*` once matched models_archive/2023/photos/holiday.jpg and deleted it)."""
    empty = tmp_path / "empty"
    empty.mkdir()
    with atomic_dir(empty) as tmp:
        (tmp / "model.tflite").write_text("new")
    assert has_marker(empty) and (empty / "model.tflite").read_text() == "new"
    old = tmp_path / "tflite-int8"
    (old / "models_archive" / "2023").mkdir(parents=True)
    (old / "model.tflite").write_text("hand-made")
    (old / "models_archive" / "2023" / "holiday.jpg").write_text("mine")
    for target in (old, old / "models_archive"):
        with pytest.raises(ConfigError, match="was not made by edgecls"):
            with atomic_dir(target) as tmp:
                (tmp / "model.tflite").write_text("new")
        with pytest.raises(ConfigError, match="was not made by edgecls"):
            remove_output_folder(target)
    assert (old / "model.tflite").read_text() == "hand-made"
    assert (old / "models_archive" / "2023" / "holiday.jpg").read_text() == "mine"
    link = tmp_path / "link"
    link.symlink_to(old)
    with pytest.raises(ConfigError, match="is a symbolic link"):
        with atomic_dir(link):
            pass
    assert not has_marker(old)


def test_outputs_that_are_or_contain_an_input_are_never_deleted(tmp_path: Path) -> None:
    run = tmp_path / "parent" / "run"
    run.mkdir(parents=True)
    (run / "meta.json").write_text("{}")
    make_marker(tmp_path / "parent", "deploy")  # even a folder edgecls made
    make_marker(run, "train")
    for out in (run, tmp_path / "parent"):
        with pytest.raises(ConfigError, match=r"(is|contains) the input --run"):
            remove_output_folder(out, {"--run": run})
        with pytest.raises(ConfigError, match=r"(is|contains) the input --run"):
            with atomic_dir(out, inputs={"--run": run}):
                pass
    assert (run / "meta.json").is_file()
    bundle = tmp_path / "bundle"
    with atomic_dir(bundle, command="deploy") as tmp:
        (tmp / "install.sh").write_text("#!/bin/sh\n")
    remove_output_folder(bundle, {"--run": run})
    assert not bundle.exists() and hidden(tmp_path) == []
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "x").write_text("x")
    with pytest.raises(ConfigError, match="not made by edgecls"):
        remove_output_folder(tmp_path / "plain", {})
    remove_output_folder(tmp_path / "missing", {})  # nothing there: nothing to do


# ----------------------------------------------------------------------------- temps

def test_temp_names_are_short_and_prefixed_so_long_output_names_work(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        target = tmp_path / ("r" * 244 + ".json")  # 249 characters: the old '.<name>.XXXX.tmp' temp could not exist
        with atomic_path(target) as tmp:
            assert tmp.name.startswith(f"{TEMP_PREFIX}{os.getpid()}-") and len(tmp.name) < 40
            tmp.write_text("{}")
        folder = tmp_path / ("d" * 249)
        with atomic_dir(folder) as tmp:
            assert tmp.name.startswith(TEMP_PREFIX)
            (tmp / "a").write_text("1")
    finally:
        os.umask(old)
    assert target.read_text() == "{}" and (folder / "a").read_text() == "1"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640 and stat.S_IMODE(folder.stat().st_mode) == 0o750  # the umask, as before
    assert hidden(tmp_path) == []


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, SystemExit, RuntimeError])
def test_temps_are_removed_on_any_exception(tmp_path: Path, interrupt: type[BaseException]) -> None:
    with pytest.raises(interrupt):
        with atomic_path(tmp_path / "model.keras", suffix=".keras") as tmp:
            tmp.write_text("half")
            raise interrupt()
    with pytest.raises(interrupt):
        with atomic_dir(tmp_path / "export") as tmp:
            (tmp / "half").write_text("half")
            raise interrupt()
    assert list(tmp_path.iterdir()) == []


def test_temps_a_clean_up_missed_are_removed_at_exit_and_published_ones_are_not(tmp_path: Path) -> None:
    """A signal can land after a temp is made but before its `try` starts; the CLI's exit hook removes such temps."""
    with atomic_dir(tmp_path / "published") as tmp:
        (tmp / "a").write_text("1")
    with atomic_path(tmp_path / "meta.json") as tmp_file:
        tmp_file.write_text("{}")
    entered = atomic_dir(tmp_path / "export")
    folder = entered.__enter__()  # entered, never exited: what an interrupted `with` leaves
    (folder / "sub").mkdir()
    (folder / "sub" / "half.tflite").write_bytes(b"half")
    assert hidden(tmp_path) == [folder.name]
    remove_live_temps()
    assert hidden(tmp_path) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["meta.json", "published"]
    assert (tmp_path / "published" / "a").read_text() == "1"


def test_a_signal_while_a_temp_is_being_created_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The window a Ctrl-C hit in CI: the temp file exists, its `try` has not started yet."""
    real_close = os.close

    def close_then_interrupt(fd: int) -> None:
        real_close(fd)
        raise KeyboardInterrupt()

    monkeypatch.setattr(os, "close", close_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(tmp_path / "report.json"):
            pass
    monkeypatch.undo()
    assert hidden(tmp_path) == [] and not (tmp_path / "report.json").exists()


def test_a_library_process_removes_missed_temps_at_exit_and_a_forked_child_leaves_the_parents(tmp_path: Path) -> None:
    """Without the CLI (run_camera called from Python), interpreter exit removes the temps; a forked child that exits
    first must not remove the parent's temp, which the parent is still writing."""
    proc = python(f"""
        import os
        from pathlib import Path
        from edgecls.fsutil import _make_temp
        tmp = _make_temp(Path({str(tmp_path)!r}) / "report.json", ".tmp", directory=False)  # its `try` never entered
        pid = os.fork()
        if pid == 0:
            import atexit
            atexit._run_exitfuncs()
            os._exit(0)
        os.waitpid(pid, 0)
        print("after child", tmp.exists())
    """)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "after child True" in out  # the child left the parent's temp alone
    assert hidden(tmp_path) == []  # the parent's exit removed it


def test_sigterm_in_a_real_process_leaves_no_temp(tmp_path: Path) -> None:
    """The CLI turns SIGTERM into SystemExit(143); the context managers then remove their temps."""
    proc = python(f"""
        import signal, sys, time
        from pathlib import Path
        from edgecls.fsutil import atomic_dir, atomic_path
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        out = Path({str(tmp_path)!r})
        with atomic_dir(out / "export") as folder, atomic_path(out / "video.mp4", suffix=".mp4") as tmp:
            tmp.write_bytes(b"frames")
            (folder / "model.tflite").write_bytes(b"half")
            print("ready", flush=True)
            for _ in range(600):
                time.sleep(0.1)
    """)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        assert len(hidden(tmp_path)) == 2  # both temps exist while it works
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, stderr
    assert list(tmp_path.iterdir()) == []


def test_temps_left_by_sigkill_are_swept_at_the_next_run(tmp_path: Path) -> None:
    proc = python(f"""
        import time
        from pathlib import Path
        from edgecls.fsutil import atomic_dir, atomic_path
        out = Path({str(tmp_path)!r})
        with atomic_dir(out / "export") as folder, atomic_path(out / "model.keras", suffix=".keras") as tmp:
            tmp.write_bytes(b"half")
            (folder / "model.tflite").write_bytes(b"half")
            print("ready", flush=True)
            time.sleep(60)
    """)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    left = hidden(tmp_path)
    assert len(left) == 2 and all(name.startswith(f"{TEMP_PREFIX}{proc.pid}-") for name in left)
    mine = tmp_path / f"{TEMP_PREFIX}{os.getpid()}-abcdefgh.tmp"  # a live process's temp is never touched
    mine.write_text("in use")
    other = tmp_path / f"{TEMP_PREFIX}{dead_pid()}-abcdefgh.tmp.mp4"
    other.write_text("left by a power cut")
    not_ours = tmp_path / ".edgecls-tmp-notapid"
    not_ours.write_text("x")
    with atomic_path(tmp_path / "meta.json") as tmp:  # the next write into the folder sweeps
        tmp.write_text("{}")
    assert hidden(tmp_path) == sorted([mine.name, not_ours.name])
    assert sweep_stale_temps(tmp_path) == 0


# ----------------------------------------------------------------------------- locks

def test_folder_lock_refuses_or_waits_while_another_process_holds_it(tmp_path: Path) -> None:
    holder = python(f"""
        import sys
        from pathlib import Path
        from edgecls.locks import folder_lock
        with folder_lock(Path({str(tmp_path)!r})):
            print("locked", flush=True)
            sys.stdin.readline()
    """)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(ConfigError, match=r"'.*' is being written by another edgecls process\. Wait for it to finish"):
            with folder_lock(tmp_path):
                pass
        holder.communicate("go\n", timeout=60)
    finally:
        holder.kill()
    assert holder.returncode == 0
    with folder_lock(tmp_path), folder_lock(tmp_path, wait=True), atomic_dir(tmp_path / "x") as tmp:  # re-entrant in a process
        (tmp / "a").write_text("1")
    assert (tmp_path / "x" / "a").is_file() and list(tmp_path.iterdir()) == [tmp_path / "x"]  # no lock file litter


def test_two_processes_publishing_one_folder_never_collide(tmp_path: Path) -> None:
    """Each writer publishes 40 complete folders; every folder seen (under the lock) is one writer's whole set."""
    target = tmp_path / "export"
    writer = """
        import sys
        from pathlib import Path
        from edgecls.fsutil import atomic_dir
        name, target = sys.argv[1], Path(sys.argv[2])
        for i in range(40):
            with atomic_dir(target, command="test") as tmp:
                for part in range(6):
                    (tmp / f"{name}-{part}").write_text(f"{name} {i}")
        print("done", flush=True)
    """
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(writer), name, str(target)], cwd=REPO, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for name in ("a", "b")]
    seen = 0
    try:
        while any(p.poll() is None for p in procs) and seen < 2000:
            with folder_lock(tmp_path, wait=True):
                if target.exists():
                    names = sorted(p.name for p in target.iterdir())
                    writers = {n.split("-")[0] for n in names if n != OUTPUT_MARKER}
                    assert len(writers) == 1 and len(names) == 7, names
                    contents = {(target / n).read_text() for n in names if n != OUTPUT_MARKER}
                    assert len(contents) == 1, contents
                    seen += 1
        outputs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for proc, (stdout, stderr) in zip(procs, outputs):
        assert proc.returncode == 0 and stdout.strip() == "done", stderr
        assert "Traceback" not in stderr and "Directory not empty" not in stderr
    final = sorted(p.name for p in target.iterdir())
    assert final in ([OUTPUT_MARKER, *(f"a-{i}" for i in range(6))], [OUTPUT_MARKER, *(f"b-{i}" for i in range(6))])
    assert {(target / n).read_text().split()[1] for n in final if n != OUTPUT_MARKER} == {"39"}
    assert hidden(tmp_path) == []


def test_a_forked_child_does_not_keep_the_parents_lock(tmp_path: Path) -> None:
    """Training may fork data workers while the run folder is locked: once the parent releases, the lock is free."""
    read_end, write_end = os.pipe()
    with folder_lock(tmp_path):
        pid = os.fork()
        if pid == 0:  # the child: wait until the test is done with it
            os.close(write_end)
            os.read(read_end, 1)
            os._exit(0)
    try:
        probe = subprocess.run([sys.executable, "-c", f"from pathlib import Path; from edgecls.locks import folder_lock\n"
                                f"with folder_lock(Path({str(tmp_path)!r})): print('free')"],
                               cwd=REPO, capture_output=True, text=True, timeout=120)
        assert probe.returncode == 0 and probe.stdout.strip() == "free", probe.stderr
    finally:
        os.write(write_end, b"x")
        os.waitpid(pid, 0)
        os.close(read_end)
        os.close(write_end)
