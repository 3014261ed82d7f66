"""docs/make.sh's wall times: each kept beside the machine it ran on, and tabulated per machine."""
import csv
import importlib.util
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def fill_readme():
    spec = importlib.util.spec_from_file_location("fill_readme", ROOT / "docs" / "fill_readme.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_times(folder, section, rows):
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{section}.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)


def test_times_are_tabulated_per_machine(tmp_path, monkeypatch):
    module = fill_readme()
    monkeypatch.setattr(module, "DOCS", tmp_path)
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
    script = (ROOT / "docs" / "make.sh").read_text()
    forget = script[script.index("forget_times() {"):script.index("\ntrain() {")]
    times = tmp_path / "docs" / "times"
    write_times(times, "train", [["python train.py", "60.0", "other CPU"], ["python train.py", "170.0", "this CPU"]])
    subprocess.run(["bash", "-c", f'{forget}\nSECTION=train MACHINE="this CPU" forget_times'], cwd=tmp_path, check=True)
    with open(times / "train.csv", newline="") as f:
        assert list(csv.reader(f)) == [["python train.py", "60.0", "other CPU"]]
    assert not (times / "train.csv.tmp").exists()
