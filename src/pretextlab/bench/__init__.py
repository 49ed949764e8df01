"""How fast is pretextlab on this machine, and where does the time go?

One process, one run, several measurements side by side, so that their ratios mean something:

1. the CPU's peak dense matmul throughput (fp32, and bf16 where the CPU runs it natively);
2. the model alone: forward + backward + SGD step on a float batch already in memory;
3. pretextlab's real training step: `train.fit` on real `data.make_splits` output, i.e. batch
   cutting, augmentation, normalisation and logging included (validation excluded, as fit times it
   separately);
4. the tutorial way (naive.py): `ImageFolder` + per-sample PIL transforms + `DataLoader(num_workers=2)`;
5. evaluation (`tasks.classification.predict_logits` vs a DataLoader loop);
6. every pretext task (context, rotation, reconstruction, simclr): its model alone on one ready batch
   of the task's own inputs and targets vs `train.fit` on the task, i.e. each path at its ceiling;
7. with `peer="lightly"`, lightly's standard SimCLR pipeline (peers.py), timed in the same turns as
   pretextlab's SimCLR model step and pipeline, each side's augmentation cost per image on one core
   and, with `peer_epochs`, both trained for that many epochs and scored by the same k-NN probe.

From these: overhead = 1 - (3)/(2) (what the pipeline costs on top of the model), per task the same
for 6, speedup over the naive baseline = (3)/(4), over lightly = pretextlab's SimCLR pipeline / lightly's
(and the ceiling's ratio, model alone / lightly's), and MFU = achieved training FLOP/s / peak FLOP/s
(training ~ 3x forward). On `device="cuda"` the models and the data live on the GPU, the peak is the
GPU's matmul peak, and every timer waits for the GPU's queued work first.

Every measurement runs a few untimed warm-up calls first (allocation, oneDNN primitive creation,
DataLoader worker start-up), then times a number of steps chosen so the timed part lasts about
`Plan.target_s`; the pipeline and the naive baseline then time the same number of steps as the model.
The training measurements of one backbone are timed in interleaved turns (model, pipeline, naive,
model, ...), so that load from other processes on a shared machine falls on all of them alike.
Rates count source images: a rotation batch holds four inputs per image, a SimCLR batch two views.

The modules: run.py (the driver, `run_bench`), workloads.py (what is timed: 1-5 and batch preparation, and
`compile_check`, the training step with and without torch.compile), timing.py (how: warm-up, step counts,
interleaved rounds), race.py (6 and 7), naive.py (4), peers.py (7's lightly), text.py (the printed report) and
accuracy.py (`pretextlab bench --time-to-accuracy`: validation macro-F1 against training seconds).
"""

from .naive import write_synthetic_folder
from .run import run_bench
from .workloads import compile_check

__all__ = ["compile_check", "run_bench", "write_synthetic_folder"]
