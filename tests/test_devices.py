"""check-devices: what the gpu_smoke target runs inside each training job's allocation."""

import json
import subprocess
import sys

import pytest
import torch

from clip_flant5.devices import DeviceCheckError, check_devices


def test_report_names_the_visible_devices_and_the_scheduler_placement(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    expected = torch.cuda.device_count()
    report = check_devices(expected)
    assert report["visible_gpus"] == expected == len(report["devices"])
    assert report["environment"]["SLURM_JOB_ID"] == "77"


def test_wrong_count_is_an_error_naming_both_numbers(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    seen = torch.cuda.device_count()
    with pytest.raises(DeviceCheckError, match=rf"expected {seen + 2} GPU\(s\) on .*torch sees {seen}.*=0,1"):
        check_devices(seen + 2)


def test_cli_writes_the_report_and_fails_with_exit_status(tmp_path):
    seen = torch.cuda.device_count()
    out = tmp_path / "smoke.json"
    command = [sys.executable, "-m", "clip_flant5", "check-devices", "--expect-gpus"]
    ok = subprocess.run([*command, str(seen), "--out", out])
    assert ok.returncode == 0 and json.loads(out.read_text())["visible_gpus"] == seen
    bad = subprocess.run(
        [*command, str(seen + 8)],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "check-devices: error: expected" in bad.stderr
