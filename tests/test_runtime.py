"""The runtime's network preparation on the CPU: channels_last, except where oneDNN would
corrupt the heap (runtime.py, uxlfoundation/oneDNN issue 6035)."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tune_unlearn.network.resnet import build_model
from tune_unlearn.runtime import make_runtime

REPO = Path(__file__).resolve().parent.parent


def strided_1x1(model):
    return [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1)
            and m.stride != (1, 1)]


def test_narrow_strided_1x1_convolutions_run_in_nchw_and_the_rest_channels_last(tiny_experiment):
    runtime = make_runtime("cpu")
    narrow = runtime.prepare(build_model(tiny_experiment.model, 10, 1))  # width 4
    wide = runtime.prepare(build_model(type(tiny_experiment.model)("resnet18", 16, True), 10, 1))
    def inputs(model, keep) -> list[str]:
        seen = []
        for conv in (c for c in strided_1x1(model) if keep(c)):
            conv.register_forward_hook(lambda m, args, out: seen.append(
                "nchw" if args[0].is_contiguous() else "nhwc" if args[0].is_contiguous(memory_format=torch.channels_last)
                else "other"))
        model(torch.randn(4, 1, 8, 8).contiguous(memory_format=torch.channels_last)).sum().backward()
        return seen

    assert inputs(narrow, lambda c: c.in_channels < 16) == ["nchw", "nchw"]  # layer2's and layer3's shortcuts
    assert inputs(wide, lambda c: True) == ["nhwc"] * 3
    assert inputs(narrow, lambda c: c.in_channels >= 16) == ["nhwc"]  # layer4's, 16 channels wide

@pytest.mark.slow
@pytest.mark.train
def test_a_width_4_network_trains_on_one_thread_without_corrupting_the_heap():
    """The cost model's training steps (batches of 8, 32, 128) on the tests' width-4 network and
    one thread: without the NCHW fallback this aborted in its first or second calibration on an AVX2 EPYC."""
    code = ("import torch; torch.set_num_threads(1)\n"
            "from tune_unlearn.cost import calibrate\n"
            "from tune_unlearn.data.experiment import load_experiment\n"
            "from tune_unlearn.network.resnet import build_model\n"
            "from tune_unlearn.runtime import make_runtime\n"
            "spec, rt = load_experiment('digits', {'model.width': 4}).model, make_runtime('cpu')\n"
            "for _ in range(2):\n"
            "    calibrate(lambda: rt.prepare(build_model(spec, 10, 1)), (1, 8, 8), 10, rt.device, rt.sync, 'cpu')\n"
            "print('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
