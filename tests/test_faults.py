"""Fault injection: a corpus of bad inputs, processes killed outright, memory that runs out, damaged store files.

Everything here runs the real program (in-process or as ``python -m dedup`` in a subprocess) on files the test
makes: a bad-input corpus of every unusable kind ingest must name, decoding under an address-space limit,
decoding workers and whole ingests killed with SIGKILL at random points, reports killed while they write, and
catalogs and indexes damaged on disk. After each fault the invariants are checked on the real SQLite file and
the saved FAISS index: every file has one row, an ok row has its vector, the saved index holds exactly the
catalog's ok images, readers never see half a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import sqlite3
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dedup.config import MAX_DECODE_BYTES
from dedup.errors import EXIT_STORE
from dedup.imaging import decoded_bytes, load_image
from dedup.index import load_index
from dedup.service import ingest_folder, open_store
from dedup.types import Report

from .conftest import ROOT, SAMPLE_CATALOG
from .test_cli import _count_rows
from .test_ingest import _index_matches_catalog, _make_images

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
DEDUP = [sys.executable, "-m", "dedup"]


def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DEDUP, *args], env=ENV, capture_output=True, text=True, timeout=timeout)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_header_only(path: Path, width: int, height: int, bit_depth: int = 8, colour: int = 2) -> Path:
    """A PNG whose header promises ``width``×``height`` pixels (colour type 0 grey, 2 RGB) but whose data is one
    row: what a loader must refuse from the header alone, or run out of memory on before it reads the data."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    channels = {0: 1, 2: 3}[colour]
    row = b"\x00" + bytes(width * channels * bit_depth // 8)
    chunks = _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(row)) + _png_chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunks)
    return path


def make_bad_corpus(folder: Path) -> dict[str, str]:
    """Write good and bad files into ``folder``; returns the failure kind expected of each bad file by name."""
    folder.mkdir(parents=True, exist_ok=True)
    _make_images(folder, 3, seed=7)
    # Usable, though unusual: 16-bit grey, a large palette image, transparency.
    ramp = (np.arange(3000, dtype=np.uint32) * 21 % 65536).astype(np.uint16)
    Image.fromarray(np.tile(ramp, (2000, 1))).save(folder / "grey16.png")
    Image.new("P", (4000, 3000), 5).save(folder / "palette.png")
    Image.new("RGBA", (300, 200), (10, 200, 30, 128)).save(folder / "alpha.png")
    expected = {}
    # Over the decode limit: 12000² 16-bit grey (275 MiB decoded), refused from its header.
    png_header_only(folder / "huge16.png", 12000, 12000, bit_depth=16, colour=0)
    expected["huge16.png"] = "too_large"
    good = (folder / "img_0000.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 2])
    expected["truncated.jpg"] = "truncated"
    (folder / "empty.jpg").write_bytes(b"")
    expected["empty.jpg"] = "empty"
    (folder / "notes.jpg").write_text("not an image at all\n")
    expected["notes.jpg"] = "not_image"
    noise = np.random.default_rng(3).integers(0, 255, (200, 300, 3), dtype=np.uint8)
    Image.fromarray(noise).save(folder / "corrupt.png")
    damaged = bytearray((folder / "corrupt.png").read_bytes())
    middle = len(damaged) // 2
    damaged[middle : middle + 64] = bytes(b ^ 0xFF for b in damaged[middle : middle + 64])  # the header is intact
    (folder / "corrupt.png").write_bytes(bytes(damaged))
    expected["corrupt.png"] = "corrupt"
    os.mkfifo(folder / "pipe.jpg")
    expected["pipe.jpg"] = "not_regular_file"
    (folder / "zero.jpg").symlink_to("/dev/zero")
    expected["zero.jpg"] = "not_regular_file"
    (folder / "dangling.png").symlink_to(folder / "gone.png")
    expected["dangling.png"] = "dangling_link"
    (folder / "loop.jpg").symlink_to(folder / "loop.jpg")
    expected["loop.jpg"] = "link_loop"
    (folder / "again").symlink_to(folder, target_is_directory=True)  # a folder loop: walked once, no doubles
    return expected


def test_every_bad_input_is_recorded_with_its_reason(tmp_path: Path) -> None:
    folder = tmp_path / "corpus"
    expected = make_bad_corpus(folder)
    store_dir = tmp_path / "store"
    first = _run("--store", str(store_dir), "ingest", str(folder))
    assert first.returncode == 3, first.stderr  # new failures
    for name in expected:  # each named on stderr with its path and reason, the way a person reads it
        assert f"failed: {folder / name}: " in first.stderr
    assert "seen 15, new 6," in first.stdout  # 3 JPEGs, the 16-bit, the palette and the transparent PNG
    with open_store(store_dir) as store:
        recorded = store.catalog.failed_files()
    assert {Path(f.path).name: f.kind for f in recorded} == expected
    assert all(f.reason for f in recorded)
    # The next night: nothing new, the same failures remembered without being read again.
    second = _run("--store", str(store_dir), "ingest", str(folder), "--format", "json")
    assert second.returncode == 0, second.stderr
    again = json.loads(second.stdout)
    assert again["failed"] == 0 and {Path(f["path"]).name for f in again["known_failures"]} == set(expected)
    with open_store(store_dir) as store:
        _index_matches_catalog(store)


def test_a_sixteen_bit_image_decodes_within_the_memory_bound(tmp_path: Path) -> None:
    ramp = (np.arange(2400, dtype=np.uint32) * 27 % 65536).astype(np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(np.tile(ramp, (1600, 1))).save(path)
    loaded = load_image(path, target=224)
    assert loaded.image.mode == "RGB" and max(loaded.image.size) == 448
    grey = np.asarray(loaded.image)[..., 0]
    assert grey.min() <= 2 and grey.max() >= 250  # stretched over the whole 8-bit range, not clipped at 255
    with Image.open(path) as img:
        assert img.mode == "I;16" and decoded_bytes(img) == 2400 * 1600 * 2 <= MAX_DECODE_BYTES


#: Decodes a file under an address-space limit set just above what the process already maps.
_UNDER_LIMIT = """
import resource, sys
from dedup.errors import ImageError
from dedup.imaging import load_image

def mapped() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise SystemExit("no VmSize")

headroom = int(sys.argv[2]) * 2**20
if headroom:
    resource.setrlimit(resource.RLIMIT_AS, (mapped() + headroom,) * 2)
try:
    load_image(sys.argv[1], target=224)
    print("decoded")
except ImageError as exc:
    print(exc.kind)
"""


def test_running_out_of_memory_while_decoding_is_a_reason_not_a_crash(tmp_path: Path) -> None:
    # 7000² RGB takes 187 MiB, under the decode limit: with 64 MiB to spare, the allocation itself fails.
    path = png_header_only(tmp_path / "big.png", 7000, 7000)
    env = {**ENV, "MALLOC_ARENA_MAX": "1"}

    def kind(headroom_mib: int) -> str:
        cmd = [sys.executable, "-c", _UNDER_LIMIT, str(path), str(headroom_mib)]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, check=True).stdout.strip()

    assert kind(64) == "out_of_memory"
    assert kind(0) == "decoded"  # the same file with memory to spare (Pillow pads the rows the file lacks)


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs /proc to find the decoding workers")
def test_a_killed_decoding_worker_costs_no_file(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    n = 700  # over PROCESS_MIN_FILES: decoded by worker processes
    _make_images(folder, n, size=120)
    store_dir = tmp_path / "store"
    cmd = [*DEDUP, "--store", str(store_dir), "ingest", str(folder)]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and proc.poll() is None and time.monotonic() < deadline:
        # Forked workers share the ingest's command line (the resource tracker does not).
        workers = [c for c in _children(proc.pid) if _cmdline(c) == _cmdline(proc.pid)]
        if workers:
            killed = workers[0]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.005)
    out, err = proc.communicate(timeout=300)
    assert killed is not None, "the ingest ended before a worker could be killed"
    assert proc.returncode == 0, err.decode()  # every file decoded again elsewhere: no failure
    assert "decoding worker stopped abruptly" in err.decode()
    with open_store(store_dir) as store:
        assert store.catalog.stats()["images"] == {"ok": n, "failed": 0, "missing": 0, "total": n}
        _index_matches_catalog(store)


def _catalog_invariants(db: Path) -> int:
    """Check one row a path and a vector for every ok row; returns the number of rows."""
    with sqlite3.connect(db, timeout=30) as con:
        doubled = con.execute("select path from images group by path having count(*) > 1").fetchall()
        assert doubled == []
        unembedded = con.execute(
            "select count(*) from images i where i.status = 'ok' and not exists "
            "(select 1 from vectors v where v.sha256 = i.sha256)"
        ).fetchone()[0]
        assert unembedded == 0
        return int(con.execute("select count(*) from images").fetchone()[0])


def _saved_index_matches_catalog(store_dir: Path) -> None:
    """The index on disk (not one rebuilt on opening) holds exactly the catalog's ok images."""
    loaded = load_index(store_dir / "index")
    assert loaded is not None
    index, info = loaded
    with sqlite3.connect(store_dir / "catalog.sqlite") as con:
        ok = sorted(r[0] for r in con.execute("select id from images where status = 'ok'"))
        generation = int(con.execute("select value from meta where key = 'generation'").fetchone()[0])
    assert sorted(index.ids().tolist()) == ok and info.count == len(ok) and info.generation == generation


def test_ingest_killed_at_random_points_loses_and_doubles_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    n = 1500
    _make_images(folder, n, size=120)
    store_dir = tmp_path / "store"
    cmd = [*DEDUP, "--store", str(store_dir), "ingest", str(folder)]
    rng = random.Random(20261207)
    db = store_dir / "catalog.sqlite"
    # The first kill lands during start-up (before or while the catalog is created), the others at a random point
    # of the progress still to make: between two batch commits, or in the middle of one.
    kills = 0
    for round_ in range(4):
        proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if round_ == 0:
            time.sleep(rng.uniform(0.2, 1.5))
        else:
            done = _count_rows(db)
            target = rng.randint(done + 1, max(done + 1, n - 300))
            deadline = time.monotonic() + 120
            while _count_rows(db) < target and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(rng.uniform(0.005, 0.05))
        if proc.poll() is None:
            proc.kill()
            kills += 1
        proc.wait(timeout=60)
        if db.exists():
            assert _catalog_invariants(db) <= n
    assert kills >= 3, "the ingests finished before they could be killed"
    final = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    assert _catalog_invariants(store_dir / "catalog.sqlite") == n
    _saved_index_matches_catalog(store_dir)
    leftovers = [p for p in store_dir.rglob("*") if ".tmp-" in p.name]
    assert leftovers == []


def test_reports_killed_while_writing_leave_whole_files(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    with open_store(store_dir) as store:
        ingest_folder(store, SAMPLE_CATALOG)  # the samples hold 25 clusters of copies
    out = tmp_path / "report.json"
    cmd = [*DEDUP, "--store", str(store_dir), "report", "--format", "json", "-o", str(out)]
    # Time one whole run (keeper signals cached by the first), then kill the next ones anywhere within that time:
    # start-up, clustering, saving the run, writing the output.
    assert _run(*cmd[len(DEDUP) :]).returncode == 10
    started = time.monotonic()
    assert _run(*cmd[len(DEDUP) :]).returncode == 10
    whole = time.monotonic() - started
    rng = random.Random(7)
    kills = 0
    for _ in range(5):
        proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.1, 0.9) * whole)
        if proc.poll() is None:
            proc.kill()
            kills += 1
        proc.wait(timeout=60)
        for path in (out, store_dir / "reports" / "latest.json"):
            if path.exists():
                Report.from_dict(json.loads(path.read_text()))  # whole, or not there: never half a report
    assert kills >= 3, "the reports finished before they could be killed"
    final = _run("--store", str(store_dir), "report", "--format", "json", "-o", str(out))
    assert final.returncode == 10, final.stderr
    report = Report.from_dict(json.loads(out.read_text()))
    latest = Report.from_dict(json.loads((store_dir / "reports" / "latest.json").read_text()))
    assert report.run_id == latest.run_id and report.clusters
    strays = [p.name for p in [*tmp_path.iterdir(), *(store_dir / "reports").iterdir()] if ".tmp-" in p.name]
    assert strays == []  # the next run swept what the killed ones left


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture
def small_store(tmp_path: Path) -> Path:
    store_dir = tmp_path / "store"
    with open_store(store_dir) as store:
        ingest_folder(store, SAMPLE_CATALOG / "products")
    return store_dir


QUERY = str(ROOT / "catalog_samples" / "queries" / "farm__phone.jpg")


@pytest.mark.parametrize("damage", ["empty", "missing", "garbage", "truncated"])
def test_a_damaged_catalog_is_refused_and_the_index_left_alone(small_store: Path, damage: str) -> None:
    db = small_store / "catalog.sqlite"
    for side in ("-wal", "-shm"):
        Path(f"{db}{side}").unlink(missing_ok=True)
    before = _digest(small_store / "index")
    if damage == "empty":
        db.write_bytes(b"")
    elif damage == "missing":
        db.unlink()
    elif damage == "garbage":
        db.write_bytes(os.urandom(4096))
    else:
        db.write_bytes(db.read_bytes()[: db.stat().st_size // 2])
    for args in (["query", QUERY], ["report"], ["ingest", str(SAMPLE_CATALOG / "products")]):
        done = _run("--store", str(small_store), *args)
        assert done.returncode == EXIT_STORE, (args, done.stdout, done.stderr)
        assert done.stderr.count("\n") == 1 and str(small_store) in done.stderr, done.stderr  # one line naming it
    assert _digest(small_store / "index") == before
    if damage in ("empty", "missing"):
        assert not db.exists() or db.stat().st_size == 0  # not silently made into a new, empty catalog


@pytest.mark.parametrize("damage", ["truncated index", "garbage sidecar", "sidecar without index"])
def test_a_damaged_index_is_rebuilt_from_the_catalog(small_store: Path, damage: str) -> None:
    index_dir = small_store / "index"
    faiss_file = next(p for p in index_dir.iterdir() if p.name != "index.json")
    if damage == "truncated index":
        faiss_file.write_bytes(faiss_file.read_bytes()[: faiss_file.stat().st_size // 2])
    elif damage == "garbage sidecar":
        (index_dir / "index.json").write_text("{not json")
    else:
        faiss_file.unlink()
    done = _run("--store", str(small_store), "query", QUERY, "--format", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["results"]
    _saved_index_matches_catalog(small_store)


def test_a_killed_upload_is_finished_or_dropped_when_the_server_starts(small_store: Path) -> None:
    from fastapi.testclient import TestClient

    from dedup.api import create_app
    from dedup.fsutil import temporary_path

    uploads = small_store / "uploads"
    uploads.mkdir()
    dead = 2**22 + 12345  # beyond the default pid_max: no such process
    with open_store(small_store) as store:
        committed = store.catalog.known_files()
        some = next(iter(committed.values()))
    # One staged upload whose row was committed before the kill, one whose row never was.
    row_path = uploads / "committed.jpg"
    orphan = uploads / "orphan.jpg"
    for target in (row_path, orphan):
        staged = temporary_path(target)
        staged = staged.with_name(staged.name.replace(f"-{os.getpid()}-", f"-{dead}-"))
        staged.write_bytes(Path(some.path).read_bytes())
    with sqlite3.connect(small_store / "catalog.sqlite") as con:
        con.execute("update images set path = ? where id = ?", (str(row_path), some.image_id))
    with open_store(small_store) as store, TestClient(create_app(store, api_key="")) as client:
        assert client.get("/healthz").status_code == 200
    assert row_path.is_file() and not orphan.exists()
    assert [p.name for p in uploads.iterdir()] == ["committed.jpg"]


def test_every_file_of_a_store_gets_the_same_mode(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from dedup.api import create_app
    from dedup.service import build_report

    old = os.umask(0o027)  # a group-readable store: every file must follow the umask, uploads included
    try:
        store_dir = tmp_path / "store"
        with open_store(store_dir) as store:
            ingest_folder(store, SAMPLE_CATALOG / "products" / "animals")
            build_report(store)
            with TestClient(create_app(store, api_key="")) as client:
                photo = (ROOT / "catalog_samples" / "queries" / "farm__phone.jpg").read_bytes()
                r = client.post("/api/v1/images", files={"image": ("x.jpg", photo)}, data={"product_id": "M-1"})
                assert r.status_code == 201, r.text
    finally:
        os.umask(old)
    files = [p for p in store_dir.rglob("*") if p.is_file() and p.name != ".lock"]
    kinds = {p.relative_to(store_dir).parts[0] for p in files}
    assert {"catalog.sqlite", "index", "reports", "uploads"} <= kinds
    modes = {p.relative_to(store_dir).as_posix(): oct(p.stat().st_mode & 0o777) for p in files}
    assert set(modes.values()) == {oct(0o640)}, modes


def test_the_decode_budget_lets_large_pictures_take_turns() -> None:
    import threading

    from dedup.imaging import DecodeBudget

    budget = DecodeBudget(100)
    held, peak, lock = [0], [0], threading.Lock()

    def decode(nbytes: int) -> None:
        with budget.hold(nbytes):
            with lock:
                held[0] += nbytes
                peak[0] = max(peak[0], held[0])
            time.sleep(0.05)
            with lock:
                held[0] -= nbytes

    def peak_of(sizes: list[int]) -> int:
        peak[0] = 0
        threads = [threading.Thread(target=decode, args=(n,)) for n in sizes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return peak[0]

    assert peak_of([60, 60, 60, 60]) == 60  # four large pictures: one at a time
    assert peak_of([20, 20, 20, 20]) == 80  # small ones side by side
    assert peak_of([100, 10, 10]) <= 100
