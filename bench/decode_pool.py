"""Decoding a tree's images once (the pass `edgecls train` and `edgecls data check` make) serially, in threads and in
worker processes (edgecls/data/decode_pool.py FileDecoder), rounds interleaved; prints the wall and CPU time of each.

  nice -n 19 .venv/bin/python bench/decode_pool.py bench/work/fashion-mnist-2000 --size 48 --rounds 2

--pipeline times the whole pass `edgecls train` makes (training.pipeline.load_training_data, imports included) with
whatever edgecls is on PYTHONPATH, e.g. an older commit's worktree for a before/after comparison:

  PYTHONPATH=/path/to/worktree nice -n 19 .venv/bin/python bench/decode_pool.py bench/work/fashion-mnist-2000 --pipeline
"""
from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path


def _cpu() -> tuple[float, float]:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def pipeline(tree: Path, size: int) -> None:
    start = time.perf_counter()
    from rich.console import Console

    import edgecls
    from edgecls.training.pipeline import load_training_data

    data = load_training_data(str(tree), 0.1, 0.0, 0, (size, size), "auto", Path("/nonexistent-run"), Console(stderr=True))
    own, children = _cpu()
    print(f"{edgecls.__file__}: load_training_data {time.perf_counter() - start:.1f} s wall, cpu: main {own:.1f} s, "
          f"workers {children:.1f} s, images {sum(len(images) for images in data.arrays.values())}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("tree", type=Path)
    parser.add_argument("--size", type=int, default=48, help="model size in px; 0: only check that each file decodes")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--limit", type=int, default=0, help="decode only the first N files (0: all)")
    parser.add_argument("--modes", default="serial,threads,processes")
    parser.add_argument("--pipeline", action="store_true", help="time load_training_data instead (see the docstring)")
    args = parser.parse_args()
    if args.pipeline:
        return pipeline(args.tree, args.size or 48)
    from edgecls.data.decode_pool import DecodeSpec, FileDecoder, available_cpus, decode_file
    from edgecls.data.folder import scan_tree

    paths = scan_tree(args.tree, 0.1, 0.0).paths
    paths = paths[: args.limit] if args.limit else paths
    spec = DecodeSpec((args.size, args.size) if args.size else None)
    print(f"{len(paths)} files from {args.tree}, {spec}, {available_cpus()} cpus")
    times: dict[str, list[float]] = {}
    cpu: dict[str, tuple[float, float]] = {}  # mode -> (this process, workers) CPU seconds of the last round
    for _ in range(args.rounds):
        for mode in args.modes.split(","):
            own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            if mode == "serial":
                reasons = [decode_file(path, spec)[0] for path in paths]
            else:
                with FileDecoder(spec, mode=mode) as decoder:
                    reasons = decoder.reasons(paths)
            times.setdefault(mode, []).append(time.perf_counter() - start)
            own_after, children_after = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu[mode] = (own_after.ru_utime + own_after.ru_stime - own.ru_utime - own.ru_stime,
                         children_after.ru_utime + children_after.ru_stime - children.ru_utime - children.ru_stime)
            assert len(reasons) == len(paths)
    for mode, seconds in times.items():
        print(f"{mode:10s} " + " ".join(f"{s:6.2f}" for s in seconds) + f"  s   best {min(seconds) / len(paths) * 1e6:7.0f} us/file"
              f"   cpu: main {cpu[mode][0]:.2f} s, workers {cpu[mode][1]:.2f} s")


if __name__ == "__main__":
    main()
