"""Layer skip: budgets on a deeper model, skipped layers leave the residual alone, and K/V stay consistent."""

import pytest
import torch
from test_decode import hf_greedy
from transformers import AutoModelForCausalLM, LlamaConfig, Qwen3Config

from conftest import _COMMON, VOCAB
from ponder.adaptive import adaptive_modules, convert, set_budget
from ponder.data import load_text
from ponder.errors import PonderError
from ponder.inference import LeanDecoder
from ponder.methods.skip import SkipConfig
from ponder.stats import ComputeMeter

LAYERS = 6


def deep_model(config_class=LlamaConfig, **extra):
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config_class(**{**_COMMON, "num_hidden_layers": LAYERS, **extra})).eval()


@pytest.fixture(scope="module")
def skipping(tokenizer):
    return convert(deep_model(), tokenizer, "skip", calibration_tokens=1024, progress=False)


@pytest.fixture(scope="module")
def calib_ids(tokenizer):
    ids = tokenizer(load_text("wikitext2-valid"), add_special_tokens=False).input_ids[:1024]
    return torch.tensor(ids).view(2, 512)


def test_achieved_budget_on_calibration_text(skipping, calib_ids):
    for budget in (0.75, 0.6, 0.5):
        set_budget(skipping, budget)
        with torch.no_grad(), ComputeMeter(skipping) as meter:
            skipping(calib_ids)
        assert meter.report.ffn_compute == pytest.approx(budget, abs=0.02), budget
        per_layer = meter.report.per_layer_compute()
        assert max(per_layer) - min(per_layer) > 0.1  # one shared threshold: layers are skipped unevenly


@pytest.mark.parametrize("stand_in", ["none", "affine"])
def test_skipped_tokens_get_the_stand_in(stand_in, tokenizer):
    """A skipped token leaves the layer with its input residual (plus the stand-in update, if any); the others
    with the layer's own output."""
    model = convert(deep_model(), tokenizer, "skip", config=SkipConfig(stand_in=stand_in), calibration_tokens=1024,
                    progress=False)  # fmt: skip
    set_budget(model, 0.5)
    ids = torch.randint(2, VOCAB, (1, 40), generator=torch.Generator().manual_seed(1))
    module, layer = adaptive_modules(model)[3], model.model.layers[3]
    seen = []
    handle = layer.register_forward_hook(lambda m, args, kwargs, out: seen.append((args[0], out)), with_kwargs=True)
    try:
        with torch.no_grad():
            model(ids)
            ((x, out),) = seen
            skipped = (out == module.passed_through(x)).all(-1)[0]  # [T]
            unchanged = (out == x).all(-1)[0]
    finally:
        handle.remove()
    assert 0 < int(skipped.sum()) < 40  # some skip, some run
    assert torch.equal(unchanged, skipped) == (stand_in == "none")


@pytest.mark.parametrize("config_class", [LlamaConfig, Qwen3Config])
def test_skipped_tokens_write_the_layers_kv(config_class, tokenizer):
    """Step-by-step lean decode (K/V-only path for skipped tokens) fills the cache exactly as one batched forward
    does, and both give the logits of the full forward."""
    extra = {"head_dim": 8} if config_class is Qwen3Config else {}
    model = convert(deep_model(config_class, **extra), tokenizer, "skip", calibration_tokens=1024, progress=False)
    set_budget(model, 0.5)
    ids = torch.randint(2, VOCAB, (1, 30), generator=torch.Generator().manual_seed(2))
    batched, stepped = LeanDecoder(model).runner, LeanDecoder(model).runner
    with torch.no_grad(), ComputeMeter(model) as meter:
        full = model(ids).logits[0, -1]
        batched.reset(1)
        first = batched.forward(ids)[0]  # prefill: only the running tokens' queries are computed
        stepped.reset(1)
        for t in range(ids.shape[1]):
            last = stepped.forward(ids[:, t : t + 1])[0]
    assert meter.report.ffn_compute < 0.8  # tokens did skip layers
    for a, b in zip(batched.keys + batched.values, stepped.keys + stepped.values, strict=True):
        torch.testing.assert_close(a[:, :, :30], b[:, :, :30], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(last, full, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(first, full, rtol=1e-4, atol=1e-4)


def test_hf_generate_equals_lean_decode_under_skipping(skipping):
    """HF's own cache (the layer writes K/V, the hooks drop the skipped tokens' updates) and the lean decoder's
    K/V-only path generate the same tokens."""
    set_budget(skipping, 0.5)
    ids = torch.randint(2, VOCAB, (1, 12), generator=torch.Generator().manual_seed(3))
    assert torch.equal(LeanDecoder(skipping).generate(ids, 16), hf_greedy(skipping, ids, 16))


def test_full_budget_runs_every_layer(skipping, calib_ids):
    set_budget(skipping, 1.0)
    with torch.no_grad():
        torch.testing.assert_close(skipping(calib_ids[:, :64]).logits, deep_model()(calib_ids[:, :64]).logits,
                                   rtol=0, atol=0)  # fmt: skip
    assert all(m.skipping is None for m in adaptive_modules(skipping))


def test_greedy_allocation_is_refused(tokenizer):
    with pytest.raises(PonderError, match="drop --allocation greedy"):
        convert(deep_model(), tokenizer, "skip", calibration_tokens=1024, allocation="greedy", progress=False)
