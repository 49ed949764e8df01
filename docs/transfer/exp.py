"""Gain experiments: pretrain (context) then fine-tune at a fraction with partial transfer."""
import sys, json, dataclasses, torch
from pathlib import Path
from pretextlab.finetune import DataConfig, train_classifier
from pretextlab.train import TrainConfig
from pretextlab.pretext import pretrain
from pretextlab.models import make_backbone
from pretextlab.study import PRESETS
from safetensors.torch import load_file, save_file

mode = sys.argv[1]
data = DataConfig(source="/work/shared/data/cifar10/train")
p = PRESETS["fast"]
if mode == "pretrain":
    name, epochs, opts = sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
    cfg = dataclasses.replace(p.pretrain, epochs=epochs)
    s = pretrain("context", data, cfg, "fast", Path("/tmp/g") / name, opts, quiet=True)
    print(name, "pretext best", s["best"]["accuracy"], "knn", s["knn_accuracy"])
else:
    name, init, depth, frac = sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
    extra = json.loads(sys.argv[6]) if len(sys.argv) > 6 else {}
    init_path = None
    if init != "none":
        w = load_file(f"/tmp/g/{init}/backbone.safetensors")
        torch.manual_seed(0)
        fresh = make_backbone("fast").state_dict()
        stages = ["stem.", "blocks.0.", "blocks.1.", "blocks.2."][:depth]
        mixed = {k: (w[k] if k.startswith(tuple(stages)) else fresh[k]) for k in fresh}
        init_path = f"/tmp/g/{init}-d{depth}.safetensors"
        save_file({k: v.contiguous() for k, v in mixed.items()}, init_path)
    cfg = dataclasses.replace(p.finetune, epochs=p.epochs_for(frac), seed=0, **extra)
    s = train_classifier(dataclasses.replace(data, fraction=frac), cfg, "fast", Path("/tmp/g") / name,
                         init=init_path, quiet=True)
    print(name, "best f1", s["best"]["f1_macro"], "final", s["final"]["f1_macro"], "time", s["wall_time_s"])
