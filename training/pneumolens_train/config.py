"""Training configuration: a JSON file (validated, never executed) plus command-line overrides."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from .models import ARCHS


@dataclass
class TrainConfig:
    data: str = "../shared/data/chest_xray_train"
    extra_data: List[str] = field(default_factory=list)  # more sources (one folder per hospital/collection)
    source_mix: float = 0.35                            # share of training draws from extra_data sources
    hospital_of: Dict[str, str] = field(default_factory=dict)  # source folder -> hospital (one source)
    holdout_children: bool = True                       # other sources' films aged < 18 never trained on
    select: str = "auc"                                 # auc | worst_source_auc (best checkpoint rule)
    out: str = "runs/default"
    arch: str = "cbam_cnn"
    members: List[str] = field(default_factory=list)   # for arch=ensemble
    pretrained: Optional[str] = None                    # local torchvision state_dict
    freeze_epochs: int = 0                              # phase 1 with a frozen backbone (pretrained)
    width: float = 1.0
    cam_stride: int = 32                                # 16: resnet_s*, cbam_cnn, mobilenet_v2: 14x14 Grad-CAM layer at 224 px
    size: int = 224
    normalize: str = "fixed"                            # fixed | per_image
    resize_mode: str = "stretch"                        # stretch | letterbox
    epochs: int = 20
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.05
    schedule: str = "onecycle"                          # onecycle | cosine | plateau
    patience: int = 6                                   # early stopping on val AUC (epochs)
    loss: str = "bce"                                   # bce | focal
    focal_gamma: float = 2.0
    balance: str = "sampler"                            # none | weighted | sampler | source_class
    lung_focus: float = 0.0                             # weight of the Grad-CAM-outside-the-lung-fields loss
    label_smoothing: float = 0.05
    mixup: float = 0.2
    dropout: float = 0.2
    augment: str = "strong"                             # none | light | strong | shift (strong + acquisition shift)
    hflip: float = 0.0
    zoom_out: float = 0.0                               # share of films zoomed out into a surround (augment.zoom_out)
    zoom_out_warmup: int = 0                            # epochs trained without the zoom-out first
    ema: float = 0.998                                  # 0 disables the weight EMA
    val_fraction: float = 0.15
    seed: int = 0
    threads: int = 2
    max_minutes: float = 0.0                            # 0 = no wall-clock budget
    threshold_policy: str = "youden"
    limit: int = 0                                      # use at most N images (tests, smoke runs)

    def validate(self) -> "TrainConfig":
        def need(cond: bool, msg: str):
            if not cond:
                raise ValueError(f"config: {msg}")
        need(self.arch in ARCHS, f"arch must be one of {ARCHS}, got {self.arch!r}")
        need(all(m in ARCHS and m != "ensemble" for m in self.members), f"bad ensemble members {self.members}")
        need(self.cam_stride in (16, 32), "cam_stride must be 16 or 32")
        need(self.normalize in ("fixed", "per_image"), "normalize must be fixed|per_image")
        need(self.resize_mode in ("stretch", "letterbox"), "resize_mode must be stretch|letterbox")
        need(self.schedule in ("onecycle", "cosine", "plateau"), "schedule must be onecycle|cosine|plateau")
        need(self.loss in ("bce", "focal"), "loss must be bce|focal")
        need(self.balance in ("none", "weighted", "sampler", "source_class"),
             "balance must be none|weighted|sampler|source_class")
        need(self.select in ("auc", "worst_source_auc"), "select must be auc|worst_source_auc")
        need(self.lung_focus >= 0, "lung_focus >= 0")
        need(0 <= self.source_mix < 1, "source_mix in [0,1)")
        need(self.augment in ("none", "light", "strong", "shift", "shift2"), "augment must be none|light|strong|shift|shift2")
        need(0 <= self.zoom_out <= 1 and (self.zoom_out == 0 or self.augment != "none"),
             "zoom_out is a probability, and needs an augmentation")
        need(32 <= self.size <= 1024 and self.size % 32 == 0, "size must be a multiple of 32 in 32..1024")
        need(self.epochs >= 1 and self.batch_size >= 2, "epochs >= 1 and batch_size >= 2")
        need(0 < self.lr < 1 and self.weight_decay >= 0, "lr in (0,1), weight_decay >= 0")
        need(0 <= self.label_smoothing < 0.5 and self.mixup >= 0, "label_smoothing in [0,0.5), mixup >= 0")
        need(0 <= self.ema < 1 and 0 < self.val_fraction < 0.5, "ema in [0,1), val_fraction in (0,0.5)")
        need(0 <= self.hflip <= 1 and 0 <= self.dropout < 1, "hflip and dropout are probabilities")
        return self

    @classmethod
    def from_sources(cls, path: Optional[str], overrides: Dict[str, Any]) -> "TrainConfig":
        values: Dict[str, Any] = {}
        if path:
            with open(path) as fh:
                values.update(json.load(fh))
        values.update({k: v for k, v in overrides.items() if v is not None})
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ValueError(f"config: unknown keys {unknown}")
        defaults = cls()
        for k, v in list(values.items()):
            ref = getattr(defaults, k)
            if isinstance(ref, bool):
                values[k] = v if isinstance(v, bool) else str(v).lower() in ("1", "true", "yes")
                continue
            if ref is None or isinstance(ref, (list, dict)):
                continue
            try:
                values[k] = type(ref)(v)
            except (TypeError, ValueError):
                raise ValueError(f"config: {k} must be {type(ref).__name__}, got {v!r}") from None
        return cls(**values).validate()

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def preprocessing_spec(self) -> Dict[str, Any]:
        norm = {"mode": "fixed", "mean": 0.5, "std": 0.25} if self.normalize == "fixed" else {"mode": "per_image"}
        return {"color": "gray_bt601",
                "resize": {"mode": self.resize_mode, "filter": "bilinear_antialias", "pad_value": 0},
                "scale": 1.0 / 255.0, "normalize": norm}
