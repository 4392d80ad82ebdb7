"""ImageNet-derived MobileNetV2 weights from the npm package `nsfwjs` (MIT) as a torchvision state dict.

The only ImageNet-derived weights reachable offline here: nsfwjs ships a Keras MobileNetV2 (alpha 1.0, 224 px,
ImageNet weights fine-tuned to its own 5 classes) as a TF.js layers model whose weights are 8-bit quantized
(per tensor: value = min + scale * q) and base64-encoded inside browserify bundles. This module reads the
bundles as text (nothing is executed), dequantizes every tensor and maps the Keras layer names onto
`torchvision.models.mobilenet_v2`'s (the dense head of nsfwjs is dropped).

    npm pack nsfwjs@4.4.0 && tar xzf nsfwjs-4.4.0.tgz
    /usr/bin/python3 -m pneumolens_train.nsfwjs package/dist/models/mobilenet_v2 --out ../runs/mnv2_imagenet.pt

Keras differs from torchvision in two details the fine-tuning absorbs: stride-2 convolutions pad (0, 1)
instead of (1, 1) (a one-pixel shift), and batch norm uses eps 1e-3 (set on the torchvision model by
`models.TorchvisionBackbone`).
"""
from __future__ import annotations

import argparse
import base64
import re
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch

_WEIGHT = re.compile(
    r'\{name:"([^"]+)",shape:\[([0-9,]*)\],dtype:"float32",quantization:\{min:([-0-9.e]+),scale:([-0-9.e]+),'
    r'dtype:"uint8"\}\}')
_B64 = re.compile(r'"([A-Za-z0-9+/=]{1000,})"')

# Keras BatchNormalization -> torch BatchNorm2d
_BN = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}


def _num(s: str) -> float:
    return float(s if not s.startswith((".", "-.")) else s.replace(".", "0.", 1))


def read_manifest(model_js: str) -> List[Tuple[str, Tuple[int, ...], float, float]]:
    """(name, shape, min, scale) of every weight, in the order the shard stores them."""
    out = []
    for name, shape, mn, sc in _WEIGHT.findall(model_js):
        out.append((name, tuple(int(d) for d in shape.split(",") if d), _num(mn), _num(sc)))
    if not out:
        raise ValueError("no quantized weights found in the model bundle (not an nsfwjs TF.js layers model?)")
    return out


def read_weights(model_dir: str) -> Dict[str, np.ndarray]:
    d = Path(model_dir)
    manifest = read_manifest((d / "model.min.js").read_text())
    shards = sorted(d.glob("group1-shard*of*.min.js"), key=lambda p: int(re.search(r"shard(\d+)of", p.name)[1]))
    blob = b"".join(base64.b64decode(_B64.search(p.read_text())[1]) for p in shards)
    need = sum(int(np.prod(s)) for _, s, _, _ in manifest)
    if len(blob) != need:
        raise ValueError(f"shards hold {len(blob)} bytes, the manifest needs {need}")
    out, off = {}, 0
    for name, shape, mn, sc in manifest:
        n = int(np.prod(shape))
        q = np.frombuffer(blob, np.uint8, n, off).astype(np.float32)
        out[name] = (mn + sc * q).reshape(shape)
        off += n
    return out


def _torch_names() -> List[Tuple[str, str]]:
    """(keras layer, torchvision module prefix) for every conv and batch norm of MobileNetV2."""
    pairs = [("Conv1", "features.0.0"), ("bn_Conv1", "features.0.1"),
             ("expanded_conv_depthwise", "features.1.conv.0.0"), ("expanded_conv_depthwise_BN", "features.1.conv.0.1"),
             ("expanded_conv_project", "features.1.conv.1"), ("expanded_conv_project_BN", "features.1.conv.2")]
    for b in range(1, 17):
        f = f"features.{b + 1}.conv"
        pairs += [(f"block_{b}_expand", f"{f}.0.0"), (f"block_{b}_expand_BN", f"{f}.0.1"),
                  (f"block_{b}_depthwise", f"{f}.1.0"), (f"block_{b}_depthwise_BN", f"{f}.1.1"),
                  (f"block_{b}_project", f"{f}.2"), (f"block_{b}_project_BN", f"{f}.3")]
    return pairs + [("Conv_1", "features.18.0"), ("Conv_1_bn", "features.18.1")]


def to_torchvision(weights: Dict[str, np.ndarray]) -> Dict[str, torch.Tensor]:
    state: Dict[str, torch.Tensor] = {}
    used = set()
    for keras, prefix in _torch_names():
        if f"{keras}/kernel" in weights:  # Conv2D [kh, kw, in, out] -> [out, in, kh, kw]
            state[f"{prefix}.weight"] = torch.from_numpy(weights[f"{keras}/kernel"].transpose(3, 2, 0, 1).copy())
            used.add(f"{keras}/kernel")
        elif f"{keras}/depthwise_kernel" in weights:  # [kh, kw, in, 1] -> [in, 1, kh, kw]
            k = weights[f"{keras}/depthwise_kernel"]
            state[f"{prefix}.weight"] = torch.from_numpy(k.transpose(2, 3, 0, 1).copy())
            used.add(f"{keras}/depthwise_kernel")
        else:
            for kk, tk in _BN.items():
                if f"{keras}/{kk}" not in weights:
                    raise KeyError(f"nsfwjs weights lack {keras}/{kk}")
                state[f"{prefix}.{tk}"] = torch.from_numpy(weights[f"{keras}/{kk}"].copy())
                used.add(f"{keras}/{kk}")
    backbone = {k for k in weights if not k.startswith("dense")}
    if backbone - used:
        raise KeyError(f"unmapped nsfwjs weights: {sorted(backbone - used)[:5]}")
    return state


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model_dir", help="nsfwjs package/dist/models/mobilenet_v2")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    import torchvision.models as tvm

    state = to_torchvision(read_weights(a.model_dir))
    m = tvm.mobilenet_v2()
    missing, unexpected = m.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("classifier") and not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise SystemExit(f"mapping incomplete: missing {missing[:5]}, unexpected {unexpected[:5]}")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, a.out)
    print(f"wrote {a.out}: {len(state)} tensors, {sum(t.numel() for t in state.values())} values")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
