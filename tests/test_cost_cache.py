"""Runs sharing one cost cache keep each other's entries (merged under a lock on write)."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
from pathlib import Path

import onnx
from conftest import CHAIN, CHAIN_WEIGHTS, REPO, make_model

RUNS = 4


def _save_many(path: str, run: int, barrier: "multiprocessing.synchronize.Barrier") -> None:
    from onnx_gkp.cost.table import CostTable

    table = CostTable(1, Path(path))
    barrier.wait()
    for step in range(20):  # twenty saves each, interleaved with the other processes'
        table.remember(f"run {run} step {step}", float(step))
        table.save()


def test_four_processes_saving_keep_every_entry(tmp_path: Path) -> None:
    path = tmp_path / "costs.json"
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(RUNS)
    processes = [context.Process(target=_save_many, args=(str(path), run, barrier)) for run in range(RUNS)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
        assert process.exitcode == 0
    keys = json.loads(path.read_text())
    assert sum(" | run " in k for k in keys) == RUNS * 20
    assert sorted(p.name for p in tmp_path.iterdir()) == [".costs.json.lock", "costs.json"]  # no temporary left


def test_four_cli_runs_sharing_a_cache_keep_every_layer(tmp_path: Path) -> None:
    """Four tiny models of different widths timed at once into one cache: all their layers stay."""
    cache = tmp_path / "costs.json"
    commands = []
    for channels in (8, 12, 16, 20):
        source = tmp_path / f"c{channels}.onnx"
        onnx.save(
            make_model(
                CHAIN.replace("1,8,10,10", f"1,{channels},10,10"),
                {"w1": (32, channels, 3, 3), "b1": (32,), "w2": (16, 32, 3, 3)},
            ),
            source,
        )
        commands.append(
            [
                sys.executable,
                "-m",
                "onnx_gkp",
                str(source),
                str(tmp_path / f"o{channels}.onnx"),
                "--cost-cache",
                str(cache),
                "--no-validate",
                "--ratio",
                "0.25",
            ]
        )  # the uniform mode times every layer
    runs = [subprocess.Popen(c, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in commands]
    for run in runs:
        _, err = run.communicate(timeout=600)
        assert run.returncode == 0, err
    keys = list(json.loads(cache.read_text()))
    for channels in (8, 12, 16, 20):
        assert any(f"w[32, {channels}, 3, 3]" in k for k in keys), f"the {channels}-channel model's times were lost"


def test_variants_measured_later_keep_the_dense_conv_as_their_reference() -> None:
    """A figure kept from another run (here an absurd 10 s for the dense Conv) scales what is
    measured now: the variants come back at their measured ratio to it, not in microseconds."""
    from onnx_gkp.analyse.sites import analyse
    from onnx_gkp.cost.table import CostTable

    site = analyse(make_model(CHAIN, CHAIN_WEIGHTS)).sites[1]
    table = CostTable(1)
    table.record(site.geometry, site.geometry.dense, 10.0)
    variant = (1, site.weight.shape[1] // 2, True)
    times = table.times(site.geometry, [variant])
    assert times[site.geometry.dense] == 10.0 and 0.5 < times[variant] < 20.0
