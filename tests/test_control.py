"""The budget controller holds the compute a model spends on text it was not calibrated on."""

import pytest
import torch

from conftest import tiny_model
from ponder.adaptive import convert, set_budget
from ponder.control import BudgetController
from ponder.errors import PonderError
from ponder.inference import LeanDecoder
from ponder.stats import ComputeMeter

CALIB_TOKENS = 2048


@pytest.fixture(scope="module")
def teal(tokenizer):
    return convert(tiny_model("llama"), tokenizer, "teal", calibration_tokens=CALIB_TOKENS, progress=False)


def _generated_compute(model, prompt, controller=None, tokens=160):
    decoder = LeanDecoder(model, max_len=prompt.shape[1] + tokens)
    with ComputeMeter(model) as meter:
        decoder.generate(prompt, tokens, on_token=None if controller is None else lambda _: controller.update())
    return meter.report.ffn_compute


@pytest.mark.parametrize("target", [0.5, 0.7])
def test_controller_holds_the_spend_on_generated_text(teal, tokenizer, target):
    prompt = torch.tensor([tokenizer("The history of the city").input_ids])
    set_budget(teal, target)
    free = _generated_compute(teal, prompt)
    controller = BudgetController(teal, target, every=4)
    held = _generated_compute(teal, prompt, controller)
    assert abs(held - target) <= 0.03, (free, held)
    assert abs(controller.spent - held) < 0.02  # the controller's own count agrees with the meter's
    assert abs(held - target) < abs(free - target) or abs(free - target) <= 0.03


def test_controller_at_full_budget_leaves_the_model_dense(teal):
    controller = BudgetController(teal, 1.0)
    ids = torch.randint(2, 200, (1, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        teal(ids)
    controller.update()
    assert controller.setting == 1.0 and controller.spent == pytest.approx(1.0)


def test_controller_refuses_bad_settings(teal):
    with pytest.raises(PonderError, match="below the lowest calibrated"):
        BudgetController(teal, 0.01)
    with pytest.raises(PonderError, match="gain"):
        BudgetController(teal, 0.5, gain=0)
    with pytest.raises(PonderError, match="adaptive model"):
        BudgetController(tiny_model("llama"), 0.5)
