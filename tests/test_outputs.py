"""Output files: names claimed atomically across threads and processes, stamps that decide
whether a cached output node (or a resumed batch) may trust a file."""
import errno
import hashlib
import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
from PIL import Image

from engine import Session, Settings
from engine.atomic import create_new

from .test_cache import CHAIN

ROOT = Path(__file__).resolve().parent.parent


def _names():
    return (f"img_{n:05}_.png" for n in range(1, 10_000))


def test_threads_claiming_the_same_series_never_share_a_name(tmp_path):
    claimed: list[Path] = []

    def worker(tag: int) -> None:
        for k in range(20):
            claimed.append(create_new(tmp_path, _names(), lambda fh, t=tag, k=k: fh.write(f"{t}:{k}".encode())))

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(claimed)) == 160 and len(list(tmp_path.glob("img_*"))) == 160
    assert sorted(p.read_text() for p in claimed) == sorted(f"{t}:{k}" for t in range(8) for k in range(20))
    assert not list(tmp_path.glob(".tmp-*"))


def test_without_hard_links_a_lock_file_serialises_the_claims(tmp_path, monkeypatch):
    def no_links(src, dst):
        raise OSError(errno.EPERM, "hard links not supported")

    monkeypatch.setattr(os, "link", no_links)
    (tmp_path / "img_00001_.png").write_bytes(b"old")
    paths = [create_new(tmp_path, _names(), lambda fh, k=k: fh.write(str(k).encode())) for k in range(3)]
    assert [p.name for p in paths] == ["img_00002_.png", "img_00003_.png", "img_00004_.png"]
    assert (tmp_path / "img_00001_.png").read_bytes() == b"old" and not list(tmp_path.glob(".tmp-*"))


SAVER = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {root!r})
    from engine import Session, Settings
    session = Session(settings=Settings(input_dir={inp!r}, output_dir={out!r}, cache_dir=None), cache=False)
    prompt = {{"1": {{"class_type": "LoadImage", "inputs": {{"image": {image!r}}}}},
              "2": {{"class_type": "SaveImage", "inputs": {{"images": ["1", 0], "filename_prefix": "same"}}}}}}
    files = []
    for _ in range(15):
        files += session.execute(prompt).files
    print(json.dumps(files))
""")


def test_two_processes_saving_with_one_prefix_into_one_folder_keep_every_image(tmp_path):
    (tmp_path / "in").mkdir()
    for name, value in (("a.png", 40), ("b.png", 200)):
        Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(tmp_path / "in" / name)
    procs = {image: subprocess.Popen(
        [sys.executable, "-c", SAVER.format(root=str(ROOT), inp=str(tmp_path / "in"), out=str(tmp_path / "out"),
                                            image=image)], stdout=subprocess.PIPE, text=True)
        for image in ("a.png", "b.png")}
    reported = {image: json.loads(proc.communicate(timeout=180)[0]) for image, proc in procs.items()}
    assert all(proc.returncode == 0 for proc in procs.values())
    everything = reported["a.png"] + reported["b.png"]
    assert len(everything) == 30 and len(set(everything)) == 30
    assert len(list((tmp_path / "out").glob("same_*_.png"))) == 30
    for image, value in (("a.png", 40), ("b.png", 200)):
        for path in reported[image]:  # each file still holds the pixels of the process that reported it
            assert np.asarray(Image.open(path))[0, 0, 0] == value


def test_batch_num_prefix_never_overwrites_within_a_run_or_across_runs(tmp_path):
    (tmp_path / "in").mkdir()
    frames = [Image.fromarray(np.full((8, 8, 3), v, np.uint8)) for v in (10, 20)]
    frames[0].save(tmp_path / "in" / "two.gif", save_all=True, append_images=frames[1:])
    session = Session(settings=Settings(input_dir=tmp_path / "in", output_dir=tmp_path / "out"), cache=False)
    prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": "two.gif"}},
              "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "b_%batch_num%"}}}
    first = session.execute(prompt).files
    second = session.execute(prompt).files
    names = [Path(p).name for p in first + second]
    assert names == ["b_0_00001_.png", "b_1_00002_.png", "b_0_00003_.png", "b_1_00004_.png"]


def test_a_cached_output_node_runs_again_when_its_file_changed_or_vanished(toy_session):
    first = toy_session.execute(CHAIN)
    [path] = first.files
    stamp = first.outputs["5"].stamps[0]
    assert stamp[0] == Path(path).stat().st_size and stamp[2] == hashlib.sha256(Path(path).read_bytes()).hexdigest()
    assert toy_session.execute(CHAIN).executed == []
    Path(path).write_text("edited by hand")
    rerun = toy_session.execute(CHAIN)
    assert rerun.executed == ["5"] and Path(path).read_text() == "50.5"
    Path(path).unlink()
    assert toy_session.execute(CHAIN).executed == ["5"]
    os.utime(path, ns=(0, 10**18))  # touched, content unchanged: the hash vouches for it
    assert toy_session.execute(CHAIN).executed == []


def test_a_resumed_batch_redoes_exactly_the_jobs_whose_files_changed(toy_session):
    from .toy_nodes import api

    graphs = [api(("1", "Constant", {"value": v}), ("2", "Record", {"x": ["1", 0], "name": f"job{v}"}))
              for v in range(3)]
    first = list(toy_session.execute_many(graphs, manifest=True))
    assert [o.status for o in first] == ["ok"] * 3
    (toy_session.settings.output_dir / "job1.txt").write_text("9.9")  # same size, other content
    toy_session.cache.clear()
    again = list(toy_session.execute_many(graphs, manifest=True))
    assert {o.job.index: o.status for o in again} == {0: "done", 1: "ok", 2: "done"}
    assert (toy_session.settings.output_dir / "job1.txt").read_text() == "1.0"
