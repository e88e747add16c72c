"""Speed of one training step: ``models.train`` against a bare hand-written loop, same model.

For each encoder and image size, a 5-task model (``sdDnE``, the paper's S4–S8 task set, MTRobust
decoders) is trained on in-memory random batches, alternately by a minimal loop (forward →
``task_losses`` → uniform mean → backward → Adam step) and by :func:`models.train` (one epoch of
the same batches, no validation, no flips, no precise-BN pass, nothing written), so both see the
same load. Both time a whole run of ``--steps`` steps, optimizer creation included. Each
configuration runs in its own process so its peak RSS is its own. Prints a Markdown table:
medians over ``--repeats`` of images/s, the median ratio ``train / hand`` of seconds per run
(goal ≤ 1.10), and peak RSS.

    python -m benchmarks.training                        # CPU: resnet18/50 at 64 and 128 px
    python -m benchmarks.training --encoders resnet18 --sizes 64 --precision fp32,bf16
    python -m benchmarks.training --device cuda --sizes 256 --batch 64 --precision fp32,bf16
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

TASKS = "sdDnE"


class _Batches:
    """``steps`` fixed random batches served through the ``TaskDataset.batches`` interface."""

    def __init__(self, tasks: str, batch: int, size: int, steps: int) -> None:
        import torch

        from rts.tasks.registry import SEG_CLASSES, get_task

        g = torch.Generator().manual_seed(0)
        n = batch * steps
        self.x = torch.rand(n, 3, size, size, generator=g)
        self.y = {}
        for k in tasks:
            spec = get_task(k)
            if spec.is_segmentation:
                self.y[k] = torch.randint(0, SEG_CLASSES, (n, size, size), generator=g)
            else:
                self.y[k] = torch.rand(n, spec.channels, size, size, generator=g)

    def __len__(self) -> int:
        return self.x.shape[0]

    def batches(self, batch_size, *, shuffle=False, generator=None, flip=False, drop_last=False):
        import torch

        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for start in range(0, n - batch_size + 1, batch_size):
            idx = order[start : start + batch_size]
            yield self.x[idx], {k: v[idx] for k, v in self.y.items()}


def _one(
    encoder: str,
    size: int,
    batch: int,
    steps: int,
    repeats: int,
    device: str,
    precision: str,
    width: int,
    threads: int | None,
) -> dict:
    """Measure one configuration in this process; returns a row."""
    import torch

    from rts.models import Schedule, build_model, make_weighting, resolve_device, train
    from rts.tasks.losses import task_losses, weighted_sum

    if threads:
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    data = _Batches(TASKS, batch, size, steps)
    model = build_model(encoder, TASKS, decoder_width=width, seed=0).to(dev)
    bf16 = precision == "bf16"
    channels_last = bf16 or dev.type == "cuda"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    schedule = Schedule("adam", 1e-4, milestones=())
    weighting = make_weighting("uniform", TASKS)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def hand() -> float:
        sync()
        start = time.perf_counter()
        model.train()
        hand_opt = torch.optim.Adam(model.parameters(), lr=1e-4)  # a run starts its optimizer
        for x, y in data.batches(batch, shuffle=True, generator=torch.Generator().manual_seed(1)):
            x = x.to(dev, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = {k: v.to(dev, non_blocking=True) for k, v in y.items()}
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                pred = model(x)
            loss = weighted_sum(task_losses({k: p.float() for k, p in pred.items()}, y, TASKS))
            hand_opt.zero_grad(set_to_none=True)
            loss.mean().backward()
            hand_opt.step()
        sync()
        return time.perf_counter() - start

    def library() -> float:
        sync()
        start = time.perf_counter()
        train(
            model,
            data,
            None,
            weighting,
            schedule,
            dev,
            epochs=1,
            batch_size=batch,
            precision="bf16" if bf16 else "fp32",
            flip=False,
            precise_bn=0,
        )
        sync()
        return time.perf_counter() - start

    hand()  # warm-up: allocator, oneDNN / cuDNN kernel choice
    library()
    hand_s, lib_s = [], []
    for _ in range(repeats):
        hand_s.append(hand())
        lib_s.append(library())
    ratios = [b / a for a, b in zip(hand_s, lib_s, strict=True)]
    images = batch * steps
    row = {
        "encoder": encoder,
        "size": size,
        "batch": batch,
        "precision": precision,
        "device": str(dev),
        "hand_img_s": images / statistics.median(hand_s),
        "train_img_s": images / statistics.median(lib_s),
        "ratio": statistics.median(ratios),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "threads": torch.get_num_threads(),
    }
    if dev.type == "cuda":
        row["cuda_max_alloc_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--encoders", default="resnet18,resnet50")
    p.add_argument("--sizes", default="64,128")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=2, help="steps per timed run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", help="fp32, bf16 or both: fp32,bf16")
    p.add_argument("--width", type=int, default=256, help="decoder width (256 = MTRobust)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:  # child process: one configuration, JSON row on stdout
        row = _one(
            args.encoders,
            int(args.sizes),
            args.batch,
            args.steps,
            args.repeats,
            args.device,
            args.precision,
            args.width,
            args.threads,
        )
        print(json.dumps(row))
        return 0
    rows = []
    for encoder in args.encoders.split(","):
        for size in args.sizes.split(","):
            for precision in args.precision.split(","):
                cmd = [
                    sys.executable,
                    __file__,
                    "--one",
                    "--encoders",
                    encoder,
                    "--sizes",
                    size,
                    "--batch",
                    str(args.batch),
                    "--steps",
                    str(args.steps),
                    "--repeats",
                    str(args.repeats),
                    "--device",
                    args.device,
                    "--precision",
                    precision,
                    "--width",
                    str(args.width),
                ]
                if args.threads:
                    cmd += ["--threads", str(args.threads)]
                done = subprocess.run(cmd, capture_output=True, text=True, check=True)
                rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(f"done {encoder} {size}px {precision}", file=sys.stderr)
    cuda = any("cuda_max_alloc_mb" in r for r in rows)
    head = "| encoder | px | batch | precision | hand img/s | train() img/s | ratio | peak RSS MB |"
    print(head + (" CUDA max alloc MB |" if cuda else ""))
    print("|---" * (8 + cuda) + "|")
    for r in rows:
        line = (
            f"| {r['encoder']} | {r['size']} | {r['batch']} | {r['precision']} | "
            f"{r['hand_img_s']:.1f} | {r['train_img_s']:.1f} | {r['ratio']:.3f} | "
            f"{r['peak_rss_mb']:.0f} |"
        )
        if cuda:
            line += f" {r.get('cuda_max_alloc_mb', float('nan')):.0f} |"
        print(line)
    print(
        f"\n5 tasks ({TASKS}), decoder width {args.width}, {rows[0]['device']}, "
        f"{rows[0]['threads']} threads; medians of {args.repeats} runs of {args.steps} steps; "
        "ratio = train() seconds / hand-loop seconds per step (goal <= 1.10)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
