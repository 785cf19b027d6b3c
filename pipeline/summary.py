"""Parameter report per component, trainable and frozen.

`python -m pipeline.summary preset=paper` builds the model on the `meta` device
(shapes only, no memory) and prints JSON; the paper's trainable total is
441.03M = expert 351.03M + LoRA 87.49M + adapters 2.37M + video head 0.10M + proprio 0.04M.
"""

from __future__ import annotations

import json

import torch
from torch import nn

from model.backbone import VIDEO_HEAD


def component(name: str) -> str:
    """Which part of Light-WAM a parameter name belongs to."""
    if "lora_" in name:
        return "lora"
    if name.startswith("expert."):
        return "expert"
    if name.startswith("shortcut."):
        return "shortcut"
    if name.startswith("backbone.adapters."):
        return "adapters"
    if name.startswith("backbone.proprio_proj."):
        return "proprio"
    if name.startswith(tuple("backbone.dit." + p for p in VIDEO_HEAD)):
        return "video_head"
    return "dit"


def parameter_report(model: nn.Module) -> dict:
    """{"trainable": {component: count}, "frozen": {...}, "trainable_total", "frozen_total", "millions": {...}}."""
    report: dict = {"trainable": {}, "frozen": {}}
    for name, p in model.named_parameters():
        group = report["trainable" if p.requires_grad else "frozen"]
        group[component(name)] = group.get(component(name), 0) + p.numel()
    report["trainable_total"] = sum(report["trainable"].values())
    report["frozen_total"] = sum(report["frozen"].values())
    report["millions"] = {
        kind: {k: round(v / 1e6, 2) for k, v in report[kind].items()} | {"total": round(report[kind + "_total"] / 1e6, 2)}
        for kind in ("trainable", "frozen")
    }
    return report


def main(argv: list[str] | None = None) -> None:
    from model.light_wam import LightWAM
    from pipeline.cli import parse_or_exit

    cfg = parse_or_exit(argv)
    cfg.model.backbone.pretrained_path = ""  # shapes come from the config fields; nothing is read or allocated
    with torch.device("meta"):
        model = LightWAM(cfg.model)
    print(json.dumps({"preset": cfg.preset, **parameter_report(model)}, indent=2))


if __name__ == "__main__":
    main()
