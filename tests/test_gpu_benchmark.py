"""`benchmarks/gpu_kolors.py --tiny`: the GPU benchmark's code, end to end on the CPU."""
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_kolors.py"


def test_the_gpu_benchmark_runs_end_to_end_on_tiny_models(tmp_path):
    out = tmp_path / "report.json"
    command = [sys.executable, str(BENCHMARK), "--tiny", "--models-dir", str(tmp_path / "models"), "--out", str(out)]
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    report = json.loads(out.read_text())
    assert report["tiny"] and report["build_s"] > 0 and (tmp_path / "models" / ".random-kolors.json").exists()
    for batch in ("batch_1", "batch_2"):
        entry = report[batch]
        for side in ("run_graph", "diffusers"):
            assert entry[side]["warm"]["unet_it_s"] > 0 and entry[side]["cold"]["wall_s"] > 0
        assert math.isfinite(entry["ratio_unet_it_s"]) and entry["ratio_unet_it_s"] > 0
        assert entry["run_graph"]["warm"]["node_s"]["14"] > 0
    assert set(report["chatglm"]) == {"fp16", "quant8", "quant4"}
    assert report["cfg_step"]["gflops_per_step"] > 0
    # the folder is reused: a second build of the same sizes and seed does nothing
    spec = importlib.util.spec_from_file_location("gpu_kolors", BENCHMARK)
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    marker = (tmp_path / "models" / ".random-kolors.json").read_bytes()
    assert benchmark.ensure_models(tmp_path / "models", benchmark.TINY, 0, "cpu") == 0
    assert (tmp_path / "models" / ".random-kolors.json").read_bytes() == marker
    assert benchmark.ensure_models(tmp_path / "other", benchmark.TINY, 0, "cpu") > 0  # a new folder is built
