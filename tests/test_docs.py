"""scripts/make.sh's wall times and timings by batch: each kept beside the machine it ran on, and tabulated per machine."""
import csv
import json
import subprocess

from conftest import REPO, import_script


def fill_readme():
    return import_script("scripts/fill_readme.py")


def write_times(folder, section, rows):
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{section}.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)


def test_a_duration_is_rounded_to_whole_seconds_before_it_is_split_into_minutes():
    duration = fill_readme().duration
    assert [duration(s) for s in (61.4, 99.6, 100, 539.5, 599.4, 3599.6, 3631, 7170)] == [
        "61 s", "1 min 40 s", "1 min 40 s", "9 min 00 s", "9 min 59 s", "1 h 00 min", "1 h 01 min", "2 h 00 min"]


def test_times_are_tabulated_per_machine(tmp_path, monkeypatch):
    module = fill_readme()
    monkeypatch.setattr(module, "DATA", tmp_path)
    write_times(tmp_path / "times", "train", [["python train.py", "60.0", "fast CPU"], ["python train.py", "62.0", "fast CPU"],
                                              ["python train.py", "170.0", "slow CPU"]])
    write_times(tmp_path / "times", "sparse", [["python train.py --sparse vd", "470.0", "slow CPU"]])
    text = module.times()
    fast, slow = text.split("On slow CPU:")
    assert fast.startswith("On fast CPU:")
    assert "| `python train.py` | 61 s | 60 s–62 s | 2 |" in fast and "vd" not in fast
    assert "| `python train.py` | 2 min 50 s |  | 1 |" in slow
    assert "| `python train.py --sparse vd` | 7 min 50 s |  | 1 |" in slow


def test_make_sh_rerun_replaces_only_this_machines_times(tmp_path):
    """The section's times from other machines survive a run here; this machine's old ones go."""
    script = (REPO / "scripts" / "make.sh").read_text()
    forget = script[script.index("forget_times() {"):script.index("\ntrain() {")]
    times = tmp_path / "docs" / "times"
    write_times(times, "train", [["python train.py", "60.0", "other CPU"], ["python train.py", "170.0", "this CPU"]])
    subprocess.run(["bash", "-c", f'{forget}\nDOCS=docs SECTION=train MACHINE="this CPU" forget_times'], cwd=tmp_path, check=True)
    with open(times / "train.csv", newline="") as f:
        assert list(csv.reader(f)) == [["python train.py", "60.0", "other CPU"]]
    assert not (times / "train.csv.tmp").exists()


def test_make_sh_times_each_section_and_a_rerun_replaces_only_its_row_on_this_machine(tmp_path):
    script = (REPO / "scripts" / "make.sh").read_text()
    functions = script[script.index("append_time() {"):script.index("\ntrain() {")]
    times = tmp_path / "sections.csv"
    write_times(tmp_path, "sections", [["train", "100.0", "this CPU, JOBS=2"], ["sparse", "900.0", "this CPU, JOBS=2"],
                                       ["sparse", "500.0", "other CPU, JOBS=2"]])
    subprocess.run(["bash", "-c", f'{functions}\nnow() {{ python -c "import time; print(time.time())"; }}\n'
                    f'forget_rows {times} sparse "this CPU, JOBS=2"\n'
                    f'append_time {times} sparse "$(( $(date +%s) - 30 ))" "this CPU, JOBS=2"'], check=True)
    with open(times, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[:2] == [["train", "100.0", "this CPU, JOBS=2"], ["sparse", "500.0", "other CPU, JOBS=2"]]
    assert rows[2][0] == "sparse" and rows[2][2] == "this CPU, JOBS=2" and 29 <= float(rows[2][1]) < 40
    assert len(rows) == 3


def test_the_sections_are_make_shs_and_their_sum_is_given_where_every_one_has_run(tmp_path, monkeypatch):
    module = fill_readme()
    script = (REPO / "scripts" / "make.sh").read_text()
    assert f"SECTIONS=({' '.join(module.SECTIONS)})" in script
    monkeypatch.setattr(module, "DATA", tmp_path)
    assert "No section has been timed yet" in module.sections()
    whole = [[section, "600.0", "fast CPU, JOBS=2"] for section in module.SECTIONS[:-1]]
    write_times(tmp_path / "times", "sections", whole + [["sparse", "1800.0", "slow CPU, JOBS=1"]])
    fast, slow = module.sections().split("On slow CPU, JOBS=1:")
    assert "| `bash scripts/make.sh train` | 10 min 00 s |" in fast and f"| all of them | {10 * (len(module.SECTIONS) - 1) // 60} h {10 * (len(module.SECTIONS) - 1) % 60:02d} min |" in fast
    assert "| `bash scripts/make.sh sparse` | 30 min 00 s |" in slow and "all of them" not in slow


def write_batch_timing(folder, machine, speedup):
    folder.mkdir(parents=True)
    (folder / "timing.json").write_text(json.dumps({"machine": machine, "threads": 2, "command": "python x",
                                                     "runs": ["a", "b"], "timing_batch": [100, 1]}))
    row = {"method": "weight", "k": 90, "compact_flop_ceiling": 9.9, "dense_ms": 4.0, "dense_ms_batch1": 0.25}
    for suffix in ("", "_batch1"):
        for path, value in (("sparse", speedup), ("csr", 2.0)):
            row |= {f"{path}_speedup{suffix}{end}": value + delta
                    for end, delta in (("", 0), ("_min", -1), ("_max", 1))}
    with open(folder / "timing.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        writer.writeheader()
        writer.writerow(row)


def test_timings_by_batch_get_a_table_for_each_cpu(tmp_path, monkeypatch):
    module = import_script("scripts/speed_tables.py")
    monkeypatch.setattr(module, "DOCS", tmp_path)
    write_batch_timing(tmp_path / "speed" / "batches" / "avx2-cpu", "AVX2 CPU", 4.0)
    write_batch_timing(tmp_path / "speed" / "batches" / "avx-512-cpu", "AVX-512 CPU", 6.0)
    first, second = module.speed_batches().split("\n\nMeasured on: ")
    assert first.startswith("Measured on: **AVX-512 CPU**") and second.startswith("**AVX2 CPU**")
    assert "| 1 | weight | 90 | 6.00 (5.00–7.00) | – |" in first
    assert "| 100 | weight | 90 | 4.00 (3.00–5.00) |" in second
    assert first.endswith("row by row: weight pruning 3.0–3.0x.") and second.endswith("weight pruning 2.0–2.0x.")


def test_a_timing_names_the_commit_of_its_code(tmp_path, monkeypatch):
    timing = import_script("benchmarks/timing.py")
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                          text=True).stdout.strip()
    assert timing.code_version() in (head, f"{head} with uncommitted changes")
    monkeypatch.setattr(timing, "REPO", tmp_path)  # not a checkout
    assert timing.code_version() == "unknown (not a git checkout)"

    def git(*arguments):
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *arguments], cwd=tmp_path,
                              capture_output=True, text=True, check=True).stdout.strip()
    (tmp_path / "docs").mkdir()
    (tmp_path / "kernel.c").write_text("int x;\n")
    (tmp_path / "docs" / "speed.md").write_text("old\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "first")
    commit = git("rev-parse", "--short", "HEAD")
    (tmp_path / "docs" / "speed.md").write_text("a timing's output\n")  # what the timings write: not code
    assert timing.code_version() == commit
    (tmp_path / "kernel.c").write_text("int y;\n")
    assert timing.code_version() == f"{commit} with uncommitted changes"
