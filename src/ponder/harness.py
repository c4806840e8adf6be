"""lm-evaluation-harness model type `ponder`: any lm-eval task on an adaptive model at a chosen budget.

lm-eval finds model types only among modules it has imported, so run it through this module, which registers
`ponder` and then hands the command line to lm-eval unchanged:

    python -m ponder.harness run --model ponder --model_args path=DIR,budget=0.5 --tasks piqa

From Python, `import ponder.harness` before `lm_eval.simple_evaluate(model="ponder", ...)`. The results' config
gains `ponder_method`, `ponder_budget` and the achieved `ponder_ffn_compute` over everything lm-eval ran.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ponder.adaptive import get_budget, load, set_budget
from ponder.errors import PonderError
from ponder.state import method_name
from ponder.stats import ComputeMeter

try:
    from lm_eval.api.registry import register_model
    from lm_eval.models.huggingface import HFLM
except ImportError as e:  # lm-eval is an optional extra
    raise PonderError("lm-evaluation-harness is not installed: pip install 'ponder[lm-eval]'") from e


@register_model("ponder")
class PonderLM(HFLM):
    """lm-eval's Hugging Face model class around a model loaded by `ponder.load`, its budget set first.

    `path` is anything `ponder.load` accepts (a converted directory, an HF directory, a .gguf file or an alias);
    the other keyword arguments are lm-eval's HF options (batch_size, max_length, ...).
    """

    def __init__(
        self,
        path: str,
        budget: float | None = None,
        dtype: str = "float32",
        threads: int | None = None,
        **kwargs,
    ) -> None:
        model, tokenizer = load(str(path), dtype=dtype, threads=threads)
        if budget is not None:
            set_budget(model, float(budget))
        super().__init__(pretrained=model, tokenizer=tokenizer, **kwargs)
        self.path = str(path)
        self.meter = ComputeMeter(model).__enter__()  # counts every forward lm-eval makes

    def get_model_info(self) -> dict:
        """Model facts for lm-eval's results, without lm-eval's hub lookups (ponder runs offline)."""
        report = self.meter.report
        return {
            "model_num_parameters": self.model.num_parameters(),
            "model_dtype": str(self.model.dtype),
            "ponder_path": self.path,
            "ponder_method": method_name(self.model),
            "ponder_budget": get_budget(self.model),
            "ponder_ffn_compute": report.ffn_compute if report.tokens else None,
        }


PIQA_TASK = "piqa_local"
_PIQA_YAML = """\
task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    validation: {data}
validation_split: validation
output_type: multiple_choice
doc_to_text: "Question: {{{{goal}}}}\\nAnswer:"
doc_to_target: label
doc_to_choice: "{{{{[sol1, sol2]}}}}"
metric_list:
  - metric: acc
  - metric: acc_norm
"""


def write_piqa_task(directory: str | Path, *, limit: int | None = None) -> Path:
    """An lm-eval task `piqa_local` over the bundled PIQA items (lm-eval's own `piqa` downloads from the hub):
    pass the returned folder as `--include_path` (or `TaskManager(include_path=...)`) and `--tasks piqa_local`."""
    from ponder.eval.tasks import load_piqa

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    data = directory / "piqa-valid.jsonl"
    data.write_text("".join(json.dumps(item) + "\n" for item in load_piqa(limit=limit)))
    (directory / f"{PIQA_TASK}.yaml").write_text(_PIQA_YAML.format(task=PIQA_TASK, data=data.resolve()))
    return directory


def main() -> None:
    from lm_eval.__main__ import cli_evaluate

    sys.argv[0] = "python -m ponder.harness"
    cli_evaluate()


if __name__ == "__main__":
    main()
