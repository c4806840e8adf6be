"""CoreInfer: a sequence's prefix runs dense and chooses its core neurons; the rest of it runs only those.

(Exactness at full budget, the budget on calibration text, monotone compute and the round trip run for `core` in
test_methods.py.)
"""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import tiny_model
from ponder.adaptive import adaptive_modules, convert, set_budget
from ponder.inference import LeanDecoder
from ponder.methods import make_config
from ponder.stats import ComputeMeter

PREFIX = 8


def core_model(tokenizer, family="llama"):
    config = make_config("core", {"prefix_tokens": str(PREFIX), "min_budget": "0.1"})
    model = convert(tiny_model(family), tokenizer, "core", config=config, calibration_tokens=1024, progress=False)
    set_budget(model, 0.5)
    return model


def test_cached_decode_equals_full_forward(tokenizer):
    model = core_model(tokenizer)
    ids = torch.randint(2, 200, (1, 24), generator=torch.Generator().manual_seed(5))
    runner = LeanDecoder(model).runner
    with torch.no_grad():
        full = model(ids).logits[0]  # [T, V]: prefix dense, then core
        runner.reset(1)
        steps = [runner.forward(ids[:, t : t + 1])[0] for t in range(ids.shape[1])]  # one token at a time
    torch.testing.assert_close(torch.stack(steps), full, rtol=1e-4, atol=1e-4)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), tail=st.integers(2, 20))
def test_core_depends_on_the_prefix_only_and_batches_are_independent(tokenizer, seed, tail):
    model = core_model(tokenizer)
    generator = torch.Generator().manual_seed(seed)
    a, b = torch.randint(2, 200, (2, PREFIX + tail), generator=generator)
    b[:PREFIX] = a[:PREFIX]  # same prefix, different continuation
    modules = adaptive_modules(model)
    with torch.no_grad():
        logits = model(torch.stack([a, b])).logits
        cores = [m.core.clone() for m in modules]
        alone = model(a[None]).logits[0]
    for core in cores:
        assert torch.equal(core[0], core[1])
    torch.testing.assert_close(logits[0], alone, rtol=1e-5, atol=1e-5)


def test_decode_reads_only_core_rows_and_counts_them(tokenizer):
    model = core_model(tokenizer)
    ids = torch.randint(2, 200, (1, PREFIX + 1), generator=torch.Generator().manual_seed(1))
    decoder = LeanDecoder(model)
    with torch.no_grad(), ComputeMeter(model) as meter:
        decoder.generate(ids, 6)  # prompt: 8 dense + 1 core token; then 5 decode forwards
    module = adaptive_modules(model)[0]
    k = module.core.shape[1]
    assert k == round(float(module.threshold) * 64) and module.sliced is not None
    assert module.sliced[1].shape == (k, 32)  # the decode executor's up rows: the core only
    dense, per_core = module.dense_macs(), k * module.dense_macs() // 64
    assert meter.report.layers[0].flops == 2 * (PREFIX * dense + 6 * per_core)


def test_a_new_prompt_starts_a_new_core(tokenizer):
    model = core_model(tokenizer)
    first, second = torch.randint(2, 200, (2, 1, 16), generator=torch.Generator().manual_seed(2))
    module = adaptive_modules(model)[1]
    with torch.no_grad():
        model(first)
        core_first = module.core.clone()
        model(second)
    assert module.seen == 16
    assert not torch.equal(core_first, module.core) or torch.equal(first, second)
